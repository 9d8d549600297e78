//! S3 side of a mirror: listing with ListObjectsV2 (or, for a point in time, with
//! ListObjectVersions), and the object operations the transfer workers use. Each
//! operation lives in its own small module.

/// Sets the run's storage class, encryption and ACL on any request that writes an object.
/// Without `--storage-class`, a class already set (the source's, on a copy) stays.
macro_rules! with_write_options {
    ($builder:expr, $options:expr) => {{
        let options = &$options;
        let builder = $builder
            .set_server_side_encryption(options.sse.clone())
            .set_ssekms_key_id(options.sse_kms_key_id.clone())
            .set_acl(options.acl.clone());
        match &options.storage_class {
            Some(class) => builder.storage_class(class.clone()),
            None => builder,
        }
    }};
}

/// Sets a precomputed additional checksum (`Option<&Checksum>`) on any request or part
/// that carries one; the server verifies it against the bytes it received.
macro_rules! with_checksum {
    ($builder:expr, $checksum:expr) => {{
        let builder = $builder;
        match $checksum {
            None => builder,
            Some(checksum) => {
                use $crate::storage::ChecksumAlgorithm as Algorithm;
                let value = Some(checksum.value.clone());
                match checksum.algorithm {
                    Algorithm::Crc32 => builder.set_checksum_crc32(value),
                    Algorithm::Crc32c => builder.set_checksum_crc32_c(value),
                    Algorithm::Crc64nvme => builder.set_checksum_crc64_nvme(value),
                    Algorithm::Sha1 => builder.set_checksum_sha1(value),
                    Algorithm::Sha256 => builder.set_checksum_sha256(value),
                }
            }
        }
    }};
}

/// The additional checksum a response (or a part result) states, if any.
macro_rules! checksum_from {
    ($out:expr) => {{
        use $crate::storage::{Checksum, ChecksumAlgorithm as Algorithm};
        let out = $out;
        let found = [
            (Algorithm::Crc64nvme, out.checksum_crc64_nvme()),
            (Algorithm::Crc32c, out.checksum_crc32_c()),
            (Algorithm::Crc32, out.checksum_crc32()),
            (Algorithm::Sha256, out.checksum_sha256()),
            (Algorithm::Sha1, out.checksum_sha1()),
        ]
        .into_iter()
        .find_map(|(algorithm, value)| value.map(|v| Checksum::parse(algorithm, v)));
        found
    }};
}

pub mod basic;
mod checked_body;
mod client;
mod copy;
mod download;
mod error;
mod journal;
mod list;
mod metadata;
mod objects;
mod pacing;
mod parts;
pub mod requests;
mod restore;
mod tags;
mod upload_file;
mod upload_steps;
mod upload_stream;
mod uploads;
mod versions;

use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption, StorageClass};

use aws_sdk_s3::Client;

use crate::location::S3Url;
use crate::storage::{ChecksumAlgorithm, KeyRange, Listing};

pub use client::{build_client, ClientSettings, DEFAULT_REGION};
pub use copy::CopySource;
pub use download::chunks;
pub use error::{describe_body_error, describe_sdk_error};
pub use journal::{Journal, Recorded};
pub use metadata::{content_type_for, url_encoded_key, PART_SIZE_METADATA};
pub use objects::Download;
pub use pacing::Pacing;
pub use parts::{part_size_for, PartSettings, BUFFER_BUDGET_MIB, MIN_PART_SIZE};
pub use restore::{Restore, RestoreState, RestoreTier};
pub use uploads::ActiveUploads;

/// The checksum sent with every object uploaded from a file when no algorithm is
/// configured, beside the Content-MD5: the server verifies and stores it, so that every
/// later download checks a CRC, which costs a fraction of an MD5, and a multipart
/// upload's parts and assembled object are verified too (as a whole-object CRC).
const DEFAULT_CHECKSUM: ChecksumAlgorithm = ChecksumAlgorithm::Crc32c;

/// Settings applied to every object written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub storage_class: Option<StorageClass>,
    pub sse: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
    pub acl: Option<ObjectCannedAcl>,
    /// Additional checksum sent (precomputed) with every object written.
    pub checksum: Option<ChecksumAlgorithm>,
}

pub struct S3Store {
    client: Client,
    url: S3Url,
    write: WriteOptions,
    uploads: Arc<ActiveUploads>,
    list_width: usize,
    /// The endpoint URL, or `aws`: with the bucket, where a recorded upload lives.
    endpoint: String,
    /// `--as-of`: listings show the bucket as it was then (see `versions`).
    as_of: Option<SystemTime>,
}

impl S3Store {
    pub fn new(
        client: Client,
        url: S3Url,
        write: WriteOptions,
        uploads: Arc<ActiveUploads>,
    ) -> Self {
        Self {
            client,
            url,
            write,
            uploads,
            list_width: 1,
            endpoint: "aws".to_owned(),
            as_of: None,
        }
    }

    /// A store for another location reached with the same client, options and record of
    /// uploads (the backup location of a destination).
    pub fn sibling(&self, url: S3Url) -> Self {
        Self {
            client: self.client.clone(),
            url,
            write: self.write.clone(),
            uploads: Arc::clone(&self.uploads),
            list_width: self.list_width,
            endpoint: self.endpoint.clone(),
            as_of: None,
        }
    }

    /// Names the endpoint in the record of uploads (see `journal`).
    pub fn with_endpoint(mut self, endpoint_url: Option<&str>) -> Self {
        if let Some(url) = endpoint_url {
            self.endpoint = url.trim_end_matches('/').to_owned();
        }
        self
    }

    /// Aborts the multipart uploads in this bucket that runs killed before they could
    /// end them left behind, as their records show; returns how many, and the problems
    /// met (an upload that could not be aborted stays recorded for a later run).
    pub async fn abort_orphans(&self) -> Result<usize, String> {
        let Some(journal) = self.uploads.journal() else {
            return Ok(0);
        };
        let here = |u: &Recorded| u.endpoint == self.endpoint && u.bucket == self.url.bucket();
        let claimed = journal
            .claim_orphans(here)
            .map_err(|err| format!("reading {}: {err}", journal.dir().display()))?;
        let mut aborted = 0;
        for claim in claimed {
            let (here, elsewhere): (Vec<_>, Vec<_>) = claim.open.iter().cloned().partition(here);
            let mut left = elsewhere;
            for upload in here {
                if uploads::abort(&self.client, &upload).await {
                    aborted += 1;
                } else {
                    left.push(upload);
                }
            }
            claim
                .settle(&left)
                .map_err(|err| format!("updating {}: {err}", journal.dir().display()))?;
        }
        Ok(aborted)
    }

    pub fn url(&self) -> &S3Url {
        &self.url
    }

    pub fn describe(&self, key: &str) -> String {
        format!("s3://{}/{}", self.url.bucket(), self.url.full_key(key))
    }

    /// Lists the keys of `range` in key order, with up to `list_width` requests at once
    /// (see `list`); it may yield a few keys around the range, which `Listing::within`
    /// drops. With a point in time set, lists the version of each key current then (see
    /// `versions`).
    pub fn list(&self, range: &KeyRange) -> Listing {
        let (tx, listing) = Listing::channel();
        if let Some(at) = self.as_of {
            let lister = versions::VersionLister {
                client: self.client.clone(),
                url: self.url.clone(),
                at,
            };
            let key_marker = range
                .start
                .as_deref()
                .and_then(|start| list::start_after(&self.url, start));
            tokio::spawn(lister.run(key_marker, tx));
            return listing;
        }
        let lister = list::Lister {
            client: self.client.clone(),
            url: self.url.clone(),
        };
        tokio::spawn(lister.run(self.list_width, range.clone(), tx));
        listing
    }

    /// Lists the bucket as it was at `at`, when given: each key's version current then.
    pub fn with_as_of(mut self, at: Option<SystemTime>) -> Self {
        self.as_of = at;
        self
    }

    /// How many ListObjectsV2 requests a listing sends at once (1: one sequential listing).
    pub fn with_list_width(mut self, width: usize) -> Self {
        self.list_width = width.max(1);
        self
    }
}
