//! Builds one S3 client per distinct side configuration, from the standard AWS chain.
//!
//! Credentials come from the environment, profiles, SSO or IMDS, as for the AWS CLI.
//! A custom endpoint implies path-style addressing, which every S3-compatible server
//! understands; virtual-host addressing needs DNS that local servers rarely have.

use std::sync::Arc;

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::Client;

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

pub async fn build_client(settings: &ClientSettings, counts: Arc<RequestCounts>) -> Client {
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
        // The SDK's default streams a trailing CRC32 (aws-chunked encoding), which several
        // S3-compatible servers reject; plain signed requests work everywhere.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
    let custom_endpoint = shared.endpoint_url().is_some();
    if settings.force_path_style || custom_endpoint {
        config = config.force_path_style(true);
    }
    Client::from_conf(config.build())
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
