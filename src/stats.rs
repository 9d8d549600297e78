//! Counters the engine updates and the UI reads; nothing here prints.
//!
//! Invariant: memory is constant in the number of objects; only the first
//! `KEPT_FAILURES` failures keep their key and message, the rest are counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::storage::s3::requests::RequestCounts;

pub const KEPT_FAILURES: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub key: String,
    pub message: String,
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    source_listed: AtomicU64,
    dest_listed: AtomicU64,
    /// Source entries the filters let through, and their bytes: the work of the run as
    /// far as the listing has got.
    selected: AtomicU64,
    selected_bytes: AtomicU64,
    /// Selected entries the run is done with: found unchanged, or finished by a worker.
    settled: AtomicU64,
    settled_bytes: AtomicU64,
    /// The whole source's selected entries and bytes, once a count of it has ended
    /// (`counted` is set last, so the two numbers are read together).
    counted_objects: AtomicU64,
    counted_bytes: AtomicU64,
    counted: AtomicBool,
    /// Objects (and their bytes) handed to the workers.
    planned: AtomicU64,
    planned_bytes: AtomicU64,
    /// Planned objects the workers have finished with, whatever the outcome.
    done: AtomicU64,
    done_bytes: AtomicU64,
    copied: AtomicU64,
    copied_bytes: AtomicU64,
    skipped: AtomicU64,
    /// Planned copies a budget kept from starting.
    not_started: AtomicU64,
    deleted: AtomicU64,
    /// Destination objects moved to `--backup-dir` before an overwrite or a delete.
    backed_up: AtomicU64,
    /// Archived objects (GLACIER, DEEP_ARCHIVE) not copied for want of a restored copy,
    /// and how many of them got a restore requested.
    archived: AtomicU64,
    restores_requested: AtomicU64,
    /// Entries passed over with a warning (links that lead nowhere, or every link with
    /// --no-follow-symlinks).
    passed_over: AtomicU64,
    failed: AtomicU64,
    listing_complete: AtomicBool,
    failures: Mutex<Vec<Failure>>,
    requests: Arc<RequestCounts>,
    /// The lowest number of concurrent transfers the adaptive limit went down to.
    lowest_concurrency: AtomicU64,
    /// Whole-object copies started again after a transient failure.
    object_retries: AtomicU64,
    /// Source keys the destination lacks, and destination keys the source lacks.
    missing: AtomicU64,
    extra: AtomicU64,
}

/// A consistent-enough copy of the counters for display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub source_listed: u64,
    pub dest_listed: u64,
    pub selected: u64,
    pub selected_bytes: u64,
    pub settled: u64,
    pub settled_bytes: u64,
    /// The source's selected objects and bytes, when a count of it has ended.
    pub counted: Option<(u64, u64)>,
    pub planned: u64,
    pub planned_bytes: u64,
    pub done: u64,
    pub done_bytes: u64,
    pub copied: u64,
    pub copied_bytes: u64,
    pub skipped: u64,
    pub not_started: u64,
    pub deleted: u64,
    pub backed_up: u64,
    pub archived: u64,
    pub restores_requested: u64,
    pub passed_over: u64,
    pub failed: u64,
    pub listing_complete: bool,
    pub requests: Vec<(&'static str, u64)>,
    /// Retried requests, and the throttling (503/429) and other 5xx answers behind them.
    pub retries: u64,
    pub throttled: u64,
    pub server_errors: u64,
    /// The lowest concurrency the adaptive limit reached, if it ever came down.
    pub lowest_concurrency: Option<u64>,
    /// Objects copied again from the start (cut-short body, checksum mismatch...).
    pub object_retries: u64,
    pub missing: u64,
    pub extra: u64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Stats {
    pub fn new(requests: Arc<RequestCounts>) -> Self {
        Self {
            started: Instant::now(),
            source_listed: AtomicU64::new(0),
            dest_listed: AtomicU64::new(0),
            selected: AtomicU64::new(0),
            selected_bytes: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            settled_bytes: AtomicU64::new(0),
            counted_objects: AtomicU64::new(0),
            counted_bytes: AtomicU64::new(0),
            counted: AtomicBool::new(false),
            planned: AtomicU64::new(0),
            planned_bytes: AtomicU64::new(0),
            done: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            copied: AtomicU64::new(0),
            copied_bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            not_started: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            backed_up: AtomicU64::new(0),
            archived: AtomicU64::new(0),
            restores_requested: AtomicU64::new(0),
            passed_over: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            listing_complete: AtomicBool::new(false),
            failures: Mutex::new(Vec::new()),
            requests,
            lowest_concurrency: AtomicU64::new(u64::MAX),
            object_retries: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            extra: AtomicU64::new(0),
        }
    }

    pub fn requests(&self) -> &RequestCounts {
        &self.requests
    }

    pub fn concurrency_lowered_to(&self, lowest: u64) {
        self.lowest_concurrency.fetch_min(lowest, Ordering::Relaxed);
    }

    pub fn missing(&self) {
        bump(&self.missing, 1);
    }

    pub fn extra(&self) {
        bump(&self.extra, 1);
    }

    pub fn object_retried(&self) {
        bump(&self.object_retries, 1);
    }

    pub fn source_listed(&self) {
        bump(&self.source_listed, 1);
    }

    pub fn dest_listed(&self) {
        bump(&self.dest_listed, 1);
    }

    /// A source entry the filters let through.
    pub fn selected(&self, bytes: u64) {
        bump(&self.selected, 1);
        bump(&self.selected_bytes, bytes);
    }

    /// The result of counting the whole source (see `plan::census`).
    pub fn source_counted(&self, objects: u64, bytes: u64) {
        self.counted_objects.store(objects, Ordering::Relaxed);
        self.counted_bytes.store(bytes, Ordering::Relaxed);
        self.counted.store(true, Ordering::Release);
    }

    pub fn planned(&self, bytes: u64) {
        bump(&self.planned, 1);
        bump(&self.planned_bytes, bytes);
    }

    pub fn listing_complete(&self) {
        self.listing_complete.store(true, Ordering::Relaxed);
    }

    /// An object the planner found unchanged.
    pub fn skipped(&self, bytes: u64) {
        self.settle(bytes);
        bump(&self.skipped, 1);
    }

    /// A planned object a worker found unchanged after all.
    pub fn skipped_planned(&self, bytes: u64) {
        self.finish_planned(bytes);
        bump(&self.skipped, 1);
    }

    /// A planned copy a budget kept from starting.
    pub fn not_started(&self, bytes: u64) {
        self.finish_planned(bytes);
        bump(&self.not_started, 1);
    }

    pub fn deleted(&self) {
        bump(&self.deleted, 1);
    }

    pub fn backed_up(&self) {
        bump(&self.backed_up, 1);
    }

    /// A planned object found archived and not restored: not copied, not a failure.
    pub fn archived_planned(&self, bytes: u64, restore_requested: bool) {
        self.finish_planned(bytes);
        bump(&self.archived, 1);
        if restore_requested {
            bump(&self.restores_requested, 1);
        }
    }

    /// An entry passed over with a warning, neither copied nor a failure.
    pub fn passed_over(&self) {
        bump(&self.passed_over, 1);
    }

    pub fn copied(&self, bytes: u64) {
        self.finish_planned(bytes);
        bump(&self.copied, 1);
        bump(&self.copied_bytes, bytes);
    }

    pub fn failed_planned(&self, bytes: u64, failure: Failure) {
        self.finish_planned(bytes);
        self.failed(failure);
    }

    /// A failure outside a planned transfer, such as an unreadable file in a listing.
    pub fn failed(&self, failure: Failure) {
        bump(&self.failed, 1);
        let mut kept = self.failures.lock().expect("failures lock");
        if kept.len() < KEPT_FAILURES {
            kept.push(failure);
        }
    }

    fn finish_planned(&self, bytes: u64) {
        bump(&self.done, 1);
        bump(&self.done_bytes, bytes);
        self.settle(bytes);
    }

    fn settle(&self, bytes: u64) {
        bump(&self.settled, 1);
        bump(&self.settled_bytes, bytes);
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().expect("failures lock").clone()
    }

    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            elapsed: self.started.elapsed(),
            source_listed: get(&self.source_listed),
            dest_listed: get(&self.dest_listed),
            selected: get(&self.selected),
            selected_bytes: get(&self.selected_bytes),
            settled: get(&self.settled),
            settled_bytes: get(&self.settled_bytes),
            counted: self
                .counted
                .load(Ordering::Acquire)
                .then(|| (get(&self.counted_objects), get(&self.counted_bytes))),
            planned: get(&self.planned),
            planned_bytes: get(&self.planned_bytes),
            done: get(&self.done),
            done_bytes: get(&self.done_bytes),
            copied: get(&self.copied),
            copied_bytes: get(&self.copied_bytes),
            skipped: get(&self.skipped),
            not_started: get(&self.not_started),
            deleted: get(&self.deleted),
            backed_up: get(&self.backed_up),
            archived: get(&self.archived),
            restores_requested: get(&self.restores_requested),
            passed_over: get(&self.passed_over),
            failed: get(&self.failed),
            listing_complete: self.listing_complete.load(Ordering::Relaxed),
            requests: self.requests.snapshot(),
            retries: self.requests.retries(),
            throttled: self.requests.throttled(),
            server_errors: self.requests.server_errors(),
            lowest_concurrency: Some(get(&self.lowest_concurrency)).filter(|&n| n != u64::MAX),
            object_retries: get(&self.object_retries),
            missing: get(&self.missing),
            extra: get(&self.extra),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_number_of_failures_but_counts_all() {
        let stats = Stats::new(Arc::default());
        for i in 0..KEPT_FAILURES + 5 {
            stats.failed(Failure {
                key: i.to_string(),
                message: "boom".into(),
            });
        }
        assert_eq!(stats.snapshot().failed, (KEPT_FAILURES + 5) as u64);
        assert_eq!(stats.failures().len(), KEPT_FAILURES);
    }

    #[test]
    fn planned_work_is_done_whatever_its_outcome() {
        let stats = Stats::new(Arc::default());
        for _ in 0..3 {
            stats.planned(10);
        }
        stats.copied(10);
        stats.skipped_planned(10);
        stats.failed_planned(
            10,
            Failure {
                key: "k".into(),
                message: "m".into(),
            },
        );
        let snap = stats.snapshot();
        assert_eq!((snap.planned, snap.done, snap.done_bytes), (3, 3, 30));
        assert_eq!(
            (snap.copied, snap.copied_bytes, snap.skipped, snap.failed),
            (1, 10, 1, 1)
        );
    }

    #[test]
    fn settled_counts_unchanged_and_finished_objects_once() {
        let stats = Stats::new(Arc::default());
        for size in [5, 7, 11] {
            stats.selected(size);
        }
        stats.skipped(5);
        stats.planned(7);
        stats.planned(11);
        stats.skipped_planned(7);
        assert_eq!(stats.snapshot().settled_bytes, 12, "the last is in flight");
        stats.copied(11);
        let snap = stats.snapshot();
        assert_eq!((snap.selected, snap.selected_bytes), (3, 23));
        assert_eq!((snap.settled, snap.settled_bytes), (3, 23));
        assert_eq!(snap.skipped, 2);
        assert_eq!(snap.counted, None);
        stats.source_counted(3, 23);
        assert_eq!(stats.snapshot().counted, Some((3, 23)));
    }
}
