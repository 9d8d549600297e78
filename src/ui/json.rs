//! `--json`: one NDJSON line on stdout for every object acted on, and a summary line at
//! the end; people keep stderr. docs/json.md has the schema. Fields are only ever added.

use std::io::Write;

use serde_json::{json, Map, Value};

use crate::budget::Limit;
use crate::plan::{CopyReason, Event};
use crate::stats::Snapshot;

/// Writes whole lines to stdout, one `write` each, so lines never interleave.
pub struct JsonLines {
    verify: bool,
}

impl JsonLines {
    pub fn new(verify: bool) -> Self {
        Self { verify }
    }

    pub fn event(&self, event: &Event<'_>) {
        let value = match *event {
            Event::Copied { key, reason, .. } if self.verify => match reason {
                CopyReason::Missing => json!({"action": "missing", "key": key}),
                reason => json!({"action": "differs", "key": key, "reason": reason.to_string()}),
            },
            Event::Copied {
                key,
                target,
                bytes,
                reason,
                dry_run,
                duration,
            } => json!({
                "action": if dry_run { "would_copy" } else { "copy" },
                "key": key,
                "target": target,
                "reason": reason.to_string(),
                "bytes": bytes,
                "duration_ms": duration.as_millis() as u64,
            }),
            Event::Deleted {
                key,
                target,
                dry_run,
            } => json!({
                "action": if dry_run { "would_delete" } else { "delete" },
                "key": key,
                "target": target,
            }),
            Event::Extra { key } => json!({"action": "extra", "key": key}),
            Event::BackedUp {
                key,
                target,
                dry_run,
            } => json!({
                "action": if dry_run { "would_backup" } else { "backup" },
                "key": key,
                "target": target,
            }),
            Event::PassedOver { key, reason } => {
                json!({"action": "skipped", "key": key, "reason": reason})
            }
            Event::Archived {
                key,
                storage_class,
                restore,
            } => json!({
                "action": "archived",
                "key": key,
                "storage_class": storage_class,
                "restore": restore,
            }),
            Event::Failed { key, message } => {
                json!({"action": "error", "key": key, "error": message})
            }
            Event::Retrying {
                key,
                message,
                attempt,
                attempts,
            } => json!({
                "action": "retry",
                "key": key,
                "error": message,
                "attempt": attempt,
                "attempts": attempts,
            }),
            Event::Notice(_) => return,
        };
        write_line(&value);
    }

    /// The last line: the counts of the run and how it ended (`error` when it could
    /// not finish).
    pub fn summary(
        &self,
        snap: &Snapshot,
        dry_run: bool,
        stopped_by: Option<Limit>,
        error: Option<&str>,
    ) {
        let differences = snap.copied + snap.extra;
        let result = match (error, snap.failed, self.verify) {
            (Some(_), _, _) => "error",
            (None, 0, true) if differences == 0 => "identical",
            (None, 0, true) => "differ",
            (None, 0, false) if stopped_by.is_some() => "stopped",
            (None, 0, false) => "ok",
            (None, _, _) => "failed",
        };
        let requests: Map<String, Value> = snap
            .requests
            .iter()
            .map(|(op, n)| ((*op).to_owned(), json!(n)))
            .collect();
        let mut value = json!({
            "action": "summary",
            "result": result,
            "verify": self.verify,
            "dry_run": dry_run,
            "listed_source": snap.source_listed,
            "listed_dest": snap.dest_listed,
            "copied": snap.copied,
            "copied_bytes": snap.copied_bytes,
            "unchanged": snap.skipped,
            "failed": snap.failed,
            "deleted": snap.deleted,
            "backed_up": snap.backed_up,
            "stopped_by": stopped_by.map(Limit::option),
            "not_started": snap.not_started,
            "skipped": snap.passed_over,
            "archived": snap.archived,
            "restores_requested": snap.restores_requested,
            "missing": snap.missing,
            "extra": snap.extra,
            "recopied": snap.object_retries,
            "retries": snap.retries,
            "throttled": snap.throttled,
            "server_errors": snap.server_errors,
            "seconds": snap.elapsed.as_secs_f64(),
            "requests": requests,
        });
        if let Some(error) = error {
            value["error"] = json!(error);
        }
        write_line(&value);
    }
}

fn write_line(value: &Value) {
    let mut line = value.to_string();
    line.push('\n');
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}
