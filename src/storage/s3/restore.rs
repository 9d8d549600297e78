//! RestoreObject: asks S3 for a readable copy of an archived object (GLACIER,
//! DEEP_ARCHIVE), which a later run can copy once the restore has finished.

use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};

use super::{describe_sdk_error, S3Store};
use crate::storage::ObjectError;

/// A restore request for archived objects: kept `days` days, at `tier`'s speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restore {
    pub days: u16,
    pub tier: RestoreTier,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreTier {
    Standard,
    Bulk,
    Expedited,
}

impl RestoreTier {
    /// The name S3 knows the tier by.
    pub fn name(self) -> &'static str {
        match self {
            RestoreTier::Standard => "Standard",
            RestoreTier::Bulk => "Bulk",
            RestoreTier::Expedited => "Expedited",
        }
    }
}

/// What became of a restore request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreState {
    /// Asked for now (or restored already: S3 then only extends the days).
    Requested,
    /// An earlier request is still being worked on.
    InProgress,
}

impl RestoreState {
    pub fn describe(self) -> &'static str {
        match self {
            RestoreState::Requested => "restore requested",
            RestoreState::InProgress => "restore in progress",
        }
    }
}

impl S3Store {
    /// Whether an archived object (of `version`, when given) has a restored copy to read:
    /// HeadObject's `x-amz-restore` says so. For runs that change nothing (a dry run, a
    /// verify), which cannot learn it from a refused read.
    pub async fn is_restored(&self, key: &str, version: Option<&str>) -> Result<bool, ObjectError> {
        let head = self.head(self.url(), key, version, None).await?;
        Ok(head
            .restore()
            .is_some_and(|state| state.contains("ongoing-request=\"false\"")))
    }

    pub async fn request_restore(
        &self,
        key: &str,
        restore: Restore,
    ) -> Result<RestoreState, ObjectError> {
        let failed = |cause: String| ObjectError::new("RestoreObject", self.describe(key), cause);
        let job = GlacierJobParameters::builder()
            .tier(Tier::from(restore.tier.name()))
            .build()
            .map_err(|err| failed(err.to_string()))?;
        let request = RestoreRequest::builder()
            .days(i32::from(restore.days))
            .glacier_job_parameters(job)
            .build();
        let sent = self
            .client
            .restore_object()
            .bucket(self.url().bucket())
            .key(self.url().full_key(key))
            .restore_request(request)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(RestoreState::Requested),
            Err(err) => match err.as_service_error().and_then(|e| e.meta().code()) {
                Some("RestoreAlreadyInProgress") => Ok(RestoreState::InProgress),
                _ => Err(failed(describe_sdk_error(&err))),
            },
        }
    }
}
