//! What the mounted filesystem needs from a bucket, behind one trait: the S3
//! implementation, and an in-memory one so that the filesystem logic is tested without
//! mounting or a server.

use std::future::Future;
use std::time::SystemTime;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;

use crate::storage::checksum::{b64, digest, HashKind};
use crate::storage::s3::describe_sdk_error;
use crate::storage::ETag;

/// An object as a listing or HeadObject tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub mtime: SystemTime,
    pub etag: String,
}

impl ObjectMeta {
    fn from_parts(
        size: Option<i64>,
        last_modified: Option<&aws_sdk_s3::primitives::DateTime>,
        etag: Option<&str>,
    ) -> Self {
        Self {
            size: size.unwrap_or(0).max(0) as u64,
            mtime: last_modified
                .and_then(|t| SystemTime::try_from(*t).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            etag: etag
                .map(|e| ETag::parse(e).as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// The names right below a prefix: "directories" (common prefixes) and objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    pub dirs: Vec<String>,
    pub files: Vec<(String, ObjectMeta)>,
}

/// A failed request: whether the thing is absent, and what the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Denied,
    /// The object changed since it was looked at (If-Match failed).
    Changed,
    Other,
}

impl RemoteError {
    fn other(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Other,
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, RemoteError>;

/// The requests of a mount, with keys relative to the bucket (the prefix included).
pub trait Remote: Send + Sync + 'static {
    /// Delimiter listing below `prefix` (empty, or ending with `/`), every page.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<DirListing>> + Send;
    /// Whether any key starts with `prefix` (a directory, marker or not).
    fn has_keys(&self, prefix: &str) -> impl Future<Output = Result<bool>> + Send;
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<ObjectMeta>>> + Send;
    /// Bytes `start..end` of the object, only if it still has `etag`, handed to `sink`
    /// piece by piece as they arrive.
    fn get_range(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> impl Future<Output = Result<()>> + Send;
    /// One PutObject, verified by its Content-MD5.
    fn put(&self, key: &str, body: Vec<u8>) -> impl Future<Output = Result<()>> + Send;
    fn create_upload(&self, key: &str) -> impl Future<Output = Result<String>> + Send;
    /// Uploads part `number` (from 1); returns its ETag.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<String>> + Send;
    fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn abort_upload(&self, key: &str, upload_id: &str) -> impl Future<Output = ()> + Send;
    fn delete(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
}

/// A bucket reached with the AWS SDK.
pub struct S3Remote {
    pub client: Client,
    pub bucket: String,
}

fn sdk_error<E>(
    operation: &str,
    key: &str,
    err: &aws_sdk_s3::error::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> RemoteError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, status) = match err {
        aws_sdk_s3::error::SdkError::ServiceError(service) => (
            service.err().code().map(str::to_owned),
            service.raw().status().as_u16(),
        ),
        _ => (None, 0),
    };
    let kind = match (code.as_deref(), status) {
        (Some("NoSuchKey" | "NotFound" | "NoSuchUpload"), _) | (_, 404) => ErrorKind::NotFound,
        (Some("AccessDenied"), _) | (_, 403) => ErrorKind::Denied,
        (Some("PreconditionFailed"), _) | (_, 412) => ErrorKind::Changed,
        _ => ErrorKind::Other,
    };
    RemoteError {
        kind,
        message: format!("{operation} {key}: {}", describe_sdk_error(err)),
    }
}

impl Remote for S3Remote {
    async fn list(&self, prefix: &str) -> Result<DirListing> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        let mut listing = DirListing::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| sdk_error("ListObjectsV2", prefix, &err))?;
            for dir in page.common_prefixes() {
                if let Some(name) = dir.prefix().and_then(|p| p.strip_prefix(prefix)) {
                    listing.dirs.push(name.trim_end_matches('/').to_owned());
                }
            }
            for object in page.contents() {
                let Some(name) = object.key().and_then(|k| k.strip_prefix(prefix)) else {
                    continue;
                };
                let meta =
                    ObjectMeta::from_parts(object.size(), object.last_modified(), object.e_tag());
                listing.files.push((name.to_owned(), meta));
            }
        }
        Ok(listing)
    }

    async fn has_keys(&self, prefix: &str) -> Result<bool> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|err| sdk_error("ListObjectsV2", prefix, &err))?;
        Ok(!page.contents().is_empty())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta::from_parts(
                out.content_length(),
                out.last_modified(),
                out.e_tag(),
            ))),
            Err(err) => {
                let err = sdk_error("HeadObject", key, &err);
                match err.kind {
                    ErrorKind::NotFound => Ok(None),
                    _ => Err(err),
                }
            }
        }
    }

    async fn get_range(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<()> {
        let mut out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={start}-{}", end - 1))
            .if_match(format!("\"{etag}\""))
            .send()
            .await
            .map_err(|err| sdk_error("GetObject", key, &err))?;
        while let Some(piece) = out
            .body
            .try_next()
            .await
            .map_err(|err| RemoteError::other(format!("GetObject {key}: {err}")))?
        {
            sink(&piece)?;
        }
        Ok(())
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        let md5 = b64(&digest(HashKind::Md5, &body));
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_md5(md5)
            .content_type(crate::storage::s3::content_type_for(key))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| sdk_error("PutObject", key, &err))?;
        Ok(())
    }

    async fn create_upload(&self, key: &str) -> Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(crate::storage::s3::content_type_for(key))
            .send()
            .await
            .map_err(|err| sdk_error("CreateMultipartUpload", key, &err))?;
        out.upload_id
            .ok_or_else(|| RemoteError::other(format!("CreateMultipartUpload {key}: no upload id")))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String> {
        let md5 = b64(&digest(HashKind::Md5, &body));
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_md5(md5)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| sdk_error("UploadPart", key, &err))?;
        Ok(out.e_tag.unwrap_or_default())
    }

    async fn complete_upload(&self, key: &str, upload_id: &str, parts: Vec<String>) -> Result<()> {
        let parts = parts
            .into_iter()
            .enumerate()
            .map(|(i, etag)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|err| sdk_error("CompleteMultipartUpload", key, &err))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(err) = result {
            tracing::warn!("{}", sdk_error("AbortMultipartUpload", key, &err).message);
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| sdk_error("DeleteObject", key, &err))?;
        Ok(())
    }
}

/// A bucket in memory, for tests of the filesystem logic.
#[cfg(test)]
pub mod memory {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::SystemTime;

    use super::*;

    /// A bucket in memory, for tests of the filesystem logic; writes can be made to fail.
    #[derive(Default)]
    pub struct MemoryRemote {
        objects: Mutex<BTreeMap<String, (Vec<u8>, ObjectMeta)>>,
        uploads: Mutex<BTreeMap<String, BTreeMap<i32, Vec<u8>>>>,
        next_id: AtomicU64,
        pub fail_writes: AtomicBool,
        pub requests: AtomicU64,
    }

    impl MemoryRemote {
        pub fn insert(&self, key: &str, body: &[u8]) {
            let meta = ObjectMeta {
                size: body.len() as u64,
                mtime: SystemTime::now(),
                etag: hex::encode(digest(HashKind::Md5, body)),
            };
            self.objects
                .lock()
                .expect("objects lock")
                .insert(key.to_owned(), (body.to_vec(), meta));
        }

        pub fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.objects
                .lock()
                .expect("objects lock")
                .get(key)
                .map(|(body, _)| body.clone())
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
                    None => listing.files.push((rest.to_owned(), meta.clone())),
                }
            }
            Ok(listing)
        }

        async fn has_keys(&self, prefix: &str) -> Result<bool> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let objects = self.objects.lock().expect("objects lock");
            Ok(objects
                .range(prefix.to_owned()..)
                .next()
                .is_some_and(|(key, _)| key.starts_with(prefix)))
        }

        async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let objects = self.objects.lock().expect("objects lock");
            Ok(objects.get(key).map(|(_, meta)| meta.clone()))
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

        async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
            self.write_allowed()?;
            self.insert(key, &body);
            Ok(())
        }

        async fn create_upload(&self, key: &str) -> Result<String> {
            self.write_allowed()?;
            let id = format!("{key}#{}", self.next_id.fetch_add(1, Ordering::Relaxed));
            self.uploads
                .lock()
                .expect("uploads lock")
                .insert(id.clone(), BTreeMap::new());
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
            let parts = uploads
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
        ) -> Result<()> {
            self.write_allowed()?;
            let uploaded = self
                .uploads
                .lock()
                .expect("uploads lock")
                .remove(upload_id)
                .ok_or_else(|| RemoteError::other("NoSuchUpload"))?;
            if uploaded.len() != parts.len() {
                return Err(RemoteError::other("InvalidPart"));
            }
            let body: Vec<u8> = uploaded.into_values().flatten().collect();
            self.insert(key, &body);
            Ok(())
        }

        async fn abort_upload(&self, _key: &str, upload_id: &str) {
            self.uploads.lock().expect("uploads lock").remove(upload_id);
        }

        async fn delete(&self, key: &str) -> Result<()> {
            self.write_allowed()?;
            self.objects.lock().expect("objects lock").remove(key);
            Ok(())
        }
    }
}
