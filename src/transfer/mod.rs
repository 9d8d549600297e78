//! The transfer workers: a fixed pool of tasks taking jobs from one bounded channel.
//!
//! Each job ends in exactly one of copied, unchanged or failed, recorded in the stats;
//! a failure is reported and the pool goes on.

mod copy;

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::plan::{CopyReason, Decision, Job};
use crate::stats::{Failure, Stats};
use crate::storage::{local, ObjectError, Store};
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

    /// Hashes the local side and compares it with the S3 side's single-part ETag.
    async fn compare_content(&self, job: &Job) -> Result<Decision, ObjectError> {
        let key = &job.source.key;
        let (store, remote) = match (&self.source, &self.dest) {
            (Store::Local(local), _) => (local, job.dest.as_ref()),
            (_, Store::Local(local)) => (local, Some(&job.source)),
            _ => return Ok(Decision::Copy(CopyReason::ContentDiffers)),
        };
        let remote_tag = remote.and_then(|entry| entry.etag.as_ref());
        let path = store
            .path_for(key)
            .map_err(|why| ObjectError::new("hash", store.describe(key), why))?;
        let digest = local::md5_file(path)
            .await
            .map_err(|err| ObjectError::new("hash", store.describe(key), err))?;
        let local_tag = crate::storage::ETag::from_md5(&digest);
        Ok(if remote_tag == Some(&local_tag) {
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
