//! Plain object requests by full key (the store's prefix is not added), for callers that
//! keep their own state about objects, as the mount does: one level of a delimiter
//! listing, HeadObject with the user metadata, ranged GetObject, PutObject of bytes, the
//! steps of a multipart upload, CopyObject (multipart above 5 GiB) and DeleteObject.
//!
//! Every multipart upload started here is registered and recorded in the journal like
//! the sync's, so that an upload of a killed process is aborted by the next run or mount.
//! Listings ask for url-encoded keys, so that keys XML cannot carry still list.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, EncodingType, MetadataDirective};
use aws_smithy_runtime_api::http::Response;

use super::copy::PartCopies;
use super::list::{decoded, whole_page};
use super::metadata::{content_type_for, copy_source, format_mtime, MTIME_METADATA};
use super::parts::{part_size_for, MAX_COPY_OBJECT};
use super::uploads::ActiveUpload;
use super::{describe_sdk_error, journal::Recorded, S3Store};
use crate::storage::checksum::{b64, digest, HashKind};
use crate::storage::ETag;

/// What a failed request means to a caller that acts on the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Denied,
    /// The object changed since it was looked at (If-Match failed).
    Changed,
    Other,
}

/// A failed request: its kind, and one line naming the operation, the key and the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RequestError {
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Other,
            message: message.into(),
        }
    }
}

fn request_error<E>(operation: &str, key: &str, err: &SdkError<E, Response>) -> RequestError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (code, status) = match err {
        SdkError::ServiceError(service) => (
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
    RequestError {
        kind,
        message: format!("{operation} {key}: {}", describe_sdk_error(err)),
    }
}

/// An object as a listing names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: String,
}

/// An object as HeadObject or GetObject tells it, user metadata included (keys without
/// `x-amz-meta-`, lower case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub last_modified: SystemTime,
    pub etag: String,
    pub metadata: HashMap<String, String>,
}

/// One level below a prefix: the common prefixes (with their trailing `/`) and the
/// objects, full keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Level {
    pub prefixes: Vec<String>,
    pub objects: Vec<ObjectSummary>,
}

fn time_of(time: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn etag_of(etag: Option<&str>) -> String {
    etag.map(|e| ETag::parse(e).as_str().to_owned())
        .unwrap_or_default()
}

impl S3Store {
    fn bucket(&self) -> &str {
        self.url.bucket()
    }

    /// Every page of a listing below `prefix`, split on `/` when `delimited`.
    async fn list_pages(&self, prefix: &str, delimited: bool) -> Result<Level, RequestError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .set_delimiter(delimited.then(|| "/".to_owned()))
            .encoding_type(EncodingType::Url)
            .into_paginator()
            .send();
        let mut level = Level::default();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| request_error("ListObjectsV2", prefix, &err))?;
            whole_page(&page)
                .map_err(|why| RequestError::other(format!("ListObjectsV2 {prefix}: {why}")))?;
            level.prefixes.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix())
                    .map(decoded),
            );
            level
                .objects
                .extend(page.contents().iter().map(|object| ObjectSummary {
                    key: decoded(object.key().unwrap_or_default()),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: time_of(object.last_modified()),
                    etag: etag_of(object.e_tag()),
                }));
        }
        Ok(level)
    }

    /// The names right below `prefix` (empty, or ending with `/`), every page.
    pub async fn list_level(&self, prefix: &str) -> Result<Level, RequestError> {
        self.list_pages(prefix, true).await
    }

    /// Every object below `prefix`, every page: for operations on a whole "directory".
    pub async fn list_below(&self, prefix: &str) -> Result<Vec<ObjectSummary>, RequestError> {
        Ok(self.list_pages(prefix, false).await?.objects)
    }

    /// The first key that starts with `prefix`, if any.
    pub async fn first_key(&self, prefix: &str) -> Result<Option<String>, RequestError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .max_keys(1)
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|err| request_error("ListObjectsV2", prefix, &err))?;
        Ok(page.contents().first().and_then(|o| o.key()).map(decoded))
    }

    pub async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, RequestError> {
        match self
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectHead {
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: time_of(out.last_modified()),
                etag: etag_of(out.e_tag()),
                metadata: out.metadata.unwrap_or_default(),
            })),
            Err(err) => match request_error("HeadObject", key, &err) {
                err if err.kind == ErrorKind::NotFound => Ok(None),
                err => Err(err),
            },
        }
    }

    /// A whole object with its metadata, in one request (for small objects, where a
    /// HeadObject would cost as much).
    pub async fn get_whole(
        &self,
        key: &str,
    ) -> Result<Option<(ObjectHead, Vec<u8>)>, RequestError> {
        let out = match self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(err) => {
                return match request_error("GetObject", key, &err) {
                    err if err.kind == ErrorKind::NotFound => Ok(None),
                    err => Err(err),
                }
            }
        };
        let head = ObjectHead {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: time_of(out.last_modified()),
            etag: etag_of(out.e_tag()),
            metadata: out.metadata.clone().unwrap_or_default(),
        };
        let body = out
            .body
            .collect()
            .await
            .map_err(|err| RequestError::other(format!("GetObject {key}: {err}")))?
            .to_vec();
        if body.len() as u64 != head.size {
            return Err(RequestError::other(format!(
                "GetObject {key}: {} of {} bytes arrived",
                body.len(),
                head.size
            )));
        }
        Ok(Some((head, body)))
    }

    /// Bytes `start..end` of the object, only while it still has `etag`, handed to
    /// `sink` piece by piece as they arrive.
    pub async fn get_range_into(
        &self,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
        sink: &mut (dyn FnMut(&[u8]) -> Result<(), RequestError> + Send),
    ) -> Result<(), RequestError> {
        let mut out = self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .range(format!("bytes={start}-{}", end - 1))
            .if_match(format!("\"{etag}\""))
            .send()
            .await
            .map_err(|err| request_error("GetObject", key, &err))?;
        let mut received = 0;
        while let Some(piece) = out
            .body
            .try_next()
            .await
            .map_err(|err| RequestError::other(format!("GetObject {key}: {err}")))?
        {
            received += piece.len() as u64;
            sink(&piece)?;
        }
        if received != end - start {
            return Err(RequestError::other(format!(
                "GetObject {key}: {received} of {} bytes arrived",
                end - start
            )));
        }
        Ok(())
    }

    /// One PutObject, verified by its Content-MD5; returns the new ETag.
    pub async fn put_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        metadata: HashMap<String, String>,
    ) -> Result<String, RequestError> {
        let md5 = b64(&digest(HashKind::Md5, &body));
        let put = self
            .client
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .content_md5(md5)
            .content_type(content_type_for(key))
            .set_metadata(Some(metadata))
            .body(ByteStream::from(body));
        let out = with_write_options!(put, self.write)
            .send()
            .await
            .map_err(|err| request_error("PutObject", key, &err))?;
        Ok(etag_of(out.e_tag()))
    }

    /// Writes the folder marker for relative `key` (an empty `dir/` object), with the
    /// run's write options.
    pub async fn put_marker(&self, key: &str) -> Result<(), crate::storage::ObjectError> {
        let full = self.url.full_key(key);
        self.put_bytes(&full, Vec::new(), HashMap::new())
            .await
            .map(drop)
            .map_err(|err| {
                crate::storage::ObjectError::new("PutObject", self.describe(key), err.message)
            })
    }

    /// Writes a symbolic link kept as an object (`--links`): `target` is its content,
    /// and the link's own mtime goes into the metadata as a file's does.
    pub async fn put_link(
        &self,
        key: &str,
        target: Vec<u8>,
        mtime: SystemTime,
    ) -> Result<(), crate::storage::ObjectError> {
        let full = self.url.full_key(key);
        let metadata = HashMap::from([(MTIME_METADATA.to_owned(), format_mtime(mtime))]);
        self.put_bytes(&full, target, metadata)
            .await
            .map(drop)
            .map_err(|err| {
                crate::storage::ObjectError::new("PutObject", self.describe(key), err.message)
            })
    }

    /// Starts a multipart upload, registered (and recorded) until it completes or is
    /// aborted; returns its upload id.
    pub async fn start_upload(
        &self,
        key: &str,
        metadata: HashMap<String, String>,
    ) -> Result<String, RequestError> {
        let Some(_creating) = self.uploads.begin_create() else {
            return Err(RequestError::other(format!(
                "CreateMultipartUpload {key}: the mount is being stopped"
            )));
        };
        let create = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .content_type(content_type_for(key))
            .set_metadata(Some(metadata));
        let out = with_write_options!(create, self.write)
            .send()
            .await
            .map_err(|err| request_error("CreateMultipartUpload", key, &err))?;
        let upload_id = out.upload_id.unwrap_or_default();
        self.uploads.register(ActiveUpload {
            client: self.client.clone(),
            recorded: Recorded {
                endpoint: self.endpoint.clone(),
                bucket: self.bucket().to_owned(),
                upload_id: upload_id.clone(),
                key: key.to_owned(),
            },
        });
        Ok(upload_id)
    }

    /// Uploads part `number` (from 1), verified by its Content-MD5; returns its ETag.
    pub async fn upload_part_bytes(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<String, RequestError> {
        let md5 = b64(&digest(HashKind::Md5, &body));
        let out = self
            .client
            .upload_part()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_md5(md5)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| request_error("UploadPart", key, &err))?;
        Ok(out.e_tag.unwrap_or_default())
    }

    /// Completes an upload from its parts' ETags, in order; returns the object's ETag.
    pub async fn finish_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<String>,
    ) -> Result<String, RequestError> {
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
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|err| request_error("CompleteMultipartUpload", key, &err))?;
        self.uploads.ended_by_id(upload_id);
        Ok(etag_of(out.e_tag()))
    }

    /// Aborts an upload (failures are logged: the journal keeps it for a later run).
    pub async fn cancel_upload(&self, key: &str, upload_id: &str) {
        let recorded = Recorded {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket().to_owned(),
            upload_id: upload_id.to_owned(),
            key: key.to_owned(),
        };
        if super::uploads::abort(&self.client, &recorded).await {
            self.uploads.ended_by_id(upload_id);
        }
    }

    /// Copies `from` to `to` server-side: CopyObject up to 5 GiB, UploadPartCopy above.
    /// With `metadata`, the copy gets it instead of the source's (a copy onto itself
    /// changes only the metadata); content headers always come along.
    pub async fn copy_key(
        &self,
        from: &str,
        to: &str,
        size: u64,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<(), RequestError> {
        if size > MAX_COPY_OBJECT {
            return self.copy_key_in_parts(from, to, size, metadata).await;
        }
        let directive = match metadata {
            Some(_) => MetadataDirective::Replace,
            None => MetadataDirective::Copy,
        };
        let replacing = metadata.is_some();
        let copy = self
            .client
            .copy_object()
            .copy_source(copy_source(&self.url, from, None))
            .bucket(self.bucket())
            .key(to)
            .metadata_directive(directive)
            .set_metadata(metadata)
            .set_content_type(replacing.then(|| content_type_for(to)));
        with_write_options!(copy, self.write)
            .send()
            .await
            .map_err(|err| request_error("CopyObject", &format!("{from} to {to}"), &err))?;
        Ok(())
    }

    async fn copy_key_in_parts(
        &self,
        from: &str,
        to: &str,
        size: u64,
        metadata: Option<HashMap<String, String>>,
    ) -> Result<(), RequestError> {
        let metadata = match metadata {
            Some(metadata) => metadata,
            None => {
                self.head_object(from)
                    .await?
                    .ok_or_else(|| RequestError {
                        kind: ErrorKind::NotFound,
                        message: format!("HeadObject {from}: no such key"),
                    })?
                    .metadata
            }
        };
        let upload_id = self.start_upload(to, metadata).await?;
        let source = copy_source(&self.url, from, None);
        let copies = PartCopies {
            key: to,
            upload_id: &upload_id,
            copy_source: &source,
            size,
            part_size: part_size_for(size, 256 << 20),
            concurrency: 4,
            permits: None,
        };
        let copied = self
            .copy_parts(copies)
            .await
            .map(|parts| {
                let etag = |part: &CompletedPart| part.e_tag().unwrap_or_default().to_owned();
                parts.iter().map(etag).collect()
            })
            .map_err(|failed| request_error("UploadPartCopy", to, &failed.err));
        let result = match copied {
            Ok(etags) => self.finish_upload(to, &upload_id, etags).await.map(drop),
            Err(err) => Err(err),
        };
        if result.is_err() {
            self.cancel_upload(to, &upload_id).await;
        }
        result
    }

    pub async fn delete_key(&self, key: &str) -> Result<(), RequestError> {
        self.client
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .map_err(|err| request_error("DeleteObject", key, &err))?;
        Ok(())
    }
}
