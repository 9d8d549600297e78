//! The steps every multipart upload goes through, whether its parts come from a file,
//! from a stream or from another object: CreateMultipartUpload (registered at once),
//! UploadPart, CompleteMultipartUpload, and the abort of an upload whose parts failed.

use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumType, CompletedMultipartUpload, CompletedPart};

use super::journal::Recorded;
use super::metadata::ObjectHeaders;
use super::uploads::{ActiveUpload, Registered};
use super::{describe_sdk_error, S3Store};
use crate::storage::{Checksum, ETag, ObjectError};

/// One UploadPart request: the part's bytes and what the server is to verify them with.
pub(super) struct PartRequest {
    pub(super) number: i32,
    pub(super) len: u64,
    pub(super) body: ByteStream,
    pub(super) content_md5: Option<String>,
    pub(super) checksum: Option<Checksum>,
}

impl S3Store {
    /// Starts an upload that carries another object's content headers and metadata, and
    /// is to end with `checksum`.
    pub(super) async fn create_copy_upload(
        &self,
        key: &str,
        headers: ObjectHeaders,
        checksum: Option<&Checksum>,
    ) -> Result<Registered, ObjectError> {
        let create = headers.apply_to_create(
            self.client
                .create_multipart_upload()
                .bucket(self.url.bucket())
                .key(self.url.full_key(key)),
        );
        self.create_upload(key, with_checksum_algorithm(create, checksum))
            .await
    }

    /// Sends CreateMultipartUpload with the run's write options and registers the upload,
    /// so that from its creation on, a failure or an interruption aborts it.
    pub(super) async fn create_upload(
        &self,
        key: &str,
        create: CreateMultipartUploadFluentBuilder,
    ) -> Result<Registered, ObjectError> {
        let failed =
            |cause: String| ObjectError::new("CreateMultipartUpload", self.describe(key), cause);
        let Some(_creating) = self.uploads.begin_create() else {
            return Err(failed("the run is being interrupted".to_owned()));
        };
        let out = with_write_options!(create, self.write)
            .send()
            .await
            .map_err(|err| failed(describe_sdk_error(&err)))?;
        let upload_id = out.upload_id.unwrap_or_default();
        let id = self.uploads.register(ActiveUpload {
            client: self.client.clone(),
            recorded: Recorded {
                endpoint: self.endpoint.clone(),
                bucket: self.url.bucket().to_owned(),
                upload_id: upload_id.clone(),
                key: self.url.full_key(key),
            },
        });
        Ok(Registered { id, upload_id })
    }

    /// Sends one UploadPart and returns the part as completed. The part carries what the
    /// server verifies (Content-MD5, an additional checksum), so its payload is not also
    /// hashed with SHA-256 for the signature.
    pub(super) async fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        part: PartRequest,
    ) -> Result<CompletedPart, ObjectError> {
        let number = part.number;
        let request = self
            .client
            .upload_part()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .content_length(part.len as i64)
            .set_content_md5(part.content_md5)
            .body(part.body);
        let out = with_checksum!(request, part.checksum.as_ref())
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map_err(|err| {
                ObjectError::new(
                    "UploadPart",
                    format!("{} part {number}", self.describe(key)),
                    describe_sdk_error(&err),
                )
            })?;
        let completed = CompletedPart::builder().part_number(number);
        let completed = with_checksum!(completed, part.checksum.as_ref());
        Ok(completed.set_e_tag(out.e_tag).build())
    }

    /// Completes an upload; `whole` is the whole-object checksum of a `FULL_OBJECT`
    /// upload, for the server to verify. Returns the ETag and checksum the server states.
    pub(super) async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
        whole: Option<&Checksum>,
    ) -> Result<(Option<ETag>, Option<Checksum>), ObjectError> {
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(self.url.bucket())
            .key(self.url.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .set_checksum_type(whole.map(|_| ChecksumType::FullObject));
        let out = with_checksum!(request, whole).send().await.map_err(|err| {
            ObjectError::new(
                "CompleteMultipartUpload",
                self.describe(key),
                describe_sdk_error(&err),
            )
        })?;
        Ok((out.e_tag().map(ETag::parse), checksum_from!(&out)))
    }

    /// Runs the body of a registered upload, and aborts the upload on failure.
    pub(super) async fn run_registered(
        &self,
        upload: Registered,
        body: impl std::future::Future<Output = Result<(), ObjectError>>,
    ) -> Result<(), ObjectError> {
        let result = body.await;
        // Taken by `abort_all` if the run was interrupted meanwhile.
        if let Some(registered) = self.uploads.take(upload.id) {
            match &result {
                Ok(()) => self.uploads.ended(&upload.upload_id),
                Err(_) => self.uploads.abort(&registered).await,
            }
        }
        result
    }
}

/// Sets the checksum algorithm and type of a new upload made to end with `checksum`.
pub(super) fn with_checksum_algorithm(
    create: CreateMultipartUploadFluentBuilder,
    checksum: Option<&Checksum>,
) -> CreateMultipartUploadFluentBuilder {
    match checksum {
        None => create,
        Some(c) => create
            .checksum_algorithm(c.algorithm.sdk())
            .checksum_type(match c.parts {
                Some(_) => ChecksumType::Composite,
                None => ChecksumType::FullObject,
            }),
    }
}
