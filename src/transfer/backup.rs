//! `--backup-dir`: an object of the destination that this run would overwrite or delete
//! is first moved to the backup location, under its key relative to the destination
//! (plus `--suffix`), so that a bad night in the source never destroys the backup's only
//! copy. Between buckets the move is server-side (CopyObject, UploadPartCopy above the
//! copy threshold) through the destination's client; in a local tree it is a hard link
//! (a copy across file systems). The original is only replaced by the overwrite or
//! removed by the delete that follows; a move that fails leaves it where it was, and the
//! overwrite or delete does not happen.

use super::Transfer;
use crate::plan::Event;
use crate::storage::s3::CopySource;
use crate::storage::{ObjectError, Store};

/// Where displaced objects go.
pub struct Backup {
    /// On the destination's side: a bucket location reached with the destination's
    /// client, or a local directory.
    pub store: Store,
    /// Appended to every moved key (e.g. `-2026-12-01`).
    pub suffix: String,
}

impl Transfer {
    /// Moves the destination's `key` (`size` bytes) to the backup location, if there is
    /// one. An error means the object must be left alone.
    pub(super) async fn back_up(&self, key: &str, size: u64) -> Result<(), ObjectError> {
        let Some(backup) = &self.backup else {
            return Ok(());
        };
        // A folder marker holds nothing to keep.
        if key.is_empty() || key.ends_with('/') {
            return Ok(());
        }
        let target = format!("{key}{}", backup.suffix);
        if !self.dry_run {
            let moved = match (&self.dest, &backup.store) {
                (Store::S3(dest), Store::S3(store)) => {
                    let source = CopySource {
                        url: dest.url(),
                        key,
                        version: None,
                        size,
                        class: None,
                    };
                    let threshold = self.sizes.multipart_copy_threshold;
                    store
                        .copy_object_to(source, &target, threshold, &self.parts)
                        .await
                }
                (Store::Local(dest), Store::Local(store)) => {
                    store.keep_from(dest, key, &target).await
                }
                _ => unreachable!("a backup location is on the destination's side"),
            };
            moved.map_err(|err| {
                ObjectError::new(
                    "back up",
                    self.dest.describe(key),
                    format!("{err}; it was left in place, neither overwritten nor deleted"),
                )
            })?;
        }
        self.stats.backed_up();
        self.reporter.report(Event::BackedUp {
            key,
            target: &backup.store.describe(&target),
            dry_run: self.dry_run,
        });
        Ok(())
    }
}
