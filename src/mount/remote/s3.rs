//! The mount's requests, sent through the store the sync uses: the same client, retry
//! classification, pacing and url-encoded listings, and multipart uploads recorded in
//! the same journal, so that the uploads of a killed mount are aborted by the next mount
//! or sync of the bucket.

use crate::storage::s3::basic::ObjectHead;
use crate::storage::S3Store;

use super::{DirListing, ObjectMeta, Remote, Result, StoredAttrs};

/// A bucket reached through `storage::s3`; the store's location is the bucket's root.
pub struct S3Remote {
    pub store: S3Store,
}

fn meta_of(head: ObjectHead) -> ObjectMeta {
    ObjectMeta {
        size: head.size,
        last_modified: head.last_modified,
        etag: head.etag,
        attrs: Some(StoredAttrs::from_metadata(&head.metadata)),
    }
}

impl Remote for S3Remote {
    async fn list(&self, prefix: &str) -> Result<DirListing> {
        let level = self.store.list_level(prefix).await?;
        let name = |key: &str| key.strip_prefix(prefix).map(str::to_owned);
        Ok(DirListing {
            dirs: level
                .prefixes
                .iter()
                .filter_map(|p| name(p))
                .map(|n| n.trim_end_matches('/').to_owned())
                .collect(),
            files: level
                .objects
                .into_iter()
                .filter_map(|o| {
                    let meta = ObjectMeta {
                        size: o.size,
                        last_modified: o.last_modified,
                        etag: o.etag,
                        attrs: None,
                    };
                    Some((name(&o.key)?, meta))
                })
                .collect(),
        })
    }

    async fn list_below(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let objects = self.store.list_below(prefix).await?;
        Ok(objects.into_iter().map(|o| (o.key, o.size)).collect())
    }

    async fn first_key(&self, prefix: &str) -> Result<Option<String>> {
        self.store.first_key(prefix).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.store.head_object(key).await?.map(meta_of))
    }

    async fn get_whole(&self, key: &str) -> Result<Option<(ObjectMeta, Vec<u8>)>> {
        let found = self.store.get_whole(key).await?;
        Ok(found.map(|(head, body)| (meta_of(head), body)))
    }

    async fn get_range(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<()> + Send),
    ) -> Result<()> {
        self.store.get_range_into(key, etag, start, end, sink).await
    }

    async fn put(&self, key: &str, body: Vec<u8>, attrs: &StoredAttrs) -> Result<String> {
        self.store.put_bytes(key, body, attrs.to_metadata()).await
    }

    async fn create_upload(&self, key: &str, attrs: &StoredAttrs) -> Result<String> {
        self.store.start_upload(key, attrs.to_metadata()).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String> {
        self.store
            .upload_part_bytes(key, upload_id, number, body)
            .await
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
    ) -> Result<String> {
        self.store.finish_upload(key, upload_id, parts).await
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) {
        self.store.cancel_upload(key, upload_id).await;
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        attrs: Option<&StoredAttrs>,
    ) -> Result<()> {
        let metadata = attrs.map(StoredAttrs::to_metadata);
        self.store.copy_key(from, to, size, metadata).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete_key(key).await
    }
}
