//! What s3mirror writes about an object besides its bytes, and what a copy carries over:
//! the user-metadata keys it records, the Content-Type it guesses, the content headers
//! of another object, and the `x-amz-copy-source` naming that object.
//!
//! The other S3 modules take these names from here, so that a key written by one is the
//! key read by another.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::location::S3Url;

/// User-metadata key holding the source file's mtime, as rclone names it.
pub const MTIME_METADATA: &str = "mtime";
/// User metadata: whole-file MD5 in base64, the key rclone uses.
pub const MD5_METADATA: &str = "md5chksum";
/// User metadata: the part size of this upload, so its ETag can be recomputed locally.
pub const PART_SIZE_METADATA: &str = "s3mirror-part-size";

/// Characters left as they are in an `x-amz-copy-source` value: RFC 3986 unreserved
/// characters and the `/` that separates bucket and key segments.
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Content headers and user metadata that a copy through the client, or a multipart
/// copy, must carry over.
#[derive(Default)]
pub(super) struct ObjectHeaders {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<String>,
    metadata: Option<HashMap<String, String>>,
    /// The source's class, kept unless `--storage-class` names another.
    storage_class: Option<aws_sdk_s3::types::StorageClass>,
    /// The source's tags as an `x-amz-tagging` value, on a copy through this machine.
    pub(super) tagging: Option<String>,
}

/// Sets the same headers on any request builder that has them.
macro_rules! apply_headers {
    ($headers:expr, $builder:expr) => {{
        let h = $headers;
        $builder
            .set_content_type(h.content_type)
            .set_cache_control(h.cache_control)
            .set_content_disposition(h.content_disposition)
            .set_content_encoding(h.content_encoding)
            .set_content_language(h.content_language)
            .set_expires(
                h.expires
                    .and_then(|e| DateTime::from_str(&e, DateTimeFormat::HttpDate).ok()),
            )
            .set_metadata(h.metadata)
            .set_storage_class(h.storage_class)
            .set_tagging(h.tagging)
    }};
}

macro_rules! headers_from {
    ($out:expr) => {{
        let out = $out;
        ObjectHeaders {
            content_type: out.content_type().map(str::to_owned),
            cache_control: out.cache_control().map(str::to_owned),
            content_disposition: out.content_disposition().map(str::to_owned),
            content_encoding: out.content_encoding().map(str::to_owned),
            content_language: out.content_language().map(str::to_owned),
            expires: out.expires_string().map(str::to_owned),
            metadata: out.metadata().cloned(),
            storage_class: out.storage_class().cloned(),
            tagging: None,
        }
    }};
}

impl ObjectHeaders {
    pub(super) fn from_get(out: &GetObjectOutput) -> Self {
        headers_from!(out)
    }

    pub(super) fn from_head(out: &HeadObjectOutput) -> Self {
        headers_from!(out)
    }

    pub(super) fn apply_to_put(self, builder: PutObjectFluentBuilder) -> PutObjectFluentBuilder {
        apply_headers!(self, builder)
    }

    pub(super) fn apply_to_create(
        self,
        builder: CreateMultipartUploadFluentBuilder,
    ) -> CreateMultipartUploadFluentBuilder {
        apply_headers!(self, builder)
    }
}

/// A full key as S3 Batch Operations manifests and `x-amz-copy-source` want it:
/// URL-encoded, except for unreserved characters and `/`.
pub fn url_encoded_key(full_key: &str) -> String {
    utf8_percent_encode(full_key, COPY_SOURCE).to_string()
}

/// The `x-amz-copy-source` value for a key below a location, and for one version of it
/// when given (`?versionId=`).
pub(super) fn copy_source(source: &S3Url, key: &str, version: Option<&str>) -> String {
    let object = format!(
        "{}/{}",
        source.bucket(),
        url_encoded_key(&source.full_key(key))
    );
    match version {
        Some(id) => format!(
            "{object}?versionId={}",
            utf8_percent_encode(id, COPY_SOURCE)
        ),
        None => object,
    }
}

/// Content-Type from the key's extension, as web servers guess it.
pub fn content_type_for(key: &str) -> String {
    mime_guess::from_path(key)
        .first_or_octet_stream()
        .essence_str()
        .to_owned()
}

/// Decimal seconds since the epoch, the form rclone writes and reads.
pub fn format_mtime(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
            .trim_end_matches('0')
            .to_owned(),
        Err(_) => "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mtime_is_written_as_decimal_seconds() {
        let at = |s, ns| UNIX_EPOCH + Duration::new(s, ns);
        assert_eq!(format_mtime(at(1_700_000_000, 0)), "1700000000");
        assert_eq!(format_mtime(at(1_700_000_000, 500_000_000)), "1700000000.5");
        assert_eq!(format_mtime(at(1, 123_456_789)), "1.123456789");
    }

    #[test]
    fn copy_source_escapes_everything_but_unreserved_and_slash() {
        let encoded = utf8_percent_encode("a b/c+d%e/ü.txt", COPY_SOURCE).to_string();
        assert_eq!(encoded, "a%20b/c%2Bd%25e/%C3%BC.txt");
    }

    #[test]
    fn a_copy_source_names_its_version() {
        let crate::location::Location::S3(url) =
            crate::location::Location::parse("s3://bkt/pre").unwrap()
        else {
            panic!("an S3 location");
        };
        assert_eq!(copy_source(&url, "a b.txt", None), "bkt/pre/a%20b.txt");
        assert_eq!(
            copy_source(&url, "a b.txt", Some("3sL4kqtJ.lu+7")),
            "bkt/pre/a%20b.txt?versionId=3sL4kqtJ.lu%2B7"
        );
    }

    #[test]
    fn content_types_come_from_extensions() {
        assert_eq!(content_type_for("a/b.html"), "text/html");
        assert_eq!(content_type_for("photo.JPG"), "image/jpeg");
        assert_eq!(content_type_for("no-extension"), "application/octet-stream");
    }
}
