//! Single-request object operations: PutObject of a file or of an object being read,
//! HeadObject for the stored checksum, and DeleteObjects.

use std::path::Path;
use std::time::SystemTime;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, Delete, ObjectIdentifier};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::checked_body::{checked, source_damage};
use super::error::damaged_in_transit;
use super::metadata::{
    content_type_for, format_mtime, ObjectHeaders, MTIME_METADATA, PART_SIZE_METADATA,
};
use super::{describe_sdk_error, S3Store, DEFAULT_CHECKSUM};
use crate::location::S3Url;
use crate::storage::checksum::{b64, HashKind};
use crate::storage::local::DigestRequest;
use crate::storage::{local, Checksum, Entry, Expected, ObjectError};

/// Files up to this size are read whole in one blocking call and sent from memory, which
/// costs far less CPU than streaming them; at most `--threads` of them are in memory.
const SMALL_FILE: u64 = 256 * 1024;

/// An object being read: its body and what must travel with it to another bucket.
pub struct Download {
    pub body: ByteStream,
    pub size: u64,
    pub last_modified: SystemTime,
    /// The object being read, for error messages.
    pub(super) source: String,
    /// The version being read, when it is not the current one.
    pub(super) version: Option<Box<str>>,
    pub(super) headers: ObjectHeaders,
    /// Whether the object has tags (GetObject's tag count), which `with_tags` reads.
    pub(super) tagged: bool,
    pub(super) checksum: Option<Checksum>,
    /// What the bytes must hash to.
    pub expected: Expected,
}

/// What HeadObject says about an object's additional checksum.
pub struct StoredChecksum {
    pub checksum: Option<Checksum>,
    /// The part size recorded by s3mirror when it uploaded the object in parts.
    pub part_size: Option<u64>,
}

impl S3Store {
    /// Uploads a local file in one PutObject, recording its mtime as user metadata and
    /// its Content-Type from the extension. The file is hashed first (a small one is read
    /// whole and sent from memory) for its Content-MD5 and its checksum (the configured
    /// algorithm's, else CRC32C), which the server verifies and stores.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        source: &Entry,
    ) -> Result<(), ObjectError> {
        let read_error =
            |err: &dyn std::fmt::Display| ObjectError::new("read", path.display().to_string(), err);
        let algorithm = self.write.checksum.unwrap_or(DEFAULT_CHECKSUM);
        let (body, content_md5, checksum) = if source.size <= SMALL_FILE {
            let file = local::read_small(path.to_path_buf(), Some(algorithm))
                .await
                .map_err(|err| read_error(&err))?;
            if file.data.len() as u64 != source.size {
                return Err(changed_while_reading(path));
            }
            let checksum = file
                .checksum
                .map(|digest| Checksum::full(algorithm, &digest));
            (ByteStream::from(file.data), b64(&file.md5), checksum)
        } else {
            // Hashed first, in one pass, for the Content-MD5 and the checksum the server
            // verifies; a file changing afterwards fails that check.
            let requests = vec![
                DigestRequest::whole(HashKind::Md5),
                DigestRequest::whole(HashKind::Checksum(algorithm)),
            ];
            let hashed = local::file_digests(path.to_path_buf(), requests)
                .await
                .map_err(|err| read_error(&err))?;
            if hashed.len != source.size {
                return Err(changed_while_reading(path));
            }
            let checksum = Checksum::full(algorithm, &hashed.digests[1].whole);
            let body = ByteStream::read_from()
                .path(path)
                .buffer_size(256 * 1024)
                .build()
                .await
                .map_err(|err| read_error(&err))?;
            (body, b64(&hashed.digests[0].whole), Some(checksum))
        };
        let put = self
            .client
            .put_object()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .body(body)
            .content_length(source.size as i64)
            .content_md5(content_md5)
            .content_type(content_type_for(key))
            .metadata(MTIME_METADATA, format_mtime(source.mtime));
        let out = with_checksum!(with_write_options!(put, self.write), checksum.as_ref())
            .send()
            .await
            .map_err(|err| self.put_error(key, &err))?;
        // The default checksum need not be stated back: the Content-MD5 was verified
        // anyway, and a server that keeps no checksums still takes the object.
        let asked = self.write.checksum.and(checksum.as_ref());
        self.confirm_checksum("PutObject", key, asked, checksum_from!(&out))
    }

    /// A failed PutObject; transient when the bytes were damaged or cut short on the way
    /// (or the file changed since it was hashed), so that it is sent again.
    fn put_error<E>(&self, key: &str, err: &SdkError<E, HttpResponse>) -> ObjectError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        ObjectError {
            transient: damaged_in_transit(err),
            ..ObjectError::new("PutObject", self.describe(key), describe_sdk_error(err))
        }
    }

    /// Uploads an object being read from another bucket, keeping its headers and metadata.
    /// The destination verifies the bytes against the source's checksum (with checksums
    /// on) or its MD5 (as Content-MD5) where the source states one; other bytes are
    /// checked on their way through, against the source's CRC, before their last chunk
    /// is sent.
    pub async fn put_download(&self, key: &str, download: Download) -> Result<(), ObjectError> {
        let checksum = self.carried_checksum(key, download.checksum)?;
        // The source's MD5 as Content-MD5: the destination refuses bytes damaged on the
        // way through this machine.
        let content_md5 = match download.expected {
            Expected::Md5 { digest, .. } if checksum.is_none() => Some(b64(&digest)),
            _ => None,
        };
        let unchecked = checksum.is_none() && content_md5.is_none();
        let body = if unchecked && download.expected != Expected::Unknown {
            checked(download.body, download.size, &download.expected)
        } else {
            download.body
        };
        let put = self
            .client
            .put_object()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .body(body)
            .content_length(download.size as i64)
            .set_content_md5(content_md5);
        let put = download.headers.apply_to_put(put);
        let out = with_checksum!(with_write_options!(put, self.write), checksum.as_ref())
            .send()
            .await
            .map_err(|err| match source_damage(&err) {
                Some(damaged) => ObjectError::transient("GetObject", &download.source, damaged),
                None => self.put_error(key, &err),
            })?;
        self.confirm_checksum("PutObject", key, checksum.as_ref(), checksum_from!(&out))
    }

    /// The source's checksum, to be sent with a copy through this machine when checksums
    /// are on, so that the destination verifies the bytes and stores the same value.
    pub(super) fn carried_checksum(
        &self,
        key: &str,
        source: Option<Checksum>,
    ) -> Result<Option<Checksum>, ObjectError> {
        match (&self.write.checksum, source) {
            (None, _) | (_, None) => Ok(None),
            (Some(_), Some(checksum)) if checksum.parts.is_none() => Ok(Some(checksum)),
            (Some(_), Some(checksum)) => Err(ObjectError::new(
                "PutObject",
                self.describe(key),
                format!(
                    "the source's composite checksum ({checksum}) cannot be reproduced by a \
                     copy through this machine; copy with one endpoint and set of \
                     credentials for both buckets, or use --compare etag"
                ),
            )),
        }
    }

    /// Checks the checksum a write's response states against the one sent or expected.
    pub(super) fn confirm_checksum(
        &self,
        operation: &'static str,
        key: &str,
        expected: Option<&Checksum>,
        stated: Option<Checksum>,
    ) -> Result<(), ObjectError> {
        let Some(expected) = expected else {
            return Ok(());
        };
        let cause = match stated {
            Some(stated) if stated == *expected => return Ok(()),
            Some(stated) => format!(
                "the server answered that it stored checksum {stated}, but the bytes sent \
                 hash to {expected}; it does not keep {} checksums faithfully: run without \
                 --checksum-algorithm for this server",
                expected.algorithm.name()
            ),
            None => format!(
                "the server did not confirm the {} checksum sent with the object (its answer \
                 has no x-amz-checksum-*), so it does not keep S3 additional checksums: run \
                 without --checksum-algorithm for this server",
                expected.algorithm.name()
            ),
        };
        Err(ObjectError::new(operation, self.describe(key), cause))
    }

    /// HeadObject with the stored checksum (`x-amz-checksum-mode: ENABLED`), of the given
    /// version or else the current one; `part` asks for the length of one part of a
    /// multipart object.
    pub(super) async fn head(
        &self,
        location: &S3Url,
        key: &str,
        version: Option<&str>,
        part: Option<i32>,
    ) -> Result<HeadObjectOutput, ObjectError> {
        let full_key = location.full_key(key);
        self.client
            .head_object()
            .bucket(location.bucket())
            .key(&full_key)
            .set_version_id(version.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .set_part_number(part)
            .send()
            .await
            .map_err(|err| {
                ObjectError::new(
                    "HeadObject",
                    format!("s3://{}/{full_key}", location.bucket()),
                    describe_sdk_error(&err),
                )
            })
    }

    /// The object's (or the given version's) stored additional checksum, and the part
    /// size s3mirror recorded if it uploaded the object in parts.
    pub async fn stored_checksum(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<StoredChecksum, ObjectError> {
        let out = self.head(&self.url, key, version, None).await?;
        Ok(StoredChecksum {
            checksum: checksum_from!(&out),
            part_size: out
                .metadata()
                .and_then(|m| m.get(PART_SIZE_METADATA))
                .and_then(|v| v.parse().ok()),
        })
    }

    /// The error for an object that `--compare checksum` cannot judge.
    pub fn no_stored_checksum(&self, key: &str) -> ObjectError {
        ObjectError::new(
            "HeadObject",
            self.describe(key),
            "the object has no stored additional checksum (x-amz-checksum-*): it was \
             written without one, or the server does not keep them; compare it with \
             --compare etag",
        )
    }
}

impl S3Store {
    /// Deletes up to 1,000 keys in one DeleteObjects request; returns the keys the
    /// server could not delete, with the reason.
    pub async fn delete_batch(
        &self,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, ObjectError> {
        let target = || format!("{} ({} keys)", self.url, keys.len());
        let objects = keys
            .iter()
            .map(|key| {
                ObjectIdentifier::builder()
                    .key(self.url.full_key(key))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| ObjectError::new("DeleteObjects", target(), err))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|err| ObjectError::new("DeleteObjects", target(), err))?;
        let out = self
            .client
            .delete_objects()
            .bucket(self.url.bucket())
            .delete(delete)
            .send()
            .await
            .map_err(|err| ObjectError::new("DeleteObjects", target(), describe_sdk_error(&err)))?;
        Ok(out
            .errors()
            .iter()
            .map(|e| {
                let full = e.key().unwrap_or_default();
                let key = full
                    .strip_prefix(self.url.prefix())
                    .unwrap_or(full)
                    .to_owned();
                let cause = format!(
                    "{}: {}",
                    e.code().unwrap_or("error"),
                    e.message().unwrap_or_default()
                );
                let message =
                    ObjectError::new("DeleteObjects", self.describe(&key), cause).to_string();
                (key, message)
            })
            .collect())
    }
}

/// A file that changed while it was being uploaded: sent again, it may arrive whole.
pub(super) fn changed_while_reading(path: &Path) -> ObjectError {
    ObjectError::transient(
        "upload",
        path.display().to_string(),
        "the file changed while it was being uploaded; it was not committed",
    )
}
