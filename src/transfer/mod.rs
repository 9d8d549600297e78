//! The transfer workers: a fixed pool of tasks taking jobs from one bounded channel.
//!
//! Each job ends in exactly one of copied, unchanged or failed, recorded in the stats;
//! a failure is reported and the pool goes on.

mod copy;
mod delete;

pub use delete::DeleteSettings;

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::config::TransferSettings;
use crate::plan::{CopyReason, Decision, Job};
use crate::stats::{Failure, Stats};
use crate::storage::s3::{part_size_for, PartSettings};
use crate::storage::{local, ETag, ObjectError, Store};
use crate::ui::{Event, Reporter};

/// How bytes get from a bucket to a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The destination's client can read the source: CopyObject, no bytes through here.
    ServerSide,
    /// Different endpoints or credentials: GetObject here, PutObject there.
    ThroughClient,
}

pub struct Transfer {
    pub source: Store,
    pub dest: Store,
    pub route: Route,
    pub sizes: TransferSettings,
    pub parts: PartSettings,
    pub dry_run: bool,
    pub stats: Arc<Stats>,
    pub reporter: Arc<dyn Reporter>,
}

impl Transfer {
    /// Starts `threads` workers that run jobs until the channel closes.
    pub fn spawn_workers(
        self: &Arc<Self>,
        jobs: async_channel::Receiver<Job>,
        threads: usize,
    ) -> JoinSet<()> {
        let mut workers = JoinSet::new();
        for _ in 0..threads {
            let transfer = Arc::clone(self);
            let jobs = jobs.clone();
            workers.spawn(async move {
                while let Ok(job) = jobs.recv().await {
                    transfer.run_job(job).await;
                }
            });
        }
        workers
    }

    async fn run_job(&self, job: Job) {
        let size = job.source.size;
        let decision = match job.decision {
            Decision::CompareContent => match self.compare_content(&job).await {
                Ok(decision) => decision,
                Err(err) => return self.fail(&job, err),
            },
            decision => decision,
        };
        let reason = match decision {
            Decision::Copy(reason) => reason,
            Decision::Skip | Decision::CompareContent => return self.stats.skipped_planned(size),
        };
        if !self.dry_run {
            if let Err(err) = self.copy(&job.source).await {
                return self.fail(&job, err);
            }
        }
        self.stats.copied(size);
        self.reporter.report(Event::Copied {
            target: &self.dest.describe(&job.source.key),
            bytes: size,
            reason,
            dry_run: self.dry_run,
        });
    }

    /// Hashes the local side and compares it with the S3 side's ETag. A multipart ETag
    /// is matched by recomputing it for each part size that gives its part count.
    async fn compare_content(&self, job: &Job) -> Result<Decision, ObjectError> {
        let key = &job.source.key;
        let (store, remote) = match (&self.source, &self.dest) {
            (Store::Local(local), _) => (local, job.dest.as_ref()),
            (_, Store::Local(local)) => (local, Some(&job.source)),
            _ => return Ok(Decision::Copy(CopyReason::ContentDiffers)),
        };
        let Some(remote_tag) = remote.and_then(|entry| entry.etag.as_ref()) else {
            return Ok(Decision::Copy(CopyReason::ContentDiffers));
        };
        let candidates = match remote_tag.parts() {
            Some(parts) => candidate_part_sizes(job.source.size, parts, self.parts.part_size),
            None => Vec::new(),
        };
        let path = store
            .path_for(key)
            .map_err(|why| ObjectError::new("hash", store.describe(key), why))?;
        let digests = local::file_digests(path, candidates)
            .await
            .map_err(|err| ObjectError::new("hash", store.describe(key), err))?;
        let matches = match remote_tag.parts() {
            Some(_) => digests
                .parts
                .iter()
                .any(|parts| ETag::multipart(parts) == *remote_tag),
            None => ETag::from_md5(&digests.whole) == *remote_tag,
        };
        Ok(if matches {
            Decision::Skip
        } else {
            Decision::Copy(CopyReason::ContentDiffers)
        })
    }

    fn fail(&self, job: &Job, err: ObjectError) {
        let message = err.to_string();
        self.reporter.report(Event::Failed { message: &message });
        self.stats.failed_planned(
            job.source.size,
            Failure {
                key: job.source.key.clone(),
                message,
            },
        );
    }
}

/// Part sizes that split `size` bytes into exactly `parts` parts, most likely first:
/// the size s3mirror would use, the defaults of common tools (5, 8, 16 MiB...), and the
/// smallest whole-MiB size that fits.
pub fn candidate_part_sizes(size: u64, parts: u32, configured: u64) -> Vec<u64> {
    const MIB: u64 = 1 << 20;
    let parts = u64::from(parts.max(1));
    let smallest = size.div_ceil(parts);
    let mut candidates = vec![
        part_size_for(size, configured),
        smallest.div_ceil(MIB) * MIB,
        smallest,
    ];
    candidates.extend([5, 8, 10, 15, 16, 32, 64, 100, 128, 256, 512, 1024].map(|m| m * MIB));
    let mut chosen: Vec<u64> = Vec::new();
    for candidate in candidates {
        if candidate > 0 && size.div_ceil(candidate).max(1) == parts && !chosen.contains(&candidate)
        {
            chosen.push(candidate);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_all_give_the_part_count() {
        let size = 100 * (1 << 20) + 7;
        let got = candidate_part_sizes(size, 7, 16 << 20);
        assert!(got.contains(&(16 << 20)), "{got:?}");
        assert!(got.iter().all(|&p| size.div_ceil(p) == 7), "{got:?}");
        assert_eq!(candidate_part_sizes(10 << 20, 2, 16 << 20)[0], 5 << 20);
        assert!(candidate_part_sizes(1, 3, 16 << 20).is_empty());
    }
}
