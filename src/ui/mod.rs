//! Everything s3mirror prints about a run. The engine reports events and updates
//! counters; this module alone decides what reaches the terminal.
//!
//! Streams: per-object lines (`-v`, `--dry-run`) go to stdout; progress, stats
//! lines, errors and the summary go to stderr.

mod json;
mod metrics;
mod progress;
pub use progress::ProgressTask;
mod summary;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;

use crate::budget::Limit;
use crate::keylist::FailedKeys;
use crate::plan::{CopyReason, Event, Reporter};
use crate::stats::Stats;

pub use metrics::{MetricsFile, MetricsSettings};
pub use summary::{format_summary, format_verify_summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub verbosity: Verbosity,
    pub stats_interval: Duration,
    /// A verify: print differences instead of copies.
    pub verify: bool,
    /// `--json`: NDJSON events on stdout instead of lines for people.
    pub json: bool,
    /// `--failed-keys`.
    pub failed_keys: Option<std::path::PathBuf>,
    /// `--metrics-file` and `--job-name`.
    pub metrics: Option<MetricsSettings>,
}

/// Human output on a terminal or in a log.
pub struct Console {
    verbosity: Verbosity,
    verify: bool,
    json: Option<json::JsonLines>,
    /// `--failed-keys`: keys that failed, or in a verify, that differ.
    failed_keys: Option<FailedKeys>,
    stats_interval: Duration,
    /// Present on a terminal; lines are printed through it so they do not tear the bar.
    bar: Option<ProgressBar>,
    /// `--metrics-file`, written every `stats_interval` and when the run ends.
    metrics: Option<Arc<MetricsFile>>,
}

impl Console {
    /// The console, and the `--failed-keys` file it writes, created (or emptied) now.
    pub fn new(
        settings: &OutputSettings,
        metrics: Option<Arc<MetricsFile>>,
    ) -> std::io::Result<Self> {
        let failed_keys = match &settings.failed_keys {
            Some(path) => Some(FailedKeys::create(path)?),
            None => None,
        };
        let interactive = std::io::stderr().is_terminal();
        let bar = (interactive && settings.verbosity != Verbosity::Quiet).then(progress::new_bar);
        Ok(Self {
            verbosity: settings.verbosity,
            failed_keys,
            verify: settings.verify,
            json: settings.json.then(|| json::JsonLines::new(settings.verify)),
            stats_interval: settings.stats_interval,
            bar,
            metrics,
        })
    }

    /// Whether progress is drawn as a bar, which a total of the source makes better.
    pub fn shows_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Starts the progress display (a bar on a terminal, periodic lines otherwise) and
    /// the periodic writes of `--metrics-file`.
    pub fn start_progress(&self, stats: Arc<Stats>) -> progress::ProgressTask {
        let mut task = match (&self.bar, self.verbosity) {
            (_, Verbosity::Quiet) => progress::ProgressTask::none(),
            (Some(bar), _) => progress::ProgressTask::bar(bar.clone(), Arc::clone(&stats)),
            (None, _) => progress::ProgressTask::lines(self.stats_interval, Arc::clone(&stats)),
        };
        if let Some(metrics) = &self.metrics {
            task.also_metrics(Arc::clone(metrics), self.stats_interval, stats);
        }
        task
    }

    /// Prints the final summary (and the list of failures) on stderr, unless the run
    /// never `started`, and with `--json` the summary line on stdout; `error` is why the
    /// run could not finish.
    /// The summary: on stderr for people, as JSON, in the metrics. `stopped_by` is the
    /// budget that ended the run early, if one did.
    pub fn finish(
        &self,
        stats: &Stats,
        dry_run: bool,
        started: bool,
        stopped_by: Option<Limit>,
        error: Option<&str>,
    ) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let snap = stats.snapshot();
        let text = match self.verify {
            true => format_verify_summary(&snap, &stats.failures()),
            false => format_summary(&snap, &stats.failures(), dry_run, stopped_by),
        };
        let show = self.verbosity > Verbosity::Quiet || snap.failed > 0;
        if show && started {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
        if let Some(json) = &self.json {
            json.summary(&snap, dry_run, stopped_by, error);
        }
        if let Some(keys) = &self.failed_keys {
            keys.flush();
        }
        if let Some(metrics) = &self.metrics {
            metrics.record(snap);
        }
    }

    /// A line for people on stdout; stdout is the JSON stream's alone with `--json`.
    fn line_out(&self, line: &str) {
        if self.json.is_some() {
            return;
        }
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn line_err(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

impl Reporter for Console {
    fn report(&self, event: Event<'_>) {
        if let Some(json) = &self.json {
            json.event(&event);
        }
        if let Some(keys) = &self.failed_keys {
            match event {
                Event::Failed { key: Some(key), .. } | Event::Extra { key } => keys.push(key),
                Event::Copied { key, .. } if self.verify => keys.push(key),
                _ => {}
            }
        }
        match event {
            Event::Copied { key, reason, .. } if self.verify => {
                if self.verbosity > Verbosity::Quiet {
                    self.line_out(&match reason {
                        CopyReason::Missing => format!("missing {key}"),
                        reason => format!("differs {key} ({reason})"),
                    });
                }
            }
            Event::Extra { key } => {
                if self.verbosity > Verbosity::Quiet {
                    self.line_out(&format!("extra   {key}"));
                }
            }
            Event::Copied {
                target,
                bytes,
                reason,
                dry_run,
                ..
            } => {
                if dry_run && self.verbosity > Verbosity::Quiet {
                    self.line_out(&format!(
                        "would copy {target} ({reason}, {})",
                        indicatif::HumanBytes(bytes)
                    ));
                } else if self.verbosity == Verbosity::Verbose {
                    self.line_out(&format!(
                        "copied {target} ({reason}, {})",
                        indicatif::HumanBytes(bytes)
                    ));
                }
            }
            Event::Deleted {
                target, dry_run, ..
            } => {
                if dry_run && self.verbosity > Verbosity::Quiet {
                    self.line_out(&format!("would delete {target}"));
                } else if self.verbosity == Verbosity::Verbose {
                    self.line_out(&format!("deleted {target}"));
                }
            }
            Event::BackedUp {
                key,
                target,
                dry_run,
            } => {
                if dry_run && self.verbosity > Verbosity::Quiet {
                    self.line_out(&format!("would back up {key} to {target}"));
                } else if self.verbosity == Verbosity::Verbose {
                    self.line_out(&format!("backed up {key} to {target}"));
                }
            }
            Event::Failed { message, .. } => self.line_err(&format!("error: {message}")),
            Event::Retrying {
                message,
                attempt,
                attempts,
                ..
            } => {
                if self.verbosity > Verbosity::Quiet {
                    self.line_err(&format!(
                        "warning: {message}; copying again (attempt {attempt} of {attempts})"
                    ));
                }
            }
            Event::Notice(text) => {
                if self.verbosity > Verbosity::Quiet {
                    self.line_err(&format!("note: {text}"));
                }
            }
            Event::PassedOver { key, reason } => {
                if self.verbosity > Verbosity::Quiet {
                    self.line_err(&format!("warning: {key}: {reason}, skipped"));
                }
            }
            Event::Archived {
                key,
                storage_class,
                restore,
            } => {
                if self.verbosity > Verbosity::Quiet {
                    let line = match restore {
                        Some(restore) => format!(
                            "warning: {key}: archived in {storage_class} and not restored; {restore}"
                        ),
                        None => format!(
                            "warning: {key}: archived in {storage_class} and not restored, so not copied"
                        ),
                    };
                    self.line_err(&line);
                }
            }
        }
    }
}
