//! What the mounted filesystem needs from a bucket, behind one trait: the S3
//! implementation (over `storage::s3`, the layer the sync uses), and an in-memory one so
//! that the filesystem logic is tested without mounting or a server. Keys are full keys
//! (the mount's prefix included).

#[cfg(test)]
pub mod memory;
mod s3;

use std::future::Future;
use std::time::SystemTime;

pub use super::meta::StoredAttrs;
pub use crate::storage::s3::basic::{ErrorKind, RequestError as RemoteError};
pub use s3::S3Remote;

/// An object as a listing or HeadObject tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: String,
    /// What its user metadata says: known after HeadObject, not from a listing.
    pub attrs: Option<StoredAttrs>,
}

/// The names right below a prefix: "directories" (common prefixes) and objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirListing {
    pub dirs: Vec<String>,
    pub files: Vec<(String, ObjectMeta)>,
}

pub type Result<T> = std::result::Result<T, RemoteError>;

/// The requests of a mount.
pub trait Remote: Send + Sync + 'static {
    /// Delimiter listing below `prefix` (empty, or ending with `/`), every page.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<DirListing>> + Send;
    /// Every key below `prefix` with its size, for operations on a whole directory.
    fn list_below(&self, prefix: &str) -> impl Future<Output = Result<Vec<(String, u64)>>> + Send;
    /// The first key starting with `prefix`, if any (a directory, marker or not).
    fn first_key(&self, prefix: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    fn head(&self, key: &str) -> impl Future<Output = Result<Option<ObjectMeta>>> + Send;
    /// A whole object and what HeadObject would tell of it, in one request.
    fn get_whole(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(ObjectMeta, Vec<u8>)>>> + Send;
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
    /// One PutObject, verified by its Content-MD5; returns the new ETag.
    fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        attrs: &StoredAttrs,
    ) -> impl Future<Output = Result<String>> + Send;
    fn create_upload(
        &self,
        key: &str,
        attrs: &StoredAttrs,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Uploads part `number` (from 1); returns its ETag.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Returns the object's ETag.
    fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
    ) -> impl Future<Output = Result<String>> + Send;
    fn abort_upload(&self, key: &str, upload_id: &str) -> impl Future<Output = ()> + Send;
    /// Copies `from` (of `size` bytes) to `to` server-side; with `attrs`, the copy's
    /// metadata is replaced by them (onto itself: a change of metadata only).
    fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        attrs: Option<&StoredAttrs>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn delete(&self, key: &str) -> impl Future<Output = Result<()>> + Send;
}
