//! The planner: walks the merge-join of both listings, decides per key, counts what
//! needs no work and hands the rest to the transfer workers.
//!
//! Invariant: the jobs channel and the backlog are bounded, so the listings are read
//! only as fast as the workers take jobs, and memory holds O(threads + backlog) jobs
//! whatever the object count.

mod backlog;
mod census;
mod decide;
mod delete_queue;
mod events;
mod merge;

use std::time::SystemTime;

pub use backlog::{hand_out, DEFAULT_CAPACITY as DEFAULT_BACKLOG};
pub use census::count_source;
pub use decide::{decide, CompareMode, CopyReason, Decision, Pairing};
pub use delete_queue::DeleteQueue;
pub use events::{Event, Reporter};
pub use merge::{JoinItem, MergeJoin, Pair, Side};

use crate::budget::Budget;
use crate::filter::Filters;

use crate::stats::{Failure, Stats};
use crate::storage::{Entry, ListError};

/// Work for one key that the planner could not settle alone.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: Entry,
    pub dest: Option<Entry>,
    pub decision: Decision,
}

/// The planner could not finish: a listing failed (the run cannot know what it did not
/// see), or keys to delete could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanFailed(pub String);

/// What the planner saw, for the decisions taken after the listings end.
pub struct Planned {
    /// Destination keys absent from the source, when deletion was asked for.
    pub deletes: Option<DeleteQueue>,
    /// Entries either listing could not read; deleting is unsafe when this is not zero.
    pub listing_errors: u64,
    /// Source entries the filters let through.
    pub source_selected: u64,
    /// The listing was left unfinished because a budget was reached.
    pub cut_short: bool,
}

pub struct Planner<'a> {
    pub mode: CompareMode,
    pub pairing: Pairing,
    pub filters: &'a Filters,
    pub now: SystemTime,
    pub stats: &'a Stats,
    pub reporter: &'a dyn Reporter,
    /// Report destination-only keys (a verify).
    pub report_extras: bool,
    /// Once a budget is reached, the listing stops.
    pub budget: &'a Budget,
}

impl Planner<'_> {
    /// Runs the join to its end, sending every job that needs a worker and queueing
    /// destination-only keys into `deletes` when it is given.
    pub async fn run(
        &self,
        mut join: MergeJoin,
        jobs: async_channel::Sender<Job>,
        mut deletes: Option<DeleteQueue>,
    ) -> Result<Planned, PlanFailed> {
        let mut listing_errors = 0;
        let mut source_selected = 0;
        let mut cut_short = false;
        while let Some(item) = join.next().await {
            if self.budget.stopped().is_some() {
                cut_short = true;
                break;
            }
            let (source, dest) = match item {
                Ok(Pair::SourceOnly(source)) => (source, None),
                Ok(Pair::Both { source, dest }) => {
                    self.stats.dest_listed();
                    (source, Some(dest))
                }
                Ok(Pair::Covered { side, .. }) => {
                    match side {
                        Side::Source => {
                            self.stats.source_listed();
                            self.stats.selected(0);
                            self.stats.skipped(0);
                        }
                        Side::Dest => self.stats.dest_listed(),
                    }
                    continue;
                }
                // A link the destination walk passed over is not deleted through.
                Ok(Pair::DestOnly(dest)) if dest.skip.is_some() => {
                    self.stats.dest_listed();
                    continue;
                }
                Ok(Pair::DestOnly(dest)) => {
                    self.stats.dest_listed();
                    if self.report_extras && self.filters.selects(&dest, self.now) {
                        self.stats.extra();
                        self.reporter.report(Event::Extra { key: &dest.key });
                    }
                    if let Some(queue) = deletes
                        .as_mut()
                        .filter(|_| self.filters.selects(&dest, self.now))
                    {
                        queue.push(&dest.key, dest.size).map_err(|err| {
                            PlanFailed(format!("cannot record keys to delete: {err}"))
                        })?;
                    }
                    continue;
                }
                Err((side, ListError::Entry { path, cause })) => {
                    listing_errors += 1;
                    let message = format!("list {path} ({}): {cause}", side.name());
                    self.reporter.report(Event::Failed {
                        key: None,
                        message: &message,
                    });
                    self.stats.failed(Failure { key: path, message });
                    continue;
                }
                Err((side, ListError::Fatal(message))) => {
                    return Err(PlanFailed(format!(
                        "listing the {} failed: {message}",
                        side.name()
                    )));
                }
            };
            self.stats.source_listed();
            // A key the filters leave out is neither copied nor deleted.
            if !self.filters.selects(&source, self.now) {
                continue;
            }
            // So is one passed over (its warning is already logged), counted.
            if let Some(skip) = source.skip {
                self.stats.passed_over();
                self.reporter.report(Event::PassedOver {
                    key: &source.key,
                    reason: skip.reason(),
                });
                continue;
            }
            source_selected += 1;
            self.stats.selected(source.size);
            let decision = decide(&source, dest.as_ref(), self.mode, self.pairing);
            if decision == Decision::Skip {
                self.stats.skipped(source.size);
                continue;
            }
            self.stats.planned(source.size);
            let job = Job {
                source,
                dest,
                decision,
            };
            if jobs.send(job).await.is_err() {
                break;
            }
        }
        if !cut_short {
            self.stats.listing_complete();
        }
        Ok(Planned {
            deletes,
            listing_errors,
            source_selected,
            cut_short,
        })
    }
}
