//! Counting the source ahead of the copy, so that progress has a total and an ETA long
//! before the planner's own listing reaches the end.
//!
//! Invariant: only a count and a sum are kept, never the names, so memory is that of
//! the listing stream whatever the object count. The count runs on its own task beside
//! the copy and tells the stats only when it is complete: a partial count is no total.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::task::JoinHandle;

use crate::filter::Filters;
use crate::stats::Stats;
use crate::storage::{ListError, Listing};

/// Counts the entries of `listing` that `filters` select, and their bytes, on a task of
/// its own; abort the handle to stop it early.
pub fn count_source(
    mut listing: Listing,
    filters: Filters,
    now: SystemTime,
    stats: Arc<Stats>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (mut objects, mut bytes) = (0u64, 0u64);
        while let Some(item) = listing.next().await {
            match item {
                Ok(entry) if filters.selects(&entry, now) => {
                    objects += 1;
                    bytes += entry.size;
                }
                // The planner reports unreadable entries; they are no work either way.
                Ok(_) | Err(ListError::Entry { .. }) => {}
                Err(ListError::Fatal(_)) => return,
            }
        }
        stats.source_counted(objects, bytes);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{KeyRange, LocalStore, Store};

    #[tokio::test]
    async fn counts_what_the_filters_select_and_then_tells_the_stats() {
        let dir = tempfile::tempdir().unwrap();
        for (name, size) in [
            ("a.txt", 3),
            ("b.txt", 5),
            ("sub/c.log", 7),
            ("sub/d.txt", 11),
        ] {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![0u8; size]).unwrap();
        }
        let store = Store::Local(LocalStore::new(dir.path().to_path_buf()));
        let filters = Filters::default()
            .with_patterns([(crate::filter::Rule::Exclude, "*.log")])
            .unwrap();
        let stats = Arc::new(Stats::new(Arc::default()));
        count_source(
            store.list(&KeyRange::default()),
            filters,
            SystemTime::now(),
            Arc::clone(&stats),
        )
        .await
        .unwrap();
        assert_eq!(stats.snapshot().counted, Some((3, 19)));
    }
}
