//! The s3mirror binary: parse, set up logging, run, map the result to an exit code.

use s3mirror::cli::{completion_script, man_page, Cli, Command};
use s3mirror::config::SyncSettings;
use s3mirror::exit::ExitCode;
use s3mirror::sync::{self, Outcome, RunError};
use s3mirror::ui::MetricsFile;
use std::io::IsTerminal;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = match Cli::parse_with_default(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::Success
                }
                _ => ExitCode::Usage,
            }
            .into();
        }
    };
    match &cli.command {
        Command::Completions(args) => return print(&completion_script(args.shell)),
        Command::Man(args) => {
            return match man_page(args.subcommand.as_deref()) {
                Ok(page) => print(&page),
                Err(err) => {
                    eprintln!("s3mirror: {err}");
                    ExitCode::Usage.into()
                }
            }
        }
        _ => {}
    }
    if let Command::Mount(args) = cli.command {
        if let Some(path) = &args.log_file {
            if let Err(err) = log_to(path) {
                eprintln!("s3mirror: --log-file {}: {err}", path.display());
                return ExitCode::Usage.into();
            }
        }
        init_logging(args.verbose);
        return s3mirror::mount::run(args).into();
    }
    let common = match &cli.command {
        Command::Sync(args) => &args.common,
        Command::Verify(args) => &args.common,
        Command::Plan(args) => &args.common,
        Command::Mount(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled above")
        }
    };
    if let Some(path) = &common.log_file {
        if let Err(err) = log_to(path) {
            eprintln!("s3mirror: --log-file {}: {err}", path.display());
            return ExitCode::Usage.into();
        }
    }
    init_logging(common.verbose);
    let (settings, verify, plan) = match cli.command {
        Command::Sync(args) => (SyncSettings::from_args(*args), false, None),
        Command::Verify(args) => (SyncSettings::for_verify(args), true, None),
        Command::Plan(args) => {
            let shards = args.shards as usize;
            (SyncSettings::for_plan(args), false, Some(shards))
        }
        Command::Mount(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled above")
        }
    };
    let settings = match settings {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("s3mirror: {err}");
            return ExitCode::Usage.into();
        }
    };
    raise_open_file_limit();
    // One thread runs every task: the per-object work is small, and cross-thread wake-ups
    // cost more CPU than it (measured: 15% less CPU per object than two worker threads).
    // Hashing and file I/O that may wait for a disk run in the blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(shards) = plan {
        return match runtime.block_on(sync::plan(settings, shards)) {
            Ok(boundaries) => {
                for boundary in boundaries {
                    println!("{boundary}");
                }
                ExitCode::Success
            }
            Err(err) => {
                eprintln!("s3mirror: {err}");
                ExitCode::Fatal
            }
        }
        .into();
    }
    // The metrics are the first run's; the verify after a sync only decides the exit code.
    let metrics = settings
        .output
        .metrics
        .clone()
        .map(|metrics| Arc::new(MetricsFile::new(metrics, verify, settings.dry_run)));
    let first = runtime.block_on(sync::run(settings.clone(), metrics.clone()));
    let code = match verify {
        true => verify_code(first),
        false => {
            let code = sync_code(first);
            match code == ExitCode::Success && settings.verify_after {
                true => verify_code(runtime.block_on(sync::run(settings.verify_settings(), None))),
                false => code,
            }
        }
    };
    if let Some(metrics) = metrics {
        metrics.finish(code as i32);
    }
    code.into()
}

/// Writes generated text to stdout; a closed pipe (`| head`) is not an error worth a
/// message.
fn print(text: &[u8]) -> std::process::ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::Success.into(),
        Err(_) => ExitCode::Fatal.into(),
    }
}

fn sync_code(result: Result<Outcome, RunError>) -> ExitCode {
    match result {
        Ok(outcome) if outcome.failed == 0 && outcome.stopped_by.is_some() => ExitCode::Budget,
        Ok(outcome) if outcome.failed == 0 => ExitCode::Success,
        Ok(_) => ExitCode::ObjectsFailed,
        Err(err) => {
            eprintln!("s3mirror: {err}");
            match err {
                RunError::Interrupted(_) => ExitCode::Interrupted,
                RunError::Setup(_) | RunError::Listing(_) => ExitCode::Fatal,
            }
        }
    }
}

/// A verify's status: 0 identical, 1 differences, 2 when something could not be
/// compared or the run could not proceed.
fn verify_code(result: Result<Outcome, RunError>) -> ExitCode {
    match result {
        Ok(outcome) if outcome.failed > 0 => ExitCode::VerifyError,
        Ok(outcome) if outcome.copied + outcome.extra > 0 => ExitCode::Differences,
        Ok(_) => ExitCode::Success,
        Err(err @ RunError::Interrupted(_)) => {
            eprintln!("s3mirror: {err}");
            ExitCode::Interrupted
        }
        Err(err) => {
            eprintln!("s3mirror: {err}");
            ExitCode::VerifyError
        }
    }
}

/// Sends everything written to stderr from now on to the end of `path`, after a line
/// that says when which process started, so that runs appended to one log can be told
/// apart. (Not the arguments: a mistyped one could hold a secret.)
fn log_to(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(
        file,
        "== {} s3mirror {} (pid {})",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    )?;
    // dup2 replaces stderr atomically.
    rustix::stdio::dup2_stderr(&file)?;
    Ok(())
}

/// Warnings by default, debug with `-vv`; `RUST_LOG` overrides. The SDK's own crates stay
/// at warn unless asked for, since their debug output is about requests, not objects. The
/// credential chain's warning about each provider that failed is left to `-vv`: it dumps
/// the provider's raw answer (its headers too), and the run's own error already names the
/// cause and the fix.
fn init_logging(verbose: u8) {
    let default = if verbose >= 2 {
        "s3mirror=debug,warn"
    } else {
        "warn,aws_config::meta::credentials::chain=error"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// Raises the soft limit on open files to the hard one: every transfer holds a
/// connection, a local file and, for a file waiting for its sync, one more descriptor,
/// so `--threads 500` needs more than the 1,024 many systems allow by default.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        // Kept as it was if refused: the run goes on within it.
        let _ = setrlimit(Resource::Nofile, limit);
    }
}
