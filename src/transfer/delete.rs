//! Deleting destination objects that are absent from the source (`--delete`), once
//! both listings have completed and only if it is safe.

use futures::StreamExt;

use super::Transfer;
use crate::config::DeleteSettings;
use crate::plan::{DeleteQueue, Event, Planned};
use crate::stats::Failure;
use crate::storage::Store;

/// S3 DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1_000;
/// DeleteObjects requests in flight at once.
const DELETE_CONCURRENCY: usize = 4;
/// Moves to the backup location in flight at once, per batch of deletions.
const BACKUP_CONCURRENCY: usize = 16;

impl Transfer {
    /// Deletes the queued keys, unless a budget stopped the run, a listing was
    /// incomplete, the source was empty (without `allow_empty_source`) or there are more
    /// than `max_delete`.
    pub async fn delete_extras(&self, planned: Planned, settings: DeleteSettings) {
        // Even when the listing was whole, the copies it called for may not have started
        // (they wait in the backlog): a mirror that stops halfway keeps what it would
        // delete, as one that stopped before it is.
        if planned.cut_short || self.budget.stopped().is_some() {
            // Not a failure: the budget's stop is what the exit code reports.
            self.reporter.report(Event::Notice(
                "the run stopped at a budget before every object was copied, so nothing was \
                 deleted; a run that copies them all deletes",
            ));
            return;
        }
        let Some(queue) = planned.deletes.filter(|q| !q.is_empty()) else {
            return;
        };
        let count = queue.len();
        let refusal = if planned.listing_errors > 0 {
            Some(format!(
                "{} entries could not be listed; nothing was deleted, since a key missing from an incomplete listing may still exist",
                planned.listing_errors
            ))
        } else if planned.source_selected == 0 && !settings.allow_empty_source {
            Some(format!(
                "the source has no objects; refusing to delete all {count} destination objects (pass --allow-empty-source if that is intended)"
            ))
        } else {
            settings.max_delete.filter(|max| count > *max).map(|max| {
                format!("{count} deletions exceed --max-delete {max}; nothing was deleted")
            })
        };
        if let Some(message) = refusal {
            self.reporter.report(Event::Failed {
                key: None,
                message: &message,
            });
            self.stats.failed(Failure {
                key: "--delete".into(),
                message,
            });
            return;
        }
        if let Err(err) = self.delete_queued(queue).await {
            let message = format!("reading the keys to delete: {err}");
            self.reporter.report(Event::Failed {
                key: None,
                message: &message,
            });
            self.stats.failed(Failure {
                key: "--delete".into(),
                message,
            });
        }
    }

    async fn delete_queued(&self, queue: DeleteQueue) -> std::io::Result<()> {
        let mut keys = queue.into_keys()?;
        let mut batches = Vec::new();
        loop {
            let batch: Vec<(String, u64)> =
                keys.by_ref().take(DELETE_BATCH).collect::<Result<_, _>>()?;
            if batch.is_empty() {
                break;
            }
            batches.push(batch);
            // Keep at most a few batches read ahead of the requests.
            if batches.len() == DELETE_CONCURRENCY {
                self.delete_batches(std::mem::take(&mut batches)).await;
            }
        }
        self.delete_batches(batches).await;
        Ok(())
    }

    async fn delete_batches(&self, batches: Vec<Vec<(String, u64)>>) {
        futures::stream::iter(batches)
            .for_each_concurrent(DELETE_CONCURRENCY, |batch| self.delete_batch(batch))
            .await;
    }

    /// Deletes one batch, each key moved to the backup location first where there is
    /// one; a key whose move failed is not deleted.
    async fn delete_batch(&self, batch: Vec<(String, u64)>) {
        let keys: Vec<String> = match self.backup {
            None => batch.into_iter().map(|(key, _)| key).collect(),
            Some(_) => {
                let moved = futures::stream::iter(batch)
                    .map(|(key, size)| async move {
                        match self.back_up(&key, size).await {
                            Ok(()) => Some(key),
                            Err(err) => {
                                self.delete_failed(key, err.to_string());
                                None
                            }
                        }
                    })
                    .buffered(BACKUP_CONCURRENCY)
                    .collect::<Vec<_>>()
                    .await;
                moved.into_iter().flatten().collect()
            }
        };
        if keys.is_empty() {
            return;
        }
        if self.dry_run {
            for key in &keys {
                self.deleted(key);
            }
            return;
        }
        match &self.dest {
            Store::S3(s3) => match s3.delete_batch(&keys).await {
                Ok(failed) => {
                    for key in keys.iter().filter(|k| !failed.iter().any(|(f, _)| f == *k)) {
                        self.deleted(key);
                    }
                    for (key, message) in failed {
                        self.delete_failed(key, message);
                    }
                }
                Err(err) => {
                    for key in keys {
                        self.delete_failed(key, err.to_string());
                    }
                }
            },
            Store::Local(local) => {
                for key in keys {
                    match local.delete(&key).await {
                        Ok(()) => self.deleted(&key),
                        Err(err) => self.delete_failed(key, err.to_string()),
                    }
                }
            }
        }
    }

    fn deleted(&self, key: &str) {
        self.stats.deleted();
        self.reporter.report(Event::Deleted {
            key,
            target: &self.dest.describe(key),
            dry_run: self.dry_run,
        });
    }

    fn delete_failed(&self, key: String, message: String) {
        self.reporter.report(Event::Failed {
            key: Some(&key),
            message: &message,
        });
        self.stats.failed(Failure { key, message });
    }
}
