//! Counts every HTTP request s3mirror sends, per S3 operation, retries included.
//!
//! The count is taken in an SDK interceptor just before transmission, so it is the
//! number of requests the server saw (and bills), not the number of API calls made.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Operations counted by name; anything else is counted as `Other`.
pub const OPERATIONS: [&str; 12] = [
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
    "Other",
];

#[derive(Debug, Default)]
pub struct RequestCounts {
    counts: [AtomicU64; OPERATIONS.len()],
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
    }
}
