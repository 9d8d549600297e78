//! Counts every HTTP request s3mirror sends, per S3 operation, retries included.
//!
//! The count is taken in an SDK interceptor just before transmission, so it is the
//! number of requests the server saw (and bills), not the number of API calls made. The
//! same interceptor counts retries and the answers that asked for them (throttling, 5xx).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;

/// Operations counted by name; anything else is counted as `Other`.
pub const OPERATIONS: [&str; 13] = [
    "ListObjectsV2",
    "HeadObject",
    "GetObject",
    "PutObject",
    "CopyObject",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObjects",
    "RestoreObject",
    "Other",
];

#[derive(Debug, Default)]
pub struct RequestCounts {
    counts: [AtomicU64; OPERATIONS.len()],
    /// Requests that were retries of an earlier attempt.
    retries: AtomicU64,
    /// Answers received, whatever their status: what the throttled share is a share of.
    answered: AtomicU64,
    /// Answers asking to slow down: 503 (SlowDown) and 429.
    throttled: AtomicU64,
    /// Other 5xx answers.
    server_errors: AtomicU64,
}

impl RequestCounts {
    pub fn record(&self, operation: &str) {
        let index = OPERATIONS[..OPERATIONS.len() - 1]
            .iter()
            .position(|name| *name == operation)
            .unwrap_or(OPERATIONS.len() - 1);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, operation: &str) -> u64 {
        OPERATIONS
            .iter()
            .position(|name| *name == operation)
            .map_or(0, |i| self.counts[i].load(Ordering::Relaxed))
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    fn record_status(&self, status: u16) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let counter = match status {
            429 | 503 => &self.throttled,
            500..=599 => &self.server_errors,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Non-zero counts in a fixed order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        OPERATIONS
            .iter()
            .zip(&self.counts)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

#[derive(Debug)]
pub struct RequestCounter {
    counts: Arc<RequestCounts>,
}

impl RequestCounter {
    pub fn new(counts: Arc<RequestCounts>) -> Self {
        Self { counts }
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("Other", |m| m.name());
        self.counts.record(operation);
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.counts
            .record_status(context.response().status().as_u16());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_operations_count_as_other() {
        let counts = RequestCounts::default();
        counts.record("PutObject");
        counts.record("PutObject");
        counts.record("GetBucketTagging");
        assert_eq!(counts.get("PutObject"), 2);
        assert_eq!(counts.get("Other"), 1);
        assert_eq!(counts.snapshot(), vec![("PutObject", 2), ("Other", 1)]);
        for status in [200, 503, 429, 500, 404] {
            counts.record_status(status);
        }
        assert_eq!((counts.throttled(), counts.server_errors()), (2, 1));
        assert_eq!(counts.answered(), 5);
    }
}
