//! Live progress: an indicatif bar on a terminal, one stats line per interval otherwise;
//! and the periodic writes of `--metrics-file`.
//!
//! The bar counts bytes and objects of the selected source entries the run is done with
//! (unchanged, or finished by a worker). Its total is the count of the whole source once
//! a count has ended; until then, the entries listed so far, growing with the listing.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use super::MetricsFile;
use crate::stats::{Snapshot, Stats};

const BAR_REFRESH: Duration = Duration::from_millis(200);

pub fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(listing_style());
    bar
}

/// While the listing runs the total is only what has been listed: no bar, no ETA.
fn listing_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    )
    .expect("valid template")
}

/// Once the listing is complete the total is known, so the bar can show an ETA.
fn total_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .expect("valid template")
}

/// Background tasks drawing progress and writing metrics until `stop` is called.
pub struct ProgressTask {
    handles: Vec<JoinHandle<()>>,
}

impl ProgressTask {
    pub fn none() -> Self {
        Self {
            handles: Vec::new(),
        }
    }

    pub fn bar(bar: ProgressBar, stats: Arc<Stats>) -> Self {
        let handle = tokio::spawn(async move {
            let mut total_known = false;
            loop {
                let view = BarView::of(&stats.snapshot());
                if !view.listing && !total_known {
                    total_known = true;
                    bar.set_style(total_style());
                }
                bar.set_message(view.message);
                bar.set_length(view.total_bytes);
                bar.set_position(view.bytes);
                bar.tick();
                tokio::time::sleep(BAR_REFRESH).await;
            }
        });
        Self {
            handles: vec![handle],
        }
    }

    pub fn lines(interval: Duration, stats: Arc<Stats>) -> Self {
        let handle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                eprintln!("{}", stats_line(&stats.snapshot()));
            }
        });
        Self {
            handles: vec![handle],
        }
    }

    /// Also writes `metrics` every `interval`, the first time at once.
    pub fn also_metrics(
        &mut self,
        metrics: Arc<MetricsFile>,
        interval: Duration,
        stats: Arc<Stats>,
    ) {
        self.handles.push(tokio::spawn(async move {
            loop {
                metrics.write_progress(&stats.snapshot());
                tokio::time::sleep(interval).await;
            }
        }));
    }

    pub fn stop(self) {
        for handle in self.handles {
            handle.abort();
        }
    }
}

/// What the bar shows at one moment.
#[derive(Debug, PartialEq)]
struct BarView {
    bytes: u64,
    total_bytes: u64,
    /// The total is what has been listed so far, not yet the whole source.
    listing: bool,
    message: String,
}

impl BarView {
    fn of(snap: &Snapshot) -> Self {
        let (total_objects, total_bytes, listing) = match snap.counted {
            Some((objects, bytes)) => (objects, bytes, false),
            None => (snap.selected, snap.selected_bytes, !snap.listing_complete),
        };
        let rate = per_second(snap.copied, snap.elapsed);
        Self {
            bytes: snap.settled_bytes,
            total_bytes,
            listing,
            message: format!(
                "{}{}/{} objects ({:.0}/s), {} unchanged, {} failed",
                if listing { "listing\u{2026} " } else { "" },
                snap.settled,
                total_objects,
                rate,
                snap.skipped,
                snap.failed
            ),
        }
    }
}

pub fn stats_line(snap: &Snapshot) -> String {
    format!(
        "[{}s] listed {}, copied {} ({}), unchanged {}, failed {}, {:.1} objects/s, {}/s",
        snap.elapsed.as_secs(),
        snap.source_listed,
        snap.copied,
        HumanBytes(snap.copied_bytes),
        snap.skipped,
        snap.failed,
        per_second(snap.copied, snap.elapsed),
        HumanBytes(per_second(snap.copied_bytes, snap.elapsed) as u64),
    )
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_total_grows_with_the_listing_until_a_count_or_its_end() {
        let mut snap = Snapshot {
            elapsed: Duration::from_secs(2),
            selected: 10,
            selected_bytes: 1000,
            settled: 4,
            settled_bytes: 300,
            copied: 2,
            skipped: 2,
            ..Snapshot::default()
        };
        let listing = BarView::of(&snap);
        assert_eq!(
            (listing.bytes, listing.total_bytes, listing.listing),
            (300, 1000, true)
        );
        assert_eq!(
            listing.message,
            "listing\u{2026} 4/10 objects (1/s), 2 unchanged, 0 failed"
        );

        snap.counted = Some((50, 9000));
        let counted = BarView::of(&snap);
        assert_eq!((counted.total_bytes, counted.listing), (9000, false));
        assert!(
            counted.message.starts_with("4/50 objects"),
            "{}",
            counted.message
        );

        snap.counted = None;
        snap.listing_complete = true;
        let listed = BarView::of(&snap);
        assert_eq!((listed.total_bytes, listed.listing), (1000, false));
    }

    #[test]
    fn stats_line_shows_counts_and_rates() {
        let snap = Snapshot {
            elapsed: Duration::from_secs(10),
            source_listed: 100,
            copied: 50,
            copied_bytes: 50 * 1024 * 1024,
            skipped: 40,
            failed: 1,
            ..Snapshot::default()
        };
        assert_eq!(
            stats_line(&snap),
            "[10s] listed 100, copied 50 (50.00 MiB), unchanged 40, failed 1, 5.0 objects/s, 5.00 MiB/s"
        );
    }
}
