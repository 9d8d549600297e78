//! Builds one S3 client per distinct side configuration, from the standard AWS chain.
//!
//! Credentials come from the environment, profiles, SSO or IMDS, as for the AWS CLI.
//! A custom endpoint implies path-style addressing, which every S3-compatible server
//! understands; virtual-host addressing needs DNS that local servers rarely have.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority,
};
use aws_smithy_runtime_api::client::retries::ErrorKind;

use super::pacing::Pacing;
use super::requests::{RequestCounter, RequestCounts};

/// The region used when neither the options, the environment nor a profile name one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Connection settings of one side; two sides with equal settings share a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub force_path_style: bool,
    pub max_retries: u32,
}

pub async fn build_client(
    settings: &ClientSettings,
    counts: Arc<RequestCounts>,
    pacing: &Pacing,
) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    loader = loader.region(resolve_region(settings).await);
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;

    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .interceptor(RequestCounter::new(counts))
        // Standard retries: exponential backoff with full jitter, for throttling, 5xx,
        // timeouts and transport errors; never for AccessDenied, NoSuchBucket and the like.
        .retry_config(RetryConfig::standard().with_max_attempts(settings.max_retries + 1))
        .retry_classifier(RetryAfter)
        // The SDK's default streams a trailing CRC32 (aws-chunked encoding), which several
        // S3-compatible servers reject; plain signed requests work everywhere.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    if !pacing.is_unlimited() {
        config = config.http_client(pacing.client(shared.http_client()));
    }
    let custom_endpoint = shared.endpoint_url().is_some();
    if settings.force_path_style || custom_endpoint {
        config = config.force_path_style(true);
    }
    Client::from_conf(config.build())
}

/// Waits as long as a throttling or failing server asks, in `Retry-After` (seconds or an
/// HTTP date) or `x-amz-retry-after` (milliseconds), instead of the computed backoff; the
/// retry strategy caps the wait at its maximum backoff (20 s).
#[derive(Debug)]
struct RetryAfter;

impl ClassifyRetry for RetryAfter {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(response) = ctx.response() else {
            return RetryAction::NoActionIndicated;
        };
        let status = response.status().as_u16();
        let kind = match status {
            429 | 503 => ErrorKind::ThrottlingError,
            500..=599 => ErrorKind::ServerError,
            _ => return RetryAction::NoActionIndicated,
        };
        let headers = response.headers();
        let delay = headers
            .get("x-amz-retry-after")
            .and_then(|ms| ms.trim().parse().ok())
            .map(Duration::from_millis)
            .or_else(|| retry_after(headers.get("retry-after")?, SystemTime::now()));
        match delay {
            Some(delay) => RetryAction::retryable_error_with_explicit_delay(kind, delay),
            None => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "Retry-After"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

/// A `Retry-After` value: delta-seconds, or an HTTP date (a date past is no wait).
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        SystemTime::try_from(DateTime::from_str(value, DateTimeFormat::HttpDate).ok()?).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The option, then AWS_REGION/AWS_DEFAULT_REGION, then the profile, then us-east-1,
/// as the AWS CLI resolves it. Instance metadata is not asked: off EC2 it only adds
/// seconds of timeouts and a warning to every run.
async fn resolve_region(settings: &ClientSettings) -> Region {
    if let Some(region) = &settings.region {
        return Region::new(region.clone());
    }
    let mut profile = ProfileFileRegionProvider::builder();
    if let Some(name) = &settings.profile {
        profile = profile.profile_name(name);
    }
    RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(profile.build())
        .or_else(Region::from_static(DEFAULT_REGION))
        .region()
        .await
        .unwrap_or_else(|| Region::from_static(DEFAULT_REGION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:42 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
