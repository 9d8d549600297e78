//! A bucket in memory, for tests of the filesystem logic; writes can be made to fail.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{DirListing, ErrorKind, ObjectMeta, Remote, RemoteError, Result, StoredAttrs};
use crate::storage::checksum::{digest, HashKind};

/// An upload in progress: the attributes it was started with, and its parts.
type Upload = (StoredAttrs, BTreeMap<i32, Vec<u8>>);

#[derive(Default)]
pub struct MemoryRemote {
    objects: Mutex<BTreeMap<String, (Vec<u8>, ObjectMeta)>>,
    uploads: Mutex<BTreeMap<String, Upload>>,
    next_id: AtomicU64,
    /// Every write request fails while set.
    pub fail_writes: AtomicBool,
    /// Only CopyObject fails while set (a rename's first step).
    pub fail_copies: AtomicBool,
    pub requests: AtomicU64,
}

impl MemoryRemote {
    pub fn insert(&self, key: &str, body: &[u8]) {
        self.insert_with(key, body, StoredAttrs::default());
    }

    pub fn insert_with(&self, key: &str, body: &[u8], attrs: StoredAttrs) -> String {
        let etag = hex::encode(digest(HashKind::Md5, body));
        let meta = ObjectMeta {
            size: body.len() as u64,
            last_modified: SystemTime::now(),
            etag: etag.clone(),
            attrs: Some(attrs),
        };
        self.objects
            .lock()
            .expect("objects lock")
            .insert(key.to_owned(), (body.to_vec(), meta));
        etag
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .expect("objects lock")
            .get(key)
            .map(|(body, _)| body.clone())
    }

    pub fn attrs(&self, key: &str) -> Option<StoredAttrs> {
        self.objects
            .lock()
            .expect("objects lock")
            .get(key)
            .and_then(|(_, meta)| meta.attrs.clone())
    }

    pub fn head_etag(&self, key: &str) -> String {
        self.objects
            .lock()
            .expect("objects lock")
            .get(key)
            .map(|(_, meta)| meta.etag.clone())
            .unwrap_or_default()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects
            .lock()
            .expect("objects lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().expect("uploads lock").len()
    }

    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn write_allowed(&self) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match self.fail_writes.load(Ordering::Relaxed) {
            true => Err(RemoteError::other("InternalError (injected)")),
            false => Ok(()),
        }
    }
}

impl Remote for MemoryRemote {
    async fn list(&self, prefix: &str) -> Result<DirListing> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock().expect("objects lock");
        let mut listing = DirListing::default();
        for (key, (_, meta)) in objects.range(prefix.to_owned()..) {
            let Some(rest) = key.strip_prefix(prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    if listing.dirs.last().map(String::as_str) != Some(dir) {
                        listing.dirs.push(dir.to_owned());
                    }
                }
                None => {
                    let listed = ObjectMeta {
                        attrs: None,
                        ..meta.clone()
                    };
                    listing.files.push((rest.to_owned(), listed));
                }
            }
        }
        Ok(listing)
    }

    async fn list_below(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock().expect("objects lock");
        Ok(objects
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (_, meta))| (key.clone(), meta.size))
            .collect())
    }

    async fn first_key(&self, prefix: &str) -> Result<Option<String>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock().expect("objects lock");
        Ok(objects
            .range(prefix.to_owned()..)
            .next()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone()))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock().expect("objects lock");
        Ok(objects.get(key).map(|(_, meta)| meta.clone()))
    }

    async fn get_whole(&self, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock().expect("objects lock");
        Ok(objects
            .get(key)
            .map(|(body, meta)| (meta.clone(), body.clone())))
    }

    async fn get_range(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let body = {
            let objects = self.objects.lock().expect("objects lock");
            match objects.get(key) {
                None => {
                    return Err(RemoteError {
                        kind: ErrorKind::NotFound,
                        message: format!("GetObject {key}: NoSuchKey"),
                    })
                }
                Some((_, meta)) if meta.etag != etag => {
                    return Err(RemoteError {
                        kind: ErrorKind::Changed,
                        message: format!("GetObject {key}: PreconditionFailed"),
                    })
                }
                Some((body, _)) => {
                    body[start as usize..end.min(body.len() as u64) as usize].to_vec()
                }
            }
        };
        sink(&body)
    }

    async fn put(&self, key: &str, body: Vec<u8>, attrs: &StoredAttrs) -> Result<String> {
        self.write_allowed()?;
        Ok(self.insert_with(key, &body, attrs.clone()))
    }

    async fn create_upload(&self, key: &str, attrs: &StoredAttrs) -> Result<String> {
        self.write_allowed()?;
        let id = format!("{key}#{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.uploads
            .lock()
            .expect("uploads lock")
            .insert(id.clone(), (attrs.clone(), BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String> {
        self.write_allowed()?;
        let etag = hex::encode(digest(HashKind::Md5, &body));
        let mut uploads = self.uploads.lock().expect("uploads lock");
        let (_, parts) = uploads
            .get_mut(upload_id)
            .ok_or_else(|| RemoteError::other("NoSuchUpload"))?;
        parts.insert(number, body);
        Ok(etag)
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
    ) -> Result<String> {
        self.write_allowed()?;
        let (attrs, uploaded) = self
            .uploads
            .lock()
            .expect("uploads lock")
            .remove(upload_id)
            .ok_or_else(|| RemoteError::other("NoSuchUpload"))?;
        if uploaded.len() != parts.len() {
            return Err(RemoteError::other("InvalidPart"));
        }
        let body: Vec<u8> = uploaded.into_values().flatten().collect();
        Ok(self.insert_with(key, &body, attrs))
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) {
        self.uploads.lock().expect("uploads lock").remove(upload_id);
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        _size: u64,
        attrs: Option<&StoredAttrs>,
    ) -> Result<()> {
        self.write_allowed()?;
        if self.fail_copies.load(Ordering::Relaxed) {
            return Err(RemoteError::other("CopyObject: InternalError (injected)"));
        }
        let (body, meta) = self
            .objects
            .lock()
            .expect("objects lock")
            .get(from)
            .cloned()
            .ok_or_else(|| RemoteError {
                kind: ErrorKind::NotFound,
                message: format!("CopyObject {from}: NoSuchKey"),
            })?;
        let attrs = attrs.cloned().or(meta.attrs).unwrap_or_default();
        self.insert_with(to, &body, attrs);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.write_allowed()?;
        self.objects.lock().expect("objects lock").remove(key);
        Ok(())
    }
}
