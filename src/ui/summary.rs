//! The end-of-run summary, the one block of output every run ends with.

use std::fmt::Write;

use indicatif::HumanBytes;

use super::progress::per_second;
use crate::budget::Limit;
use crate::stats::{Failure, Snapshot};

/// The end of a verify: what differs, by kind, and the keys that could not be compared.
pub fn format_verify_summary(snap: &Snapshot, failures: &[Failure]) -> String {
    let mut out = String::new();
    let identical = snap.skipped;
    let differ = snap.copied.saturating_sub(snap.missing);
    let _ = writeln!(out, "verify:");
    let _ = writeln!(
        out,
        "  listed     {} source, {} destination",
        snap.source_listed, snap.dest_listed
    );
    let _ = writeln!(out, "  identical  {identical}");
    let _ = writeln!(out, "  missing    {}", snap.missing);
    let _ = writeln!(out, "  differ     {differ}");
    let _ = writeln!(out, "  extra      {}", snap.extra);
    if snap.archived > 0 {
        let _ = writeln!(
            out,
            "  archived   {} (not restored, so not compared)",
            snap.archived
        );
    }
    let _ = writeln!(out, "  errors     {}", snap.failed);
    let verdict = match (snap.failed, snap.copied + snap.extra) {
        (0, 0) => "identical",
        (0, _) => "the sides differ",
        _ => "not every key could be compared",
    };
    let _ = writeln!(out, "  result     {verdict}");
    write_failures(&mut out, snap, failures);
    out
}

pub fn format_summary(
    snap: &Snapshot,
    failures: &[Failure],
    dry_run: bool,
    stopped_by: Option<Limit>,
) -> String {
    let mut out = String::new();
    let verb = if dry_run { "would copy" } else { "copied" };
    let secs = snap.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "{}",
        if dry_run {
            "dry run: nothing was changed"
        } else {
            "summary:"
        }
    );
    let _ = writeln!(
        out,
        "  listed     {} source, {} destination",
        snap.source_listed, snap.dest_listed
    );
    let _ = writeln!(
        out,
        "  {verb:<10} {} ({})",
        snap.copied,
        HumanBytes(snap.copied_bytes)
    );
    let _ = writeln!(out, "  unchanged  {}", snap.skipped);
    if snap.deleted > 0 {
        let verb = if dry_run { "would delete" } else { "deleted" };
        let _ = writeln!(out, "  {verb:<10} {}", snap.deleted);
    }
    if snap.backed_up > 0 {
        let verb = if dry_run {
            "would back up"
        } else {
            "backed up"
        };
        let _ = writeln!(
            out,
            "  {verb:<10} {} (moved to --backup-dir)",
            snap.backed_up
        );
    }
    if snap.passed_over > 0 {
        let _ = writeln!(
            out,
            "  skipped    {} (symbolic links, each named in a warning above)",
            snap.passed_over
        );
    }
    if snap.archived > 0 {
        let what = match snap.restores_requested {
            0 => "not restored, so not copied; --include-archived requests restores".to_owned(),
            n => format!("restore requested for {n}; a later run copies them once restored"),
        };
        let _ = writeln!(out, "  archived   {} ({what})", snap.archived);
    }
    if let Some(limit) = stopped_by {
        let _ = writeln!(
            out,
            "  stopped    at {limit}: {} objects not started; a rerun continues",
            snap.not_started
        );
    }
    let _ = writeln!(out, "  failed     {}", snap.failed);
    let _ = writeln!(
        out,
        "  duration   {secs:.2}s, {:.1} objects/s, {:.2} MiB/s",
        per_second(snap.copied, snap.elapsed),
        per_second(snap.copied_bytes, snap.elapsed) / (1024.0 * 1024.0)
    );
    let requests: Vec<String> = snap
        .requests
        .iter()
        .map(|(op, n)| format!("{op}={n}"))
        .collect();
    let requests = if requests.is_empty() {
        "none".to_owned()
    } else {
        requests.join(" ")
    };
    let _ = writeln!(out, "  requests   {requests}");
    if snap.retries + snap.throttled + snap.server_errors > 0 {
        let _ = writeln!(
            out,
            "  retried    {} (answers: {} throttled, {} server errors)",
            snap.retries, snap.throttled, snap.server_errors
        );
    }
    if snap.object_retries > 0 {
        let _ = writeln!(
            out,
            "  recopied   {} objects from the start after a transient failure",
            snap.object_retries
        );
    }
    if let Some(lowest) = snap.lowest_concurrency {
        let _ = writeln!(
            out,
            "  throttled  concurrent transfers lowered to {lowest} at the least"
        );
    }
    write_failures(&mut out, snap, failures);
    out
}

fn write_failures(out: &mut String, snap: &Snapshot, failures: &[Failure]) {
    if failures.is_empty() {
        return;
    }
    let _ = writeln!(out, "failed objects:");
    for failure in failures {
        let _ = writeln!(out, "  {}: {}", failure.key, failure.message);
    }
    let unlisted = snap.failed.saturating_sub(failures.len() as u64);
    if unlisted > 0 {
        let _ = writeln!(out, "  ... and {unlisted} more");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn summary_lists_counts_requests_and_failures() {
        let snap = Snapshot {
            elapsed: Duration::from_secs(2),
            source_listed: 3,
            dest_listed: 1,
            copied: 2,
            copied_bytes: 2048,
            skipped: 1,
            failed: 2,
            requests: vec![("ListObjectsV2", 2), ("PutObject", 2)],
            ..Snapshot::default()
        };
        let failures = [Failure {
            key: "bad key".into(),
            message: "PutObject s3://b/bad key: AccessDenied".into(),
        }];
        let text = format_summary(&snap, &failures, false, None);
        assert!(
            text.contains("listed     3 source, 1 destination"),
            "{text}"
        );
        assert!(text.contains("copied     2 (2.00 KiB)"), "{text}");
        assert!(text.contains("duration   2.00s, 1.0 objects/s"), "{text}");
        assert!(
            text.contains("requests   ListObjectsV2=2 PutObject=2"),
            "{text}"
        );
        assert!(
            text.contains("  bad key: PutObject s3://b/bad key: AccessDenied"),
            "{text}"
        );
        assert!(text.contains("... and 1 more"), "{text}");
    }
}
