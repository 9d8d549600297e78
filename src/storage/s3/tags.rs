//! Object tags: copied after a server-side copy that does not carry them itself (a
//! multipart copy), and read for a copy through this machine, which sends them along.

use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::types::Tag;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::objects::Download;
use super::{describe_sdk_error, S3Store};
use crate::location::S3Url;
use crate::storage::ObjectError;

impl S3Store {
    /// Copies the tags of an object (of one version of it, when given) to `key` here,
    /// where the server supports tagging; warns once where it does not.
    pub(super) async fn copy_tags(
        &self,
        source: &S3Url,
        source_key: &str,
        version: Option<&str>,
        key: &str,
    ) -> Result<(), ObjectError> {
        let tags = self.tags_of(source, source_key, version).await?;
        if tags.is_empty() {
            return Ok(());
        }
        let tagging = aws_sdk_s3::types::Tagging::builder()
            .set_tag_set(Some(tags))
            .build()
            .map_err(|err| ObjectError::new("PutObjectTagging", self.describe(key), err))?;
        self.client
            .put_object_tagging()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .tagging(tagging)
            .send()
            .await
            .map_err(|err| {
                ObjectError::new(
                    "PutObjectTagging",
                    self.describe(key),
                    describe_sdk_error(&err),
                )
            })?;
        Ok(())
    }

    /// A download from this store, with its object's tags to be sent along on a copy
    /// through this machine, as PutObject's or CreateMultipartUpload's `x-amz-tagging`.
    pub async fn with_tags(
        &self,
        key: &str,
        mut download: Download,
    ) -> Result<Download, ObjectError> {
        if download.tagged {
            let version = download.version.as_deref();
            download.headers.tagging = self.tagging_value(key, version).await?;
        }
        Ok(download)
    }

    /// This store's object's tags as an `x-amz-tagging` value (`k=v&k2=v2`, URL-encoded).
    async fn tagging_value(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<String>, ObjectError> {
        let tags = self.tags_of(&self.url, key, version).await?;
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let pairs: Vec<String> = tags
            .iter()
            .map(|t| format!("{}={}", encode(t.key()), encode(t.value())))
            .collect();
        Ok((!pairs.is_empty()).then(|| pairs.join("&")))
    }

    /// The tags of an object this store's client reaches; none where the server does not
    /// support tagging, or where these credentials may not read them (a source bucket
    /// shared for GetObject only): warned once, since the copy itself is in place.
    async fn tags_of(
        &self,
        location: &S3Url,
        key: &str,
        version: Option<&str>,
    ) -> Result<Vec<Tag>, ObjectError> {
        static UNSUPPORTED_WARNED: AtomicBool = AtomicBool::new(false);
        static DENIED_WARNED: AtomicBool = AtomicBool::new(false);
        let answer = self
            .client
            .get_object_tagging()
            .bucket(location.bucket())
            .key(location.full_key(key))
            .set_version_id(version.map(str::to_owned))
            .send()
            .await;
        let err = match answer {
            Ok(out) => return Ok(out.tag_set),
            Err(err) => err,
        };
        let code = err
            .as_service_error()
            .and_then(aws_sdk_s3::error::ProvideErrorMetadata::code);
        let (warned, why) = match code {
            Some("NotImplemented") => (
                &UNSUPPORTED_WARNED,
                "the source server does not support object tagging".to_owned(),
            ),
            Some("AccessDenied") => (
                &DENIED_WARNED,
                format!(
                    "GetObjectTagging on s3://{} is refused to these credentials (AccessDenied)",
                    location.bucket()
                ),
            ),
            _ => {
                return Err(ObjectError::new(
                    "GetObjectTagging",
                    format!("s3://{}/{}", location.bucket(), location.full_key(key)),
                    describe_sdk_error(&err),
                ))
            }
        };
        if !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("{why}; tags are not copied");
        }
        Ok(Vec::new())
    }
}
