//! s3mirror: mirrors very large file sets into, out of and between S3 buckets.
//!
//! The pipeline: two listings (`storage`) stream into a merge-join (`plan`), whose
//! decisions flow through a bounded channel to a pool of workers (`transfer`); `stats`
//! counts and `ui` prints. `cli` and `config` turn arguments into settings.

pub mod budget;
pub mod cli;
pub mod config;
pub mod exit;
pub mod filter;
pub mod fuzzing;
pub mod keylist;
pub mod liveness;
pub mod location;
pub mod mount;
pub mod plan;
pub mod private;
pub mod shard;
pub mod stats;
pub mod storage;
pub mod sync;
pub mod transfer;
pub mod ui;
pub mod units;
