//! What the engine reports as it goes: one event per object copied, deleted, failed or
//! passed over, and the run's notices. The planner and the workers emit them through a
//! `Reporter`; what reaches the terminal or a file is the UI's business, not theirs.

use std::time::Duration;

use super::CopyReason;

/// Something that happened to one object, or once in a run.
#[derive(Debug)]
pub enum Event<'a> {
    Copied {
        /// The key, relative to both sides' roots.
        key: &'a str,
        target: &'a str,
        bytes: u64,
        reason: CopyReason,
        dry_run: bool,
        /// How long the copy took (or the comparison, in a dry run).
        duration: Duration,
    },
    Deleted {
        key: &'a str,
        target: &'a str,
        dry_run: bool,
    },
    /// A key only the destination has, reported by a verify.
    Extra { key: &'a str },
    Failed {
        /// The object's key; none for a failure of the run (an unreadable directory
        /// entry, a refused `--delete`).
        key: Option<&'a str>,
        message: &'a str,
    },
    /// A transient failure; the object is copied again from the start.
    Retrying {
        key: &'a str,
        message: &'a str,
        attempt: u32,
        attempts: u32,
    },
    /// An entry passed over with a warning (a symbolic link that leads nowhere).
    PassedOver { key: &'a str, reason: &'a str },
    /// An archived object with no restored copy, not copied; `restore` says what became
    /// of the restore request, when one was made.
    Archived {
        key: &'a str,
        storage_class: &'a str,
        restore: Option<&'a str>,
    },
    /// An object of the destination moved to `--backup-dir` before being overwritten or
    /// deleted (or, in a dry run, that would be).
    BackedUp {
        key: &'a str,
        target: &'a str,
        dry_run: bool,
    },
    /// Said once per run, such as why bytes are streamed through this machine.
    Notice(&'a str),
}

/// Receives the engine's events. Implementations must be cheap: workers call them.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event<'_>);
}
