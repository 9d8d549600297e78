//! `--metrics-file`: the run's counters in the Prometheus text exposition format, for
//! node_exporter's textfile collector (or anything that reads `*.prom` files).
//!
//! Invariants: the file is replaced whole, by writing a temporary file in the same
//! directory and renaming it over the old one, so a reader never sees half of it; the
//! temporary name does not end in `.prom`, so the collector never reads it. The last
//! success time outlives failed runs: it is carried over from the file the previous run
//! left.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stats::Snapshot;

const LAST_SUCCESS: &str = "s3mirror_last_success_timestamp_seconds";

/// Where the metrics go and what labels them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub path: PathBuf,
    /// The `job_name` label.
    pub job_name: String,
}

/// The metrics file of one process: written while runs go on and once at the end.
#[derive(Debug)]
pub struct MetricsFile {
    settings: MetricsSettings,
    verify: bool,
    dry_run: bool,
    started: SystemTime,
    /// When a run of this job last succeeded, as the previous file said.
    previous_success: Option<f64>,
    /// The counters of the run the exit code is about, kept for `finish`.
    last: Mutex<Snapshot>,
    /// A write that failed is said once, not every interval.
    warned: AtomicBool,
}

/// How far a run has got, as the metrics tell it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RunState {
    Running,
    Finished { exit_code: i32 },
}

impl MetricsFile {
    pub fn new(settings: MetricsSettings, verify: bool, dry_run: bool) -> Self {
        let previous_success = std::fs::read_to_string(&settings.path)
            .ok()
            .and_then(|text| last_success_in(&text, &settings.job_name));
        Self {
            settings,
            verify,
            dry_run,
            started: SystemTime::now(),
            previous_success,
            last: Mutex::new(Snapshot::default()),
            warned: AtomicBool::new(false),
        }
    }

    /// Writes the counters of a run in progress.
    pub fn write_progress(&self, snap: &Snapshot) {
        self.write(snap, RunState::Running, self.previous_success);
    }

    /// Keeps the final counters of a run for `finish`.
    pub fn record(&self, snap: Snapshot) {
        self.write_progress(&snap);
        *self.last.lock().expect("metrics lock") = snap;
    }

    /// The last write: the recorded counters with the process's exit code.
    pub fn finish(&self, exit_code: i32) {
        let snap = self.last.lock().expect("metrics lock").clone();
        let last_success = match exit_code {
            0 => Some(epoch_seconds(SystemTime::now())),
            _ => self.previous_success,
        };
        self.write(&snap, RunState::Finished { exit_code }, last_success);
    }

    fn write(&self, snap: &Snapshot, state: RunState, last_success: Option<f64>) {
        let text = format_metrics(&Exposition {
            job_name: &self.settings.job_name,
            verify: self.verify,
            dry_run: self.dry_run,
            started: epoch_seconds(self.started),
            snap,
            state,
            last_success,
        });
        if let Err(err) = replace_file(&self.settings.path, text.as_bytes()) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot write --metrics-file {}: {err}",
                    self.settings.path.display()
                );
            }
        }
    }
}

/// Everything one exposition says.
pub struct Exposition<'a> {
    pub job_name: &'a str,
    pub verify: bool,
    pub dry_run: bool,
    /// When the process started, in seconds since the epoch.
    pub started: f64,
    pub snap: &'a Snapshot,
    pub state: RunState,
    pub last_success: Option<f64>,
}

pub fn format_metrics(exposition: &Exposition<'_>) -> String {
    let snap = exposition.snap;
    let job = format!("job_name=\"{}\"", escape_label(exposition.job_name));
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            let _ = writeln!(out, "{name}{{{job}{labels}}} {value}");
        }
    };
    let by = |label: &str, pairs: &[(&str, u64)]| -> Vec<(String, f64)> {
        pairs
            .iter()
            .map(|(value, n)| (format!(",{label}=\"{}\"", escape_label(value)), *n as f64))
            .collect()
    };
    let one = |value: f64| vec![(String::new(), value)];

    let objects = match exposition.verify {
        true => by(
            "result",
            &[
                ("identical", snap.skipped),
                ("missing", snap.missing),
                ("differ", snap.copied.saturating_sub(snap.missing)),
                ("extra", snap.extra),
                ("failed", snap.failed),
            ],
        ),
        false => by(
            "result",
            &[
                ("copied", snap.copied),
                ("unchanged", snap.skipped),
                ("failed", snap.failed),
                ("deleted", snap.deleted),
                ("archived", snap.archived),
                ("passed_over", snap.passed_over),
                ("backed_up", snap.backed_up),
                ("not_started", snap.not_started),
            ],
        ),
    };
    family(
        "s3mirror_objects",
        "counter",
        "Objects of the run by what happened to them (in a verify, by how the sides compare).",
        &objects,
    );
    family(
        "s3mirror_bytes",
        "counter",
        "Bytes of the objects the run copied.",
        &by("result", &[("copied", snap.copied_bytes)]),
    );
    family(
        "s3mirror_listed_objects",
        "counter",
        "Entries listed, by side.",
        &by(
            "side",
            &[
                ("source", snap.source_listed),
                ("destination", snap.dest_listed),
            ],
        ),
    );
    family(
        "s3mirror_requests",
        "counter",
        "S3 requests sent, by operation, retries included.",
        &by("operation", &snap.requests),
    );
    family(
        "s3mirror_request_retries",
        "counter",
        "S3 requests sent again after a throttling answer, a server error or a dropped connection.",
        &one(snap.retries as f64),
    );
    family(
        "s3mirror_throttled_responses",
        "counter",
        "Throttling answers (503 SlowDown, 429) from S3.",
        &one(snap.throttled as f64),
    );
    family(
        "s3mirror_server_error_responses",
        "counter",
        "Other 5xx answers from S3.",
        &one(snap.server_errors as f64),
    );
    family(
        "s3mirror_recopied_objects",
        "counter",
        "Objects copied again from the start after their bytes arrived damaged or cut short.",
        &one(snap.object_retries as f64),
    );
    family(
        "s3mirror_run_duration_seconds",
        "gauge",
        "How long the run has taken.",
        &one(snap.elapsed.as_secs_f64()),
    );
    family(
        "s3mirror_run_start_timestamp_seconds",
        "gauge",
        "When the run started, in seconds since the epoch.",
        &one(exposition.started),
    );
    family(
        "s3mirror_dry_run",
        "gauge",
        "1 when the run changes nothing (dry run, verify, manifest).",
        &one(f64::from(u8::from(exposition.dry_run))),
    );
    let running = matches!(exposition.state, RunState::Running);
    family(
        "s3mirror_running",
        "gauge",
        "1 while the run goes on, 0 once it has ended.",
        &one(f64::from(u8::from(running))),
    );
    if let RunState::Finished { exit_code } = exposition.state {
        family(
            "s3mirror_exit_code",
            "gauge",
            "The exit code of the last run: 0 success, 1 objects failed or the sides differ, 2 usage or verify error, 3 the run could not proceed, 130 interrupted.",
            &one(f64::from(exit_code)),
        );
    }
    if let Some(time) = exposition.last_success {
        family(
            LAST_SUCCESS,
            "gauge",
            "When a run of this job last exited 0, in seconds since the epoch.",
            &one(time),
        );
    }
    out
}

/// The last success time of `job_name` in an earlier exposition.
fn last_success_in(text: &str, job_name: &str) -> Option<f64> {
    let prefix = format!("{LAST_SUCCESS}{{job_name=\"{}\"}} ", escape_label(job_name));
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse().ok())
}

/// A label value as the text format quotes it.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

/// Writes `path` whole: a temporary file beside it, then a rename over it.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let result = std::fs::write(&temporary, bytes).and_then(|()| std::fs::rename(&temporary, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snap() -> Snapshot {
        Snapshot {
            elapsed: Duration::from_millis(2500),
            copied: 3,
            copied_bytes: 4096,
            skipped: 2,
            failed: 1,
            requests: vec![("PutObject", 4), ("ListObjectsV2", 2)],
            retries: 1,
            throttled: 1,
            ..Snapshot::default()
        }
    }

    #[test]
    fn exposition_has_labelled_samples_and_the_exit_code_at_the_end() {
        let snap = snap();
        let mut exposition = Exposition {
            job_name: "night\"ly",
            verify: false,
            dry_run: false,
            started: 1_700_000_000.5,
            snap: &snap,
            state: RunState::Running,
            last_success: None,
        };
        let running = format_metrics(&exposition);
        assert!(
            running.contains("# TYPE s3mirror_objects counter\n"),
            "{running}"
        );
        assert!(
            running
                .contains("s3mirror_objects_total{job_name=\"night\\\"ly\",result=\"copied\"} 3\n"),
            "{running}"
        );
        assert!(running.contains("result=\"archived\"} 0\n"), "{running}");
        assert!(
            running.contains("operation=\"PutObject\"} 4\n"),
            "{running}"
        );
        assert!(
            running.contains("s3mirror_running{job_name=\"night\\\"ly\"} 1\n"),
            "{running}"
        );
        assert!(!running.contains("exit_code"), "{running}");
        assert!(!running.contains(LAST_SUCCESS), "{running}");

        exposition.state = RunState::Finished { exit_code: 1 };
        exposition.last_success = Some(1_600_000_000.0);
        let finished = format_metrics(&exposition);
        assert!(
            finished.contains("s3mirror_exit_code{job_name=\"night\\\"ly\"} 1\n"),
            "{finished}"
        );
        assert_eq!(
            last_success_in(&finished, "night\"ly"),
            Some(1_600_000_000.0)
        );
        assert_eq!(last_success_in(&finished, "other"), None);
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_of_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = MetricsSettings {
            path: dir.path().join("job.prom"),
            job_name: "job".into(),
        };
        let first = MetricsFile::new(settings.clone(), false, false);
        first.record(snap());
        first.finish(0);
        let text = std::fs::read_to_string(&settings.path).unwrap();
        let success = last_success_in(&text, "job").expect("a success time");

        let second = MetricsFile::new(settings.clone(), false, false);
        second.record(snap());
        second.finish(3);
        let text = std::fs::read_to_string(&settings.path).unwrap();
        assert!(
            text.contains("s3mirror_exit_code{job_name=\"job\"} 3\n"),
            "{text}"
        );
        assert_eq!(last_success_in(&text, "job"), Some(success));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["job.prom"], "no temporary file is left");
    }
}
