//! Builds one S3 client per distinct side configuration, from the standard AWS chain.
//!
//! Credentials come from the environment, profiles, SSO or IMDS, as for the AWS CLI.
//! A custom endpoint implies path-style addressing, which every S3-compatible server
//! understands; virtual-host addressing needs DNS that local servers rarely have.

use std::sync::Arc;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};
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
}

pub async fn build_client(settings: &ClientSettings, counts: Arc<RequestCounts>) -> Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &settings.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &settings.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;

    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        .interceptor(RequestCounter::new(counts))
        .retry_config(RetryConfig::standard().with_max_attempts(5));
    if shared.region().is_none() {
        config = config.region(Region::from_static(DEFAULT_REGION));
    }
    let custom_endpoint = shared.endpoint_url().is_some();
    if settings.force_path_style || custom_endpoint {
        config = config.force_path_style(true);
    }
    Client::from_conf(config.build())
}
