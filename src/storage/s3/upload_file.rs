//! Multipart upload of a local file. The file is hashed in one pass before anything is
//! sent, and its parts are read from it by offset and streamed, never buffered whole, so
//! memory does not grow with the part size; a file that changed meanwhile is not
//! committed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedPart, ServerSideEncryption};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::metadata::{
    content_type_for, format_mtime, MD5_METADATA, MTIME_METADATA, PART_SIZE_METADATA,
};
use super::objects::changed_while_reading;
use super::parts::{part_ranges, part_size_for, PartSettings};
use super::upload_steps::{with_checksum_algorithm, PartRequest};
use super::{S3Store, DEFAULT_CHECKSUM};
use crate::storage::checksum::{b64, HashKind};
use crate::storage::local::{DigestRequest, Digests};
use crate::storage::{local, Checksum, ChecksumAlgorithm, ETag, Entry, ObjectError};

const READ_BUFFER: usize = 256 * 1024;

/// One part to upload: where it is in the file and what the server must verify.
struct FilePart {
    number: i32,
    offset: u64,
    len: u64,
    checksum: Checksum,
}

/// The additional checksums of a multipart upload: one per part, and the object's
/// (whole-object for CRCs, composite otherwise).
struct UploadChecksums {
    parts: Vec<Checksum>,
    object: Checksum,
}

impl UploadChecksums {
    fn new(algorithm: ChecksumAlgorithm, digests: &Digests) -> Self {
        let part_digests = &digests.parts[0];
        Self {
            parts: part_digests
                .iter()
                .map(|d| Checksum::full(algorithm, d))
                .collect(),
            object: if algorithm.is_crc() {
                Checksum::full(algorithm, &digests.whole)
            } else {
                Checksum::composite(algorithm, part_digests)
            },
        }
    }
}

impl S3Store {
    /// Uploads a local file in parts. The file is hashed first, in one pass: its whole
    /// MD5 goes into the metadata (`md5chksum`), and each part is sent with its checksum
    /// (CRC32C unless another algorithm is configured) for the server to verify; for a
    /// CRC the upload is `FULL_OBJECT`, so the server also verifies the whole object's,
    /// and the stated checksum is checked against the one computed here.
    pub async fn put_file_multipart(
        &self,
        key: &str,
        path: &Path,
        source: &Entry,
        parts: &PartSettings,
    ) -> Result<(), ObjectError> {
        let part_size = part_size_for(source.size, parts.part_size);
        let algorithm = self.write.checksum.unwrap_or(DEFAULT_CHECKSUM);
        // A CRC's object checksum is the whole file's; another's is composed of the parts'.
        let checksums = HashKind::Checksum(algorithm);
        let requests = vec![
            DigestRequest::whole(HashKind::Md5),
            if algorithm.is_crc() {
                DigestRequest::whole_and_parts(checksums, vec![part_size])
            } else {
                DigestRequest::parts(checksums, vec![part_size])
            },
        ];
        let digests = local::file_digests(path.to_path_buf(), requests)
            .await
            .map_err(|err| ObjectError::new("read", path.display().to_string(), err))?;
        if digests.len != source.size {
            return Err(changed_while_reading(path));
        }
        let checksums = UploadChecksums::new(algorithm, &digests.digests[1]);
        let create = self
            .client
            .create_multipart_upload()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .content_type(content_type_for(key))
            .metadata(MTIME_METADATA, format_mtime(source.mtime))
            .metadata(MD5_METADATA, b64(&digests.digests[0].whole))
            .metadata(PART_SIZE_METADATA, part_size.to_string());
        let create = with_checksum_algorithm(create, Some(&checksums.object));
        let registered = self.create_upload(key, create).await?;
        let upload_id = registered.upload_id.clone();

        let upload = async {
            let completed = futures::stream::iter(part_ranges(source.size, part_size))
                .map(|(number, offset, len)| {
                    let part = FilePart {
                        number,
                        offset,
                        len,
                        checksum: checksums.parts[number as usize - 1].clone(),
                    };
                    self.upload_part(key, &upload_id, path, part, &parts.permits)
                })
                .buffered(parts.concurrency)
                .try_collect::<Vec<_>>()
                .await?;
            if file_changed(path, source).await {
                return Err(changed_while_reading(path));
            }
            let object = Some(&checksums.object);
            let whole = object.filter(|c| c.parts.is_none());
            let (etag, stated) = self.complete(key, &upload_id, completed, whole).await?;
            let confirmed = stated.as_ref() == object;
            if confirmed || self.write.checksum.is_some() {
                // Checksums the user asked for must be kept: no other check stands in.
                return self.confirm_checksum("CompleteMultipartUpload", key, object, stated);
            }
            self.confirm_by_etag(key, path, part_size, etag, stated)
                .await
        };
        self.run_registered(registered, upload).await
    }

    /// Checks an upload whose CRC the server did not confirm (it keeps no additional
    /// checksums, or states a wrong one) by its multipart ETag instead, the MD5 of the
    /// parts' MD5s, for which the file is read again. The user asked for no checksum,
    /// so this is as strong a check as an upload without one gets. ETags of SSE-KMS
    /// objects are not MD5s: there the parts' own checks have to do.
    async fn confirm_by_etag(
        &self,
        key: &str,
        path: &Path,
        part_size: u64,
        etag: Option<ETag>,
        stated: Option<Checksum>,
    ) -> Result<(), ObjectError> {
        static NOTED: AtomicBool = AtomicBool::new(false);
        if !NOTED.swap(true, Ordering::Relaxed) {
            let answer = match &stated {
                Some(stated) => format!("stated {stated}"),
                None => "stated none".to_owned(),
            };
            tracing::warn!(
                "the server did not confirm the CRC32C of a multipart upload ({answer}); \
                 multipart uploads are checked by their ETag instead"
            );
        }
        let opaque = matches!(
            self.write.sse,
            Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
        );
        if opaque {
            return Ok(());
        }
        let request = DigestRequest::parts(HashKind::Md5, vec![part_size]);
        let mut read = local::file_digests(path.to_path_buf(), vec![request])
            .await
            .map_err(|err| ObjectError::new("read", path.display().to_string(), err))?;
        let sent = ETag::multipart(&read.digests.remove(0).parts[0]);
        match etag {
            Some(etag) if etag == sent => Ok(()),
            answered => Err(ObjectError::transient(
                "CompleteMultipartUpload",
                self.describe(key),
                format!(
                    "the server confirmed no checksum and its ETag ({}) is not the multipart \
                     ETag of the bytes sent ({sent}); the object is uploaded again",
                    answered.map_or("none".to_owned(), |e| e.to_string())
                ),
            )),
        }
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        part: FilePart,
        permits: &Semaphore,
    ) -> Result<CompletedPart, ObjectError> {
        let _permit = permits
            .acquire()
            .await
            .expect("part permits are never closed");
        let number = part.number;
        let body = ByteStream::read_from()
            .path(path)
            .offset(part.offset)
            .length(Length::Exact(part.len))
            .buffer_size(READ_BUFFER)
            .build()
            .await
            .map_err(|err| ObjectError::new("read", path.display().to_string(), err))?;
        let request = PartRequest {
            number,
            len: part.len,
            body,
            content_md5: None,
            checksum: Some(part.checksum),
        };
        self.send_part(key, upload_id, request).await
    }
}

async fn file_changed(path: &Path, listed: &Entry) -> bool {
    match tokio::fs::metadata(path).await {
        Ok(meta) => meta.len() != listed.size || meta.modified().ok() != Some(listed.mtime),
        Err(_) => true,
    }
}
