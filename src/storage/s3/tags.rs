//! Object tags, copied after a copy that does not carry them itself (a multipart copy).

use std::sync::atomic::{AtomicBool, Ordering};

use super::{describe_sdk_error, S3Store};
use crate::location::S3Url;
use crate::storage::ObjectError;

impl S3Store {
    /// Copies object tags where the server supports tagging; warns once where it does not.
    pub(super) async fn copy_tags(&self, source: &S3Url, key: &str) -> Result<(), ObjectError> {
        static UNSUPPORTED_WARNED: AtomicBool = AtomicBool::new(false);
        let tags = match self
            .client
            .get_object_tagging()
            .bucket(source.bucket())
            .key(source.full_key(key))
            .send()
            .await
        {
            Ok(out) => out.tag_set,
            Err(err)
                if err
                    .as_service_error()
                    .and_then(|e| aws_sdk_s3::error::ProvideErrorMetadata::code(e))
                    == Some("NotImplemented") =>
            {
                if !UNSUPPORTED_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the source server does not support object tagging; tags are not copied"
                    );
                }
                return Ok(());
            }
            Err(err) => {
                return Err(ObjectError::new(
                    "GetObjectTagging",
                    format!("s3://{}/{}", source.bucket(), source.full_key(key)),
                    describe_sdk_error(&err),
                ))
            }
        };
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
}
