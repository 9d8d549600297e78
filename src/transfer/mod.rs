//! The transfer workers: a fixed pool of tasks taking jobs from one bounded channel.
//!
//! Each job ends in exactly one of copied, unchanged or failed, recorded in the stats;
//! a failure is reported and the pool goes on.

mod adaptive;
mod backup;
mod copy;
mod delete;

pub use adaptive::AdaptiveConcurrency;
use adaptive::Answers;
pub use backup::Backup;

use std::borrow::Cow;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::budget::Budget;
use crate::config::TransferSettings;
use crate::keylist::Manifest;
use crate::plan::{CopyReason, Decision, Event, Job, Reporter};
use crate::stats::{Failure, Stats};
use crate::storage::checksum::HashKind;
use crate::storage::local::{DigestRequest, Landing};
use crate::storage::s3::requests::RequestCounts;
use crate::storage::s3::{part_size_for, PartSettings, RestoreState};
use crate::storage::{
    local, Checksum, ChecksumAlgorithm, ETag, Entry, LocalStore, ObjectError, StorageClass, Store,
};

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
    /// Slots for transfers in flight, fewer while the server throttles.
    pub concurrency: Arc<AdaptiveConcurrency>,
    pub stats: Arc<Stats>,
    pub reporter: Arc<dyn Reporter>,
    /// `--manifest-out`: what would be copied is written here (the run is a dry run).
    pub manifest: Option<Manifest>,
    /// `--backup-dir`: where objects go before they are overwritten or deleted.
    pub backup: Option<Backup>,
    /// `--max-duration`, `--max-transfer`: no copy starts once one is reached.
    pub budget: Arc<Budget>,
    /// Who reads the source in a server-side copy when that is not the source's own
    /// credentials (`--server-side-copy always`), to explain a refusal.
    pub source_reader: Option<String>,
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

    /// Runs a job in a transfer slot, given back once the bytes are written and checked:
    /// a file that must still be made durable and renamed waits for that outside it.
    async fn run_job(&self, job: Job) {
        let slot = self.concurrency.acquire().await;
        let copied = self.run_job_in_slot(&job).await;
        self.concurrency
            .completed(slot, answers(self.stats.requests()));
        if let Some(lowest) = self.concurrency.lowered() {
            self.stats.concurrency_lowered_to(lowest as u64);
        }
        if let Some(copied) = copied {
            self.land(&job, copied).await;
        }
    }

    /// Decides and copies; a copy whose outcome is still to come is returned.
    async fn run_job_in_slot(&self, job: &Job) -> Option<Copied> {
        let size = job.source.size;
        let decision = match job.decision {
            Decision::CompareContent => self.compare_content(job).await,
            Decision::CompareChecksum => self.compare_checksum(job).await,
            decision => Ok(decision),
        };
        let reason = match decision {
            Ok(Decision::Copy(reason)) => reason,
            Ok(_) => {
                self.stats.skipped_planned(size);
                return None;
            }
            Err(err) => {
                self.fail(job, err);
                return None;
            }
        };
        if self.dry_run
            && job
                .source
                .storage_class
                .is_some_and(StorageClass::is_archived)
        {
            // A real run would learn it from the refused read; this one asks.
            if let Store::S3(source) = &self.source {
                let version = job.source.version.as_deref();
                match source.is_restored(&job.source.key, version).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.pass_over_archived(job).await;
                        return None;
                    }
                    Err(err) => {
                        self.fail(job, err);
                        return None;
                    }
                }
            }
        }
        if !self.budget.admit(size) {
            self.stats.not_started(size);
            return None;
        }
        let started = std::time::Instant::now();
        if let Some(existing) = job.dest.as_ref().filter(|_| reason != CopyReason::Missing) {
            if let Err(err) = self.back_up(&existing.key, existing.size).await {
                self.fail(job, err);
                return None;
            }
        }
        let landing = match self.dry_run {
            true => Landing::done(),
            false => match self.copy_with_retries(&job.source).await {
                Ok(landing) => landing,
                Err(err) if err.archived => {
                    self.pass_over_archived(job).await;
                    return None;
                }
                Err(err) => {
                    self.fail(job, err);
                    return None;
                }
            },
        };
        Some(Copied {
            landing,
            reason,
            started,
        })
    }

    /// Waits for a copy's file to land, then counts and reports the copy.
    async fn land(&self, job: &Job, copied: Copied) {
        let Copied {
            landing,
            reason,
            started,
        } = copied;
        if let Err(err) = landing.landed().await {
            return self.fail(job, err);
        }
        let size = job.source.size;
        if let (Some(manifest), Store::S3(source)) = (&self.manifest, &self.source) {
            let url = source.url();
            let version = job.source.version.as_deref();
            manifest.push(url.bucket(), &url.full_key(&job.source.key), version, size);
        }
        if reason == CopyReason::Missing {
            self.stats.missing();
        }
        self.stats.copied(size);
        self.reporter.report(Event::Copied {
            key: &job.source.key,
            target: &self.dest.describe(&job.source.key),
            bytes: size,
            reason,
            dry_run: self.dry_run,
            duration: started.elapsed(),
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
        let matches = match remote_tag.parts() {
            Some(parts) => {
                let candidates = candidate_part_sizes(job.source.size, parts, self.parts.part_size);
                parts_match(store, key, HashKind::Md5, candidates, |parts| {
                    ETag::multipart(parts) == *remote_tag
                })
                .await?
            }
            None => {
                let request = DigestRequest::whole(HashKind::Md5);
                let whole = store.digests(key, request).await?.whole;
                ETag::from_md5(&local::as_md5(&whole)) == *remote_tag
            }
        };
        Ok(same_content(matches))
    }

    /// Compares stored additional checksums (HeadObject), computing a local side's. A
    /// source without a checksum cannot be judged and fails; a destination without one,
    /// or with one of another kind, is copied again so that it gets the source's.
    async fn compare_checksum(&self, job: &Job) -> Result<Decision, ObjectError> {
        let key = &job.source.key;
        let size = job.source.size;
        match (&self.source, &self.dest) {
            (Store::S3(source), Store::S3(dest)) => {
                let version = job.source.version.as_deref();
                let (stored, existing) = futures::try_join!(
                    source.stored_checksum(key, version),
                    dest.stored_checksum(key, None)
                )?;
                let stored = stored
                    .checksum
                    .ok_or_else(|| source.no_stored_checksum(key))?;
                Ok(match existing.checksum {
                    None => Decision::Copy(CopyReason::NoChecksum),
                    Some(existing) if !existing.comparable_with(&stored) => {
                        Decision::Copy(CopyReason::ChecksumKindDiffers)
                    }
                    Some(existing) => same_content(existing == stored),
                })
            }
            (Store::Local(local), Store::S3(dest)) => {
                let existing = dest.stored_checksum(key, None).await?;
                let Some(checksum) = &existing.checksum else {
                    return Ok(Decision::Copy(CopyReason::NoChecksum));
                };
                let matches = self
                    .file_matches(local, key, size, checksum, existing.part_size)
                    .await?;
                Ok(same_content(matches))
            }
            (Store::S3(source), Store::Local(local)) => {
                let stored = source
                    .stored_checksum(key, job.source.version.as_deref())
                    .await?;
                let checksum = stored
                    .checksum
                    .as_ref()
                    .ok_or_else(|| source.no_stored_checksum(key))?;
                let matches = self
                    .file_matches(local, key, size, checksum, stored.part_size)
                    .await?;
                Ok(same_content(matches))
            }
            (Store::Local(source), Store::Local(dest)) => {
                let (a, b) = futures::try_join!(
                    whole_file_checksum(source, key),
                    whole_file_checksum(dest, key)
                )?;
                Ok(same_content(a == b))
            }
        }
    }

    /// Whether a local file has `checksum`: the whole file's, or for a composite one,
    /// the composite for a part size giving its part count (the recorded one first).
    async fn file_matches(
        &self,
        store: &LocalStore,
        key: &str,
        size: u64,
        checksum: &Checksum,
        recorded_part_size: Option<u64>,
    ) -> Result<bool, ObjectError> {
        let kind = HashKind::Checksum(checksum.algorithm);
        let Some(parts) = checksum.parts else {
            let whole = store.digests(key, DigestRequest::whole(kind)).await?.whole;
            return Ok(Checksum::full(checksum.algorithm, &whole) == *checksum);
        };
        let mut sizes: Vec<u64> = recorded_part_size
            .filter(|&p| p > 0 && size.div_ceil(p).max(1) == u64::from(parts))
            .into_iter()
            .collect();
        for candidate in candidate_part_sizes(size, parts, self.parts.part_size) {
            if !sizes.contains(&candidate) {
                sizes.push(candidate);
            }
        }
        parts_match(store, key, kind, sizes, |digests| {
            Checksum::composite(checksum.algorithm, digests) == *checksum
        })
        .await
    }

    /// Copies an object, starting again after a transient failure (bytes cut short or
    /// damaged, a file changing while read) up to the retry limit, with backoff. A local
    /// file is looked at again first, so a file that has settled is copied as it now is.
    async fn copy_with_retries(&self, listed: &Entry) -> Result<Landing, ObjectError> {
        let attempts = self.sizes.object_retries + 1;
        let mut entry = Cow::Borrowed(listed);
        for attempt in 1.. {
            let err = match self.copy(&entry).await {
                Ok(landing) => return Ok(landing),
                Err(err) if err.transient && attempt < attempts => err,
                Err(err) => return Err(err),
            };
            self.stats.object_retried();
            self.reporter.report(Event::Retrying {
                key: &listed.key,
                message: &err.to_string(),
                attempt: attempt + 1,
                attempts,
            });
            tokio::time::sleep(retry_delay(attempt)).await;
            if let Store::Local(local) = &self.source {
                entry = Cow::Owned(local.stat(&listed.key).await?);
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// An archived source object without a restored copy: counted and reported, not
    /// failed, and with `--include-archived` given a restore request.
    async fn pass_over_archived(&self, job: &Job) {
        let key = &job.source.key;
        let restore = match (&self.source, self.sizes.restore) {
            // A run that changes nothing asks for nothing.
            (Store::S3(source), Some(restore)) if !self.dry_run => {
                match source.request_restore(key, restore).await {
                    Ok(state) => Some(state),
                    Err(err) => return self.fail(job, err),
                }
            }
            _ => None,
        };
        let requested = restore == Some(RestoreState::Requested);
        self.stats.archived_planned(job.source.size, requested);
        self.reporter.report(Event::Archived {
            key,
            storage_class: job
                .source
                .storage_class
                .map_or("an archive tier", StorageClass::name),
            restore: restore.map(RestoreState::describe),
        });
    }

    fn fail(&self, job: &Job, err: ObjectError) {
        let message = err.to_string();
        self.reporter.report(Event::Failed {
            key: Some(&job.source.key),
            message: &message,
        });
        self.stats.failed_planned(
            job.source.size,
            Failure {
                key: job.source.key.clone(),
                message,
            },
        );
    }
}

/// A copy made, still to be counted once its file lands.
struct Copied {
    landing: Landing,
    reason: CopyReason,
    started: std::time::Instant,
}

/// The run's answers so far, for the adaptive concurrency (throttled read first, so it
/// never counts an answer the total lacks).
fn answers(requests: &RequestCounts) -> Answers {
    let throttled = requests.throttled();
    Answers {
        total: requests.answered(),
        throttled,
    }
}

/// Exponential backoff with full jitter: a random wait up to 100 ms × 2^(attempt-1),
/// at most 10 s.
fn retry_delay(attempt: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, RandomState};
    let ceiling_ms = (100u64 << attempt.saturating_sub(1).min(16)).min(10_000);
    let random = RandomState::new().hash_one(std::time::Instant::now());
    std::time::Duration::from_millis(random % (ceiling_ms + 1))
}

fn same_content(matches: bool) -> Decision {
    if matches {
        Decision::Skip
    } else {
        Decision::Copy(CopyReason::ContentDiffers)
    }
}

/// Whether the digests of a local file's parts, for one of `part_sizes` (most likely
/// first), make what `matches` accepts. Each part size costs a pass of the hash over every
/// byte, so the most likely one is tried alone, and the others, in one more read of the
/// file, only when it fails: an unchanged file is hashed once.
async fn parts_match(
    store: &LocalStore,
    key: &str,
    kind: HashKind,
    mut part_sizes: Vec<u64>,
    matches: impl Fn(&[Vec<u8>]) -> bool,
) -> Result<bool, ObjectError> {
    let others = part_sizes.split_off(part_sizes.len().min(1));
    for sizes in [part_sizes, others] {
        if sizes.is_empty() {
            continue;
        }
        let digests = store
            .digests(key, DigestRequest::parts(kind, sizes))
            .await?;
        if digests.parts.iter().any(|parts| matches(parts)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A local file's CRC32C, for comparing two local files under `--compare checksum`.
async fn whole_file_checksum(store: &LocalStore, key: &str) -> Result<Vec<u8>, ObjectError> {
    let request = DigestRequest::whole(HashKind::Checksum(ChecksumAlgorithm::Crc32c));
    Ok(store.digests(key, request).await?.whole)
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
    use crate::storage::checksum::digest;

    #[test]
    fn candidates_all_give_the_part_count() {
        let size = 100 * (1 << 20) + 7;
        let got = candidate_part_sizes(size, 7, 16 << 20);
        assert!(got.contains(&(16 << 20)), "{got:?}");
        assert!(got.iter().all(|&p| size.div_ceil(p) == 7), "{got:?}");
        assert_eq!(candidate_part_sizes(10 << 20, 2, 16 << 20)[0], 5 << 20);
        assert!(candidate_part_sizes(1, 3, 16 << 20).is_empty());
    }

    #[tokio::test]
    async fn parts_match_any_part_size_tried_first_or_after() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        std::fs::write(dir.path().join("f"), &data).unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let etag = |part: usize| {
            let parts: Vec<_> = data
                .chunks(part)
                .map(|c| digest(HashKind::Md5, c))
                .collect();
            ETag::multipart(&parts)
        };
        let (by_30, by_40) = (etag(30), etag(40));
        let found = |sizes: Vec<u64>, wanted: ETag| {
            let store = &store;
            async move {
                parts_match(store, "f", HashKind::Md5, sizes, |parts| {
                    ETag::multipart(parts) == wanted
                })
                .await
                .unwrap()
            }
        };
        assert!(found(vec![30, 40], by_30.clone()).await);
        assert!(found(vec![40, 25, 30], by_30.clone()).await);
        assert!(!found(vec![40, 25], by_30).await);
        assert!(found(vec![40], by_40.clone()).await);
        assert!(!found(vec![], by_40).await);
    }
}
