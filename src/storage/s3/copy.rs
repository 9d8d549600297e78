//! Server-side copies between locations one client reaches: CopyObject up to the
//! multipart threshold, UploadPartCopy of every part above it (the sync's copies and the
//! mount's renames share the part loop), made to keep the source's checksum when
//! checksums are on.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::upload_part_copy::UploadPartCopyError;
use aws_sdk_s3::types::CompletedPart;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::error::read_error;
use super::metadata::{copy_source, ObjectHeaders};
use super::parts::{part_ranges, part_size_for, PartSettings, MAX_COPY_OBJECT};
use super::S3Store;
use crate::location::S3Url;
use crate::storage::{Checksum, ChecksumAlgorithm, Entry, ObjectError, StorageClass};

/// A multipart copy of one object: `size` bytes in parts of `part_size`, made to end
/// with `checksum` (the source's) when checksums are on.
struct MultipartCopy<'a> {
    source: CopySource<'a>,
    key: &'a str,
    part_size: u64,
    checksum: Option<Checksum>,
}

/// An object to copy from: where it is, and what its listing says of it.
#[derive(Debug, Clone, Copy)]
pub struct CopySource<'a> {
    pub url: &'a S3Url,
    pub key: &'a str,
    /// The version to copy; the current one when None.
    pub version: Option<&'a str>,
    pub size: u64,
    /// Kept on the copy unless `--storage-class` names another.
    pub class: Option<StorageClass>,
}

/// The parts of one multipart copy: `size` bytes of `copy_source` into the upload
/// `upload_id` of the full key `key`, in parts of `part_size`, `concurrency` at once, each
/// under a permit of `permits` where the caller caps part requests.
pub(super) struct PartCopies<'a> {
    pub(super) key: &'a str,
    pub(super) upload_id: &'a str,
    pub(super) copy_source: &'a str,
    pub(super) size: u64,
    pub(super) part_size: u64,
    pub(super) concurrency: usize,
    pub(super) permits: Option<&'a Semaphore>,
}

/// The UploadPartCopy that failed a multipart copy, and its part number.
pub(super) struct PartCopyFailed {
    pub(super) number: i32,
    pub(super) err: SdkError<UploadPartCopyError, HttpResponse>,
}

impl S3Store {
    /// Copies an object from another location reachable with this store's client,
    /// server-side, to the same relative key: the version the entry names, else the
    /// current one.
    pub async fn copy_object_from(
        &self,
        source: &S3Url,
        entry: &Entry,
        multipart_threshold: u64,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let source = CopySource {
            url: source,
            key: &entry.key,
            version: entry.version.as_deref(),
            size: entry.size,
            class: entry.storage_class,
        };
        self.copy_object_to(source, &entry.key, multipart_threshold, parts)
            .await
    }

    /// Copies an object from a location reachable with this store's client to relative
    /// `key` here, server-side: CopyObject, or UploadPartCopy above
    /// `multipart_threshold`. With checksums on, the copy is made so that its checksum
    /// equals the source's: the same algorithm, and for a composite checksum the
    /// source's part layout.
    pub async fn copy_object_to(
        &self,
        source: CopySource<'_>,
        key: &str,
        multipart_threshold: u64,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let CopySource {
            url,
            key: source_key,
            version,
            size,
            ..
        } = source;
        let checksums = self.write.checksum.is_some();
        if size <= multipart_threshold && !checksums {
            return self.copy_from(&source, key, None).await;
        }
        let head = self.head(url, source_key, version, None).await?;
        let checksum = checksum_from!(&head).filter(|_| checksums);
        let part_size = match &checksum {
            Some(c) if c.parts.is_some() => Some(
                self.source_part_size(url, source_key, version, size, c)
                    .await?,
            ),
            // A whole-object SHA cannot be rebuilt from parts; CopyObject keeps it.
            Some(c) if !c.algorithm.is_crc() && size <= MAX_COPY_OBJECT => None,
            _ if size > multipart_threshold => Some(part_size_for(size, parts.part_size)),
            _ => None,
        };
        match part_size {
            None => {
                let algorithm = checksum.map(|c| c.algorithm).or(self.write.checksum);
                self.copy_from(&source, key, algorithm).await
            }
            Some(part_size) => {
                let copy = MultipartCopy {
                    source,
                    key,
                    part_size,
                    checksum,
                };
                self.copy_multipart_from(copy, &head, parts).await
            }
        }
    }

    /// CopyObject from another location reachable with this store's client. The object's
    /// metadata, content headers and tags come along (the COPY directives), and its
    /// storage class, which CopyObject would otherwise set to STANDARD; with an
    /// algorithm, the server computes that checksum of the copy.
    async fn copy_from(
        &self,
        source: &CopySource<'_>,
        key: &str,
        checksum: Option<ChecksumAlgorithm>,
    ) -> Result<(), ObjectError> {
        let copy = self
            .client
            .copy_object()
            .copy_source(copy_source(source.url, source.key, source.version))
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .set_storage_class(source.class.map(|c| c.name().into()))
            .set_checksum_algorithm(checksum.map(ChecksumAlgorithm::sdk));
        with_write_options!(copy, self.write)
            .send()
            .await
            .map_err(|err| read_error("CopyObject", self.describe(key), &err))?;
        Ok(())
    }

    /// The part size of a composite-checksum source, from the length of its first part.
    async fn source_part_size(
        &self,
        source: &S3Url,
        key: &str,
        version: Option<&str>,
        size: u64,
        checksum: &Checksum,
    ) -> Result<u64, ObjectError> {
        let first = self.head(source, key, version, Some(1)).await?;
        let part_size = first.content_length().unwrap_or(0).max(0) as u64;
        let parts = u64::from(checksum.parts.unwrap_or(1));
        if part_size > 0 && size.div_ceil(part_size) == parts {
            return Ok(part_size);
        }
        Err(ObjectError::new(
            "HeadObject",
            format!("s3://{}/{}", source.bucket(), source.full_key(key)),
            format!(
                "its {parts} parts are not of equal size, so a copy cannot reproduce its \
                 composite checksum ({checksum}); compare it with --compare etag"
            ),
        ))
    }

    /// UploadPartCopy of every part, carrying over the content headers and metadata that
    /// a multipart copy does not carry itself, then the tags.
    async fn copy_multipart_from(
        &self,
        copy: MultipartCopy<'_>,
        head: &HeadObjectOutput,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let MultipartCopy {
            source,
            key,
            part_size,
            checksum,
        } = copy;
        let size = source.size;
        let headers = ObjectHeaders::from_head(head);
        let registered = self
            .create_copy_upload(key, headers, checksum.as_ref())
            .await?;
        let upload_id = registered.upload_id.clone();
        let copy_source = copy_source(source.url, source.key, source.version);
        let upload = async {
            let full_key = self.url.full_key(key);
            let copies = PartCopies {
                key: &full_key,
                upload_id: &upload_id,
                copy_source: &copy_source,
                size,
                part_size,
                concurrency: parts.concurrency,
                permits: Some(&parts.permits),
            };
            let completed = self.copy_parts(copies).await.map_err(|failed| {
                let target = format!("{} part {}", self.describe(key), failed.number);
                read_error("UploadPartCopy", target, &failed.err)
            })?;
            let whole = checksum.as_ref().filter(|c| c.parts.is_none());
            let (_, stated) = self.complete(key, &upload_id, completed, whole).await?;
            self.confirm_checksum("CompleteMultipartUpload", key, checksum.as_ref(), stated)
        };
        self.run_registered(registered, upload).await?;
        self.copy_tags(source.url, source.key, source.version, key)
            .await
    }

    /// UploadPartCopy of every part, in order, each completed with the ETag and checksum
    /// the server states; the first failure ends the copy.
    pub(super) async fn copy_parts(
        &self,
        copies: PartCopies<'_>,
    ) -> Result<Vec<CompletedPart>, PartCopyFailed> {
        futures::stream::iter(part_ranges(copies.size, copies.part_size))
            .map(|(number, offset, len)| self.copy_part(&copies, number, offset, len))
            .buffered(copies.concurrency)
            .try_collect()
            .await
    }

    async fn copy_part(
        &self,
        copies: &PartCopies<'_>,
        number: i32,
        offset: u64,
        len: u64,
    ) -> Result<CompletedPart, PartCopyFailed> {
        let _permit = match copies.permits {
            Some(permits) => Some(
                permits
                    .acquire()
                    .await
                    .expect("part permits are never closed"),
            ),
            None => None,
        };
        let out = self
            .client
            .upload_part_copy()
            .bucket(self.url.bucket())
            .key(copies.key)
            .upload_id(copies.upload_id)
            .part_number(number)
            .copy_source(copies.copy_source)
            .copy_source_range(format!("bytes={offset}-{}", offset + len - 1))
            .send()
            .await
            .map_err(|err| PartCopyFailed { number, err })?;
        let result = out.copy_part_result;
        let checksum = result.as_ref().and_then(|r| checksum_from!(r));
        let completed = CompletedPart::builder()
            .part_number(number)
            .set_e_tag(result.and_then(|r| r.e_tag));
        Ok(with_checksum!(completed, checksum.as_ref()).build())
    }
}
