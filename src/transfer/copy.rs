//! Copying one object, for each pairing of source and destination storage, in one
//! request or in parts depending on its size.

use super::{Route, Transfer};
use crate::storage::local::{self, Incoming, Landing};
use crate::storage::s3::{self, S3Store};
use crate::storage::{Entry, Expected, LocalStore, ObjectError, Store};

impl Transfer {
    /// Copies an object; a file written into a local destination may still be on its
    /// way to its final name when this returns, and has landed when its landing ends.
    pub(super) async fn copy(&self, entry: &Entry) -> Result<Landing, ObjectError> {
        let key = entry.key.as_str();
        if entry.is_marker() {
            return self.copy_marker(entry).await.map(|()| Landing::done());
        }
        if let Some(target) = self.link_target(entry).await? {
            let made = match &self.dest {
                Store::S3(dest) => dest.put_link(key, target, entry.mtime).await,
                Store::Local(dest) => dest.write_link(key, target, entry.mtime).await,
            };
            return made.map(|()| Landing::done());
        }
        match &self.dest {
            Store::S3(dest) => self
                .copy_to_bucket(entry, dest)
                .await
                .map(|()| Landing::done()),
            Store::Local(dest) => {
                // Refused before a byte is read: a key no file can be named after.
                dest.path_for(key)
                    .map_err(|why| ObjectError::new("write", dest.describe(key), why))?;
                self.copy_to_directory(entry, dest).await
            }
        }
    }

    async fn copy_to_bucket(&self, entry: &Entry, dest: &S3Store) -> Result<(), ObjectError> {
        let key = entry.key.as_str();
        // The version a point-in-time listing names; None reads the current one.
        let version = entry.version.as_deref();
        let sizes = &self.sizes;
        match &self.source {
            Store::S3(source) if self.route == Route::ServerSide => {
                let threshold = sizes.multipart_copy_threshold;
                dest.copy_object_from(source.url(), entry, threshold, &self.parts)
                    .await
                    .map_err(|err| self.explain_refused_read(err))
            }
            Store::S3(source) => {
                let download = source.get(key, version).await?;
                let download = source.with_tags(key, download).await?;
                // A promise about parts (a multipart ETag without a recorded MD5) can only
                // be checked as the stream is cut into parts, before Complete.
                let in_parts =
                    entry.size >= sizes.multipart_threshold || download.expected.needs_parts();
                if in_parts && dest.can_stream_in_parts(&download) {
                    dest.put_download_multipart(key, download, &self.parts)
                        .await
                } else {
                    dest.put_download(key, download).await
                }
            }
            Store::Local(source) => {
                let path = source
                    .path_for(key)
                    .map_err(|why| ObjectError::new("read", source.describe(key), why))?;
                if entry.size >= sizes.multipart_threshold {
                    dest.put_file_multipart(key, &path, entry, &self.parts)
                        .await
                } else {
                    dest.put_file(key, &path, entry).await
                }
            }
        }
    }

    async fn copy_to_directory(
        &self,
        entry: &Entry,
        dest: &LocalStore,
    ) -> Result<Landing, ObjectError> {
        let key = entry.key.as_str();
        let version = entry.version.as_deref();
        match &self.source {
            Store::S3(source) if entry.size >= self.sizes.multipart_threshold => {
                let expected = source.expected(key, version).await?;
                let fetch = |first, last| async move {
                    let body = source
                        .get_range(key, version, first, last, entry.etag.as_ref())
                        .await?;
                    Ok(s3::chunks(body))
                };
                let incoming = Incoming {
                    size: entry.size,
                    mtime: entry.mtime,
                    source: &source.describe(key),
                    expected: &expected,
                };
                dest.write_ranges(key, incoming, &self.parts, fetch).await
            }
            Store::S3(source) => {
                let download = source.get(key, version).await?;
                let incoming = Incoming {
                    size: download.size,
                    mtime: download.last_modified,
                    source: &source.describe(key),
                    expected: &download.expected,
                };
                dest.write(key, s3::chunks(download.body), incoming).await
            }
            Store::Local(source) => {
                let path = source
                    .path_for(key)
                    .map_err(|why| ObjectError::new("read", source.describe(key), why))?;
                let incoming = Incoming {
                    size: entry.size,
                    mtime: entry.mtime,
                    source: &source.describe(key),
                    expected: &Expected::Unknown,
                };
                dest.copy_file(key, &path, incoming).await
            }
        }
    }

    /// A server-side copy the source refused to the destination's credentials: says
    /// whose, and which grant the source bucket's policy lacks.
    fn explain_refused_read(&self, err: ObjectError) -> ObjectError {
        let (Some(reader), Store::S3(source)) = (&self.source_reader, &self.source) else {
            return err;
        };
        // A HeadObject refusal has no body, so no code: its status says it.
        if !(err.cause.contains("AccessDenied") || err.cause.contains("(HTTP 403)")) {
            return err;
        }
        let bucket = source.url().bucket();
        ObjectError {
            cause: format!(
                "{}; with --server-side-copy always, {reader} read s3://{bucket}: its bucket \
                 policy must allow them s3:GetObject and s3:GetObjectTagging on \
                 arn:aws:s3:::{bucket}/* (or use --server-side-copy auto to stream)",
                err.cause
            ),
            ..err
        }
    }

    /// The target of a symbolic link kept as an object (`--links`): a local link's, or
    /// the content of a `NAME.rclonelink` object that becomes a link in a local
    /// destination (checked against its ETag like any download). None for anything else.
    async fn link_target(&self, entry: &Entry) -> Result<Option<Vec<u8>>, ObjectError> {
        let key = entry.key.as_str();
        match (&self.source, &self.dest) {
            (Store::Local(source), _) => source.read_link(key).await,
            (Store::S3(source), Store::Local(dest)) if dest.makes_links(key) => {
                if entry.size > local::MAX_LINK_TARGET {
                    let why = local::not_a_target(entry.size);
                    return Err(ObjectError::new("make link", dest.describe(key), why));
                }
                let download = source.get(key, entry.version.as_deref()).await?;
                let target = download
                    .body
                    .collect()
                    .await
                    .map_err(|err| ObjectError::transient("receive", source.describe(key), err))?
                    .to_vec();
                if let Some(request) = download.expected.request() {
                    let digests = local::bytes_digests(&target, &[request]);
                    download
                        .expected
                        .check(&digests.digests[0])
                        .map_err(|why| {
                            ObjectError::transient("verify", source.describe(key), why)
                        })?;
                }
                Ok(Some(target))
            }
            _ => Ok(None),
        }
    }

    /// A folder marker is a directory: made in a local destination, an empty `dir/`
    /// object in a bucket (copied server-side between buckets, like any object).
    async fn copy_marker(&self, entry: &Entry) -> Result<(), ObjectError> {
        let key = entry.key.as_str();
        if let Store::S3(dest) = &self.dest {
            if key.is_empty() && dest.url().prefix().is_empty() {
                return Ok(()); // A bucket's root needs no marker.
            }
        }
        match (&self.source, &self.dest) {
            (_, Store::Local(dest)) => dest.make_dir(key).await,
            (Store::S3(source), Store::S3(dest)) if self.route == Route::ServerSide => {
                // A marker holds no data: it goes into the default class.
                let marker = Entry {
                    storage_class: None,
                    ..entry.clone()
                };
                dest.copy_object_from(source.url(), &marker, u64::MAX, &self.parts)
                    .await
            }
            (_, Store::S3(dest)) => dest.put_marker(key).await,
        }
    }
}
