//! Process exit codes; README.md documents the same table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every object is in place (or, in a dry run, would be).
    Success = 0,
    /// The run finished but some objects failed; the summary lists them.
    ObjectsFailed = 1,
    /// Invalid arguments; nothing was done.
    Usage = 2,
    /// The run could not proceed: a listing failed, a bucket or directory is missing,
    /// or credentials were refused.
    Fatal = 3,
    /// Stopped at `--max-duration` or `--max-transfer`: what was copied is in place, and
    /// a rerun continues with the rest.
    Budget = 4,
    /// Stopped by SIGINT or SIGTERM; multipart uploads in progress were aborted.
    Interrupted = 130,
}

impl ExitCode {
    /// `verify`: the two sides differ.
    #[allow(non_upper_case_globals)]
    pub const Differences: ExitCode = ExitCode::ObjectsFailed;
    /// `verify`: some keys could not be compared, or the comparison could not run.
    #[allow(non_upper_case_globals)]
    pub const VerifyError: ExitCode = ExitCode::Usage;
}

/// The status of a second interrupt, which exits at once.
pub const INTERRUPTED: i32 = ExitCode::Interrupted as i32;

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
