//! The planner: walks the merge-join of both listings, decides per key, counts what
//! needs no work and hands the rest to the transfer workers.
//!
//! Invariant: the jobs channel is bounded, so the listings are read only as fast as the
//! workers take jobs, and memory holds O(threads) jobs whatever the object count.

mod decide;
mod merge;

pub use decide::{decide, CompareMode, CopyReason, Decision, Pairing};
pub use merge::{JoinItem, MergeJoin, Pair, Side};

use crate::stats::{Failure, Stats};
use crate::storage::{Entry, ListError};
use crate::ui::{Event, Reporter};

/// Work for one key that the planner could not settle alone.
#[derive(Debug, Clone)]
pub struct Job {
    pub source: Entry,
    pub dest: Option<Entry>,
    pub decision: Decision,
}

/// A listing failed: the run cannot know what it did not see.
#[derive(Debug, thiserror::Error)]
#[error("listing the {side} failed: {message}")]
pub struct ListingFailed {
    pub side: &'static str,
    pub message: String,
}

pub struct Planner<'a> {
    pub mode: CompareMode,
    pub pairing: Pairing,
    pub stats: &'a Stats,
    pub reporter: &'a dyn Reporter,
}

impl Planner<'_> {
    /// Runs the join to its end, sending every job that needs a worker.
    pub async fn run(
        &self,
        mut join: MergeJoin,
        jobs: async_channel::Sender<Job>,
    ) -> Result<(), ListingFailed> {
        while let Some(item) = join.next().await {
            let (source, dest) = match item {
                Ok(Pair::SourceOnly(source)) => (source, None),
                Ok(Pair::Both { source, dest }) => {
                    self.stats.dest_listed();
                    (source, Some(dest))
                }
                Ok(Pair::DestOnly(_)) => {
                    self.stats.dest_listed();
                    continue;
                }
                Err((side, ListError::Entry { path, cause })) => {
                    let message = format!("list {path} ({}): {cause}", side.name());
                    self.reporter.report(Event::Failed { message: &message });
                    self.stats.failed(Failure { key: path, message });
                    continue;
                }
                Err((side, ListError::Fatal(message))) => {
                    return Err(ListingFailed {
                        side: side.name(),
                        message,
                    });
                }
            };
            self.stats.source_listed();
            let decision = decide(&source, dest.as_ref(), self.mode, self.pairing);
            if decision == Decision::Skip {
                self.stats.skipped();
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
        self.stats.listing_complete();
        Ok(())
    }
}
