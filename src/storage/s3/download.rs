//! GetObject, whole or by ranges, and what the bytes read must hash to.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ServerSideEncryption};
use base64::Engine;
use bytes::Bytes;

use super::error::read_error;
use super::metadata::{ObjectHeaders, MD5_METADATA, PART_SIZE_METADATA};
use super::objects::Download;
use super::S3Store;
use crate::storage::{Checksum, ETag, Expected, ObjectError};

/// What a GetObject or HeadObject answer says the object's content hashes to.
struct Promise {
    size: u64,
    etag: Option<ETag>,
    /// SSE-KMS and SSE-C objects have ETags that are not the MD5 of their content.
    opaque_etag: bool,
    /// `md5chksum`: the whole content's MD5, recorded at upload by s3mirror or rclone.
    recorded_md5: Option<[u8; 16]>,
    /// The part size s3mirror recorded at upload.
    recorded_part_size: Option<u64>,
    checksum: Option<Checksum>,
}

macro_rules! promise_from {
    ($out:expr) => {{
        let out = $out;
        let metadata = out.metadata();
        Promise {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().map(ETag::parse),
            opaque_etag: out.sse_customer_algorithm().is_some()
                || matches!(
                    out.server_side_encryption(),
                    Some(ServerSideEncryption::AwsKms | ServerSideEncryption::AwsKmsDsse)
                ),
            recorded_md5: recorded_md5(metadata),
            recorded_part_size: metadata
                .and_then(|m| m.get(PART_SIZE_METADATA))
                .and_then(|v| v.parse().ok()),
            checksum: checksum_from!(out),
        }
    }};
}

fn recorded_md5(metadata: Option<&HashMap<String, String>>) -> Option<[u8; 16]> {
    let value = metadata?.get(MD5_METADATA)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .ok()?;
    bytes.try_into().ok()
}

impl Promise {
    /// The strongest check the answer allows; a part size, when one is needed and not
    /// recorded, comes from `first_part` (the length of part 1).
    fn expected(&self, first_part: Option<u64>) -> Expected {
        let part_size = self.recorded_part_size.or(first_part);
        let fitting = |parts: u32| {
            part_size.filter(|&p| p > 0 && self.size.div_ceil(p).max(1) == u64::from(parts))
        };
        if let Some(checksum) = &self.checksum {
            if checksum.parts.is_none() {
                return Expected::Checksum {
                    checksum: checksum.clone(),
                    part_size: None,
                };
            }
        }
        match &self.etag {
            Some(etag) if !self.opaque_etag && etag.is_plain_md5() => {
                return Expected::from_etag(etag, None)
            }
            _ => {}
        }
        if let Some(digest) = self.recorded_md5 {
            return Expected::Md5 {
                digest,
                from: "recorded (md5chksum)",
            };
        }
        if let Some(checksum) = &self.checksum {
            if let Some(part_size) = checksum.parts.and_then(fitting) {
                return Expected::Checksum {
                    checksum: checksum.clone(),
                    part_size: Some(part_size),
                };
            }
        }
        match &self.etag {
            Some(etag) if !self.opaque_etag => {
                Expected::from_etag(etag, etag.parts().and_then(fitting))
            }
            _ => Expected::Unknown,
        }
    }

    /// Whether the length of part 1 would allow a check that is not possible yet.
    fn wants_first_part(&self) -> bool {
        self.expected(None) == Expected::Unknown
            && self.recorded_part_size.is_none()
            && (self.checksum.as_ref().is_some_and(|c| c.parts.is_some())
                || (!self.opaque_etag && self.etag.as_ref().is_some_and(|e| e.parts().is_some())))
    }
}

impl S3Store {
    /// The whole object (the given version of it, else the current one), with what its
    /// bytes must hash to: its stored whole-object CRC where it has one, which costs far
    /// less to check than an MD5.
    pub async fn get(&self, key: &str, version: Option<&str>) -> Result<Download, ObjectError> {
        let out = self
            .client
            .get_object()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .set_version_id(version.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|err| read_error("GetObject", self.describe(key), &err))?;
        let promise = promise_from!(&out);
        let headers = ObjectHeaders::from_get(&out);
        let expected = self.expected_from(key, version, &promise).await?;
        let last_modified = out
            .last_modified()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or(UNIX_EPOCH);
        Ok(Download {
            size: promise.size,
            last_modified,
            headers,
            tagged: out.tag_count().is_some_and(|n| n > 0),
            body: out.body,
            source: self.describe(key),
            version: version.map(Into::into),
            checksum: promise.checksum,
            expected,
        })
    }

    /// What an object (or the given version of it) about to be read by ranges must hash
    /// to (HeadObject).
    pub async fn expected(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Expected, ObjectError> {
        let head = self.head(&self.url, key, version, None).await?;
        self.expected_from(key, version, &promise_from!(&head))
            .await
    }

    /// The promise's check, asking for the length of part 1 when that makes a multipart
    /// ETag or composite checksum checkable.
    async fn expected_from(
        &self,
        key: &str,
        version: Option<&str>,
        promise: &Promise,
    ) -> Result<Expected, ObjectError> {
        if !promise.wants_first_part() {
            return Ok(promise.expected(None));
        }
        let first = self.head(&self.url, key, version, Some(1)).await?;
        let length = first.content_length().unwrap_or(0).max(0) as u64;
        // Equal parts are only a guess from part 1: the last part confirms it (its
        // length is what equal parts leave), or the layout is unknown and nothing can
        // be checked, rather than every download of the object failing its check.
        let parts = promise
            .checksum
            .as_ref()
            .and_then(|c| c.parts)
            .or_else(|| promise.etag.as_ref().and_then(ETag::parts))
            .unwrap_or(1);
        if parts > 1 && length > 0 {
            let last = self
                .head(&self.url, key, version, Some(parts as i32))
                .await?;
            let last_length = last.content_length().unwrap_or(0).max(0) as u64;
            let left = promise.size.checked_sub(u64::from(parts - 1) * length);
            if left != Some(last_length) {
                return Ok(Expected::Unknown);
            }
        }
        Ok(promise.expected(Some(length)))
    }

    /// One range of an object (of the given version, else the current one),
    /// `first..=last`, only if it still has the listed ETag, so the ranges of one
    /// download all come from the same version.
    pub async fn get_range(
        &self,
        key: &str,
        version: Option<&str>,
        first: u64,
        last: u64,
        etag: Option<&ETag>,
    ) -> Result<ByteStream, ObjectError> {
        let out = self
            .client
            .get_object()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .set_version_id(version.map(str::to_owned))
            .range(format!("bytes={first}-{last}"))
            .set_if_match(etag.map(|tag| format!("\"{tag}\"")))
            .send()
            .await
            .map_err(|err| {
                let target = format!("{} bytes {first}-{last}", self.describe(key));
                read_error("GetObject", target, &err)
            })?;
        Ok(out.body)
    }
}

/// A body's bytes in the chunks they arrive in, owned, so that they are handed on
/// without being copied; an error keeps its cause (a checksum mismatch stays one).
pub fn chunks(body: ByteStream) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    futures::stream::unfold(body, |mut body| async move {
        let chunk = body.next().await?.map_err(std::io::Error::from);
        Some((chunk, body))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ChecksumAlgorithm;

    fn promise() -> Promise {
        Promise {
            size: 100,
            etag: None,
            opaque_etag: false,
            recorded_md5: None,
            recorded_part_size: None,
            checksum: None,
        }
    }

    #[test]
    fn the_strongest_available_check_is_chosen() {
        let plain = ETag::parse("0123456789abcdef0123456789abcdef");
        let multipart = ETag::parse("0123456789abcdef0123456789abcdef-4");
        let full = Checksum::parse(ChecksumAlgorithm::Crc32c, "AAAAAA==");
        let composite = Checksum::parse(ChecksumAlgorithm::Crc32c, "AAAAAA==-4");

        let p = Promise {
            etag: Some(plain.clone()),
            checksum: Some(full.clone()),
            ..promise()
        };
        assert!(matches!(
            p.expected(None),
            Expected::Checksum {
                part_size: None,
                ..
            }
        ));

        let p = Promise {
            etag: Some(plain.clone()),
            ..promise()
        };
        assert!(matches!(
            p.expected(None),
            Expected::Md5 { from: "ETag", .. }
        ));

        // An SSE-KMS ETag says nothing about the content; a recorded MD5 still does.
        let p = Promise {
            etag: Some(plain),
            opaque_etag: true,
            ..promise()
        };
        assert_eq!(p.expected(None), Expected::Unknown);
        assert!(!p.wants_first_part());
        let p = Promise {
            recorded_md5: Some([1; 16]),
            ..p
        };
        assert!(matches!(p.expected(None), Expected::Md5 { .. }));

        // A multipart ETag needs a part size giving its part count.
        let p = Promise {
            etag: Some(multipart.clone()),
            ..promise()
        };
        assert!(p.wants_first_part());
        assert_eq!(
            p.expected(Some(25)),
            Expected::PartMd5s {
                etag: multipart.clone(),
                part_size: 25
            }
        );
        assert_eq!(p.expected(Some(10)), Expected::Unknown, "10 parts, not 4");
        let p = Promise {
            recorded_part_size: Some(30),
            ..p
        };
        assert!(!p.wants_first_part());
        assert!(matches!(
            p.expected(None),
            Expected::PartMd5s { part_size: 30, .. }
        ));

        let p = Promise {
            etag: Some(multipart),
            checksum: Some(composite),
            ..promise()
        };
        assert!(matches!(
            p.expected(Some(25)),
            Expected::Checksum {
                part_size: Some(25),
                ..
            }
        ));
    }
}
