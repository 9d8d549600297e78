//! Run budgets for a maintenance window: `--max-duration` and `--max-transfer`. Once one
//! is reached no new copy starts and the listing stops; copies in flight finish (with
//! `--cutoff hard`, they are aborted at the deadline instead, their multipart uploads
//! with them), deletions are left for a run that copies everything, and the run exits 4. A rerun continues where this one stopped: what was copied is in place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The budget that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Duration(Duration),
    Transfer(u64),
}

impl Limit {
    /// The option, as the summary and the JSON name it.
    pub fn option(self) -> &'static str {
        match self {
            Limit::Duration(_) => "--max-duration",
            Limit::Transfer(_) => "--max-transfer",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Limit::Duration(d) => write!(f, "--max-duration {}", humantime::format_duration(d)),
            Limit::Transfer(bytes) => {
                write!(f, "--max-transfer {}", indicatif::HumanBytes(bytes))
            }
        }
    }
}

#[derive(Debug)]
pub struct Budget {
    max_duration: Option<Duration>,
    deadline: Option<Instant>,
    max_bytes: Option<u64>,
    /// Bytes of the copies started so far.
    started_bytes: AtomicU64,
    stopped: OnceLock<Limit>,
}

impl Budget {
    /// A budget counted from now.
    pub fn new(max_duration: Option<Duration>, max_bytes: Option<u64>) -> Self {
        Self {
            max_duration,
            deadline: max_duration.map(|d| Instant::now() + d),
            max_bytes,
            started_bytes: AtomicU64::new(0),
            stopped: OnceLock::new(),
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None, None)
    }

    /// Whether a copy of `bytes` may start: none once a budget is reached. The transfer
    /// budget admits copies while the bytes started before them are under it, so the
    /// copies in flight may end a little above it.
    pub fn admit(&self, bytes: u64) -> bool {
        if self.stopped().is_some() {
            return false;
        }
        if let (Some(deadline), Some(max)) = (self.deadline, self.max_duration) {
            if Instant::now() >= deadline {
                let _ = self.stopped.set(Limit::Duration(max));
                return false;
            }
        }
        if let Some(max) = self.max_bytes {
            let before = self.started_bytes.fetch_add(bytes, Ordering::Relaxed);
            if before >= max {
                self.started_bytes.fetch_sub(bytes, Ordering::Relaxed);
                let _ = self.stopped.set(Limit::Transfer(max));
                return false;
            }
        }
        true
    }

    /// The budget that was reached, if one was.
    pub fn stopped(&self) -> Option<Limit> {
        if let (None, Some(deadline), Some(max)) =
            (self.stopped.get(), self.deadline, self.max_duration)
        {
            if Instant::now() >= deadline {
                let _ = self.stopped.set(Limit::Duration(max));
            }
        }
        self.stopped.get().copied()
    }

    /// When `--max-duration` ends, if it was given.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Records that the deadline cut the run short (`--cutoff hard`).
    pub fn cut_off(&self) {
        if let Some(max) = self.max_duration {
            let _ = self.stopped.set(Limit::Duration(max));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transfer_budget_admits_copies_while_under_it_then_none() {
        let budget = Budget::new(None, Some(100));
        assert!(budget.admit(60));
        assert!(budget.admit(60), "40 bytes were left: this one may start");
        assert!(!budget.admit(1));
        assert!(!budget.admit(0), "once reached, nothing starts");
        assert_eq!(budget.stopped(), Some(Limit::Transfer(100)));
        assert_eq!(
            budget.stopped().unwrap().to_string(),
            "--max-transfer 100 B"
        );
    }

    #[test]
    fn the_duration_budget_stops_at_its_deadline() {
        let budget = Budget::new(Some(Duration::from_millis(30)), None);
        assert!(budget.admit(1 << 40));
        assert_eq!(budget.stopped(), None);
        std::thread::sleep(Duration::from_millis(40));
        assert!(!budget.admit(1));
        assert_eq!(budget.stopped().unwrap().option(), "--max-duration");
        assert!(Budget::unlimited().admit(u64::MAX));
    }
}
