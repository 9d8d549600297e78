//! Live progress: an indicatif bar on a terminal, one stats line per interval otherwise.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

use crate::stats::{Snapshot, Stats};

const BAR_REFRESH: Duration = Duration::from_millis(200);

pub fn new_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(listing_style());
    bar
}

/// While the listing runs the total is unknown: show counts and rates only.
fn listing_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg} {binary_bytes_per_sec}")
        .expect("valid template")
}

/// Once the listing is complete the total is known, so the bar can show an ETA.
fn total_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "[{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
    )
    .expect("valid template")
}

/// A background task drawing progress until `stop` is called.
pub struct ProgressTask {
    handle: Option<JoinHandle<()>>,
}

impl ProgressTask {
    pub fn none() -> Self {
        Self { handle: None }
    }

    pub fn bar(bar: ProgressBar, stats: Arc<Stats>) -> Self {
        let handle = tokio::spawn(async move {
            let mut total_known = false;
            loop {
                let snap = stats.snapshot();
                if snap.listing_complete && !total_known {
                    total_known = true;
                    bar.set_style(total_style());
                    bar.set_length(snap.planned_bytes);
                }
                bar.set_position(snap.done_bytes);
                bar.set_message(object_counts(&snap));
                bar.tick();
                tokio::time::sleep(BAR_REFRESH).await;
            }
        });
        Self {
            handle: Some(handle),
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
            handle: Some(handle),
        }
    }

    pub fn stop(self) {
        if let Some(handle) = self.handle {
            handle.abort();
        }
    }
}

fn object_counts(snap: &Snapshot) -> String {
    let rate = per_second(snap.copied, snap.elapsed);
    format!(
        "{}/{} objects ({:.0}/s), {} unchanged, {} failed",
        snap.done, snap.planned, rate, snap.skipped, snap.failed
    )
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
