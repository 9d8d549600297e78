//! `s3mirror mount`: a bucket as a directory through FUSE. The rooms: `fs` (the state
//! they share and the attributes shown), `inodes` (the inode table), `namespace` (names
//! and listings), `rename`, `attrs` (mode, owner, times, size), `read` and `write` (open
//! files), `staging` (files being changed), `cache` (object data on disk), `meta` (modes
//! and times as metadata), `remote` (S3, over `storage::s3`), and `fuse`, the thin
//! adapter to the kernel.
//! See docs/mount.md for the semantics.

mod attrs;
mod cache;
pub mod fs;
mod fuse;
mod inodes;
mod meta;
mod namespace;
mod read;
pub mod remote;
mod rename;
mod staging;
mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::MountArgs;
use crate::config::{connection_settings, default_state_dir};
use crate::exit::ExitCode;
use crate::location::Location;
use crate::storage::s3::{
    build_client, requests::RequestCounts, ActiveUploads, Journal, Pacing, WriteOptions,
    MIN_PART_SIZE,
};
use crate::storage::S3Store;

pub use cache::ReadCache;
pub use fs::{Fs, FsSettings};
pub use remote::{Remote, S3Remote};

/// Mounts and serves until SIGINT/SIGTERM or an unmount (`umount`, `fusermount3 -u`).
/// Without `--foreground`, starts the serving process in the background and returns
/// once the mount is in place.
pub fn run(args: MountArgs) -> ExitCode {
    let (url, mountpoint) = match check(&args) {
        Ok(checked) => checked,
        Err(message) => {
            eprintln!("s3mirror: {message}");
            return ExitCode::Usage;
        }
    };
    if !args.foreground {
        return start_in_background(&args, &mountpoint);
    }
    match serve(args, url, &mountpoint) {
        Ok(()) => ExitCode::Success,
        Err(message) => {
            eprintln!("s3mirror: {message}");
            ExitCode::Fatal
        }
    }
}

/// The bucket location and the mount point, or why they cannot be used.
fn check(args: &MountArgs) -> Result<(crate::location::S3Url, PathBuf), String> {
    let url = match Location::parse(&args.bucket) {
        Ok(Location::S3(url)) => url,
        Ok(Location::Local(_)) => {
            return Err(format!(
                "{:?}: mount needs s3://bucket[/prefix]",
                args.bucket
            ))
        }
        Err(err) => return Err(err.to_string()),
    };
    let mountpoint = std::fs::canonicalize(&args.mountpoint)
        .map_err(|err| format!("mount point {}: {err}", args.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        return Err(format!(
            "mount point {} is not a directory",
            mountpoint.display()
        ));
    }
    if is_mounted(&mountpoint) {
        return Err(format!("{} is already a mount point", mountpoint.display()));
    }
    mount_options(args)?;
    if let Some(dir) = &args.cache_dir {
        warn_if_shared(dir);
    }
    if args.part_size < MIN_PART_SIZE {
        return Err(format!(
            "--part-size must be at least 5MiB (the S3 minimum), not {} bytes",
            args.part_size
        ));
    }
    Ok((url, mountpoint))
}

/// What `-o` and the flags ask of the mount, merged.
struct MountOptions {
    allow_other: bool,
    read_only: bool,
    uid: u32,
    gid: u32,
}

fn mount_options(args: &MountArgs) -> Result<MountOptions, String> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let mut options = MountOptions {
        allow_other: args.allow_other,
        read_only: args.read_only,
        uid: args.uid.unwrap_or(uid),
        gid: args.gid.unwrap_or(gid),
    };
    let number = |option: &str, value: &str| {
        value
            .parse::<u32>()
            .map_err(|_| format!("-o {option}={value}: not a number"))
    };
    for option in args.options.iter().flat_map(|o| o.split(',')) {
        match option.split_once('=') {
            None if option == "allow_other" => options.allow_other = true,
            None if option == "ro" => options.read_only = true,
            None if matches!(option, "rw" | "default_permissions" | "noatime" | "") => {}
            Some(("uid", value)) => options.uid = number("uid", value)?,
            Some(("gid", value)) => options.gid = number("gid", value)?,
            _ => {
                return Err(format!(
                    "-o {option}: not a mount option s3mirror knows (allow_other, ro, rw, uid=N, gid=N)"
                ))
            }
        }
    }
    Ok(options)
}

fn serve(args: MountArgs, url: crate::location::S3Url, mountpoint: &Path) -> Result<(), String> {
    let options = mount_options(&args)?;
    let client_settings = connection_settings(&args.connection).map_err(|err| err.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| format!("starting the runtime: {err}"))?;
    let client = runtime.block_on(build_client(
        &client_settings,
        Arc::new(RequestCounts::default()),
        &Pacing::default(),
    ));
    let state_dir = args.state_dir.clone().or_else(default_state_dir);
    let uploads = Arc::new(match &state_dir {
        Some(dir) => ActiveUploads::with_journal(Journal::new(dir.join("uploads"))),
        None => ActiveUploads::default(),
    });
    let Ok(Location::S3(bucket_root)) = Location::parse(&format!("s3://{}", url.bucket())) else {
        return Err(format!("{url}: not a bucket"));
    };
    let store = S3Store::new(
        client,
        bucket_root,
        WriteOptions::default(),
        Arc::clone(&uploads),
    )
    .with_endpoint(client_settings.endpoint_url.as_deref());
    let remote = Arc::new(S3Remote { store });
    // Fail now, with the server's reason, rather than on the first `ls`.
    runtime
        .block_on(remote.first_key(url.prefix()))
        .map_err(|err| err.message)?;
    match runtime.block_on(remote.store.abort_orphans()) {
        Ok(0) => {}
        Ok(n) => eprintln!("s3mirror: aborted {n} multipart uploads left by killed runs"),
        Err(err) => tracing::warn!("{err}"),
    }

    // The mount's own directory, 0700 with a name no one can guess: in --cache-dir, or
    // in the temporary directory. Removed at unmount.
    let cache_root = match &args.cache_dir {
        Some(dir) => {
            // A --cache-dir that does not exist yet is made, for this user only.
            if !dir.exists() {
                crate::private::create_dir(dir)
                    .map_err(|err| format!("--cache-dir {}: {err}", dir.display()))?;
            }
            tempfile::Builder::new()
                .prefix("s3mirror-mount-")
                .tempdir_in(dir)
        }
        None => tempfile::Builder::new().prefix("s3mirror-mount-").tempdir(),
    }
    .map_err(|err| format!("creating the mount's cache directory: {err}"))?;
    let cache_dir = cache_root.path().to_path_buf();
    let cache = ReadCache::new(cache_dir.join("read"), args.cache_size)
        .map_err(|err| format!("cache directory {}: {err}", cache_dir.display()))?;
    let staging_dir = cache_dir.join("staging");
    crate::private::create_dir(&staging_dir)
        .map_err(|err| format!("staging directory {}: {err}", staging_dir.display()))?;
    let settings = FsSettings {
        prefix: url.prefix().to_owned(),
        ttl: args.metadata_ttl,
        read_only: options.read_only,
        part_size: args.part_size,
        file_mode: args.file_mode,
        dir_mode: args.dir_mode,
        uid: options.uid,
        gid: options.gid,
        staging_dir,
    };
    let fs = Arc::new(Fs::new(remote, cache, settings));
    let fuse = fuse::Fuse::new(Arc::clone(&fs), runtime.handle().clone());

    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("s3mirror:{}/{}", url.bucket(), url.prefix())),
        fuser::MountOption::Subtype("s3mirror".into()),
        // The kernel checks modes against the caller, as for any file system.
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoAtime,
    ];
    if options.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    if options.read_only {
        config.mount_options.push(fuser::MountOption::RO);
    }
    // Caught before the mount appears, so a signal sent once it is seen unmounts it.
    let mut signals = {
        let _inside = runtime.enter();
        crate::sync::ShutdownSignal::listen()
    };
    let session = fuser::spawn_mount(fuse, mountpoint, &config).map_err(|err| {
        format!(
            "mounting on {}: {err}; mounting needs /dev/fuse, and root or fusermount3 (Debian package fuse3)",
            mountpoint.display()
        )
    })?;
    eprintln!("s3mirror: mounted {url} on {}", mountpoint.display());

    let signalled = runtime.block_on(async {
        tokio::select! {
            () = signals.recv() => true,
            () = unmounted(mountpoint) => false,
        }
    });
    if signalled {
        if let Err(err) = session.umount_and_join() {
            // Files still open keep the kernel from unmounting at once: detach instead.
            tracing::warn!("unmounting {}: {err}; detaching it", mountpoint.display());
            lazy_unmount(mountpoint);
        }
    } else {
        let _ = session.join();
    }
    let keep_dir = state_dir
        .unwrap_or_else(std::env::temp_dir)
        .join("unsaved")
        .join(format!("{}-{}", url.bucket(), std::process::id()));
    let kept = runtime.block_on(fs.shut_down(&keep_dir));
    drop(fs);
    if let Some(journal) = uploads.journal() {
        // Every upload has ended: the record goes (it stays while one is open).
        journal.close();
    }
    drop(cache_root);
    if !kept.is_empty() {
        eprintln!(
            "s3mirror: {} files written through the mount are not in the bucket; their last contents are in {}",
            kept.len(),
            keep_dir.display()
        );
    } else if let Some(log) = std::env::var_os(BACKGROUND_LOG) {
        // A clean unmount: the log this mount was started with has nothing to keep.
        let _ = std::fs::remove_file(log);
    }
    eprintln!("s3mirror: unmounted {}", mountpoint.display());
    Ok(())
}

/// Set for a mount started in the background with a log of its own: the log's path,
/// removed at a clean unmount.
const BACKGROUND_LOG: &str = "S3MIRROR_BACKGROUND_LOG";

/// Warns when a --cache-dir others may enter: the mount's own directory inside it is
/// private, but the choice is worth a second look.
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        if meta.mode() & 0o077 != 0 {
            eprintln!(
                "s3mirror: warning: --cache-dir {} is open to other users (mode {:o}); the \
                 mount keeps its data in a private directory inside it",
                dir.display(),
                meta.mode() & 0o7777
            );
        }
    }
}

/// Where the background mount's messages go: --log-file, else a new file of mode 0600
/// in a private directory, made exclusively (a link planted at its name cannot redirect
/// it).
fn background_log(args: &MountArgs) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    if let Some(path) = &args.log_file {
        // The server appends there itself (see main's --log-file handling).
        return Ok((path.clone(), None));
    }
    let state_dir = args.state_dir.clone().or_else(default_state_dir);
    let dir = crate::private::runtime_dir(state_dir.as_deref())?;
    let (file, path) = tempfile::Builder::new()
        .prefix("mount-")
        .suffix(".log")
        .tempfile_in(dir)?
        .keep()
        .map_err(|err| err.error)?;
    Ok((path, Some(file)))
}

/// Starts `s3mirror mount ... --foreground` in its own session and waits until the
/// bucket is mounted, or tells why it could not be.
fn start_in_background(args: &MountArgs, mountpoint: &Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let (log, log_file) = match background_log(args) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("s3mirror: creating the mount's log: {err}");
            return ExitCode::Fatal;
        }
    };
    let generated = log_file.is_some();
    let started = std::env::current_exe().and_then(|exe| {
        let mut command = std::process::Command::new(exe);
        command
            .args(std::env::args_os().skip(1))
            .arg("--foreground")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        match log_file {
            Some(file) => {
                command.stderr(file).env(BACKGROUND_LOG, &log);
            }
            None => {
                command.stderr(std::process::Stdio::null());
            }
        }
        // SAFETY: setsid is async-signal-safe (one system call, no allocation); the child
        // leaves the terminal's session.
        unsafe {
            command.pre_exec(|| {
                let _ = rustix::process::setsid();
                Ok(())
            });
        }
        command.spawn()
    });
    let mut child = match started {
        Ok(child) => child,
        Err(err) => {
            eprintln!("s3mirror: starting the mount: {err}");
            return ExitCode::Fatal;
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if is_mounted(mountpoint) {
            eprintln!(
                "s3mirror: mounted on {} (pid {}, messages in {}); unmount with `umount {}`",
                mountpoint.display(),
                child.id(),
                log.display(),
                mountpoint.display()
            );
            return ExitCode::Success;
        }
        if let Ok(Some(status)) = child.try_wait() {
            if generated {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                eprint!("{said}");
                let _ = std::fs::remove_file(&log);
                eprintln!("s3mirror: the mount did not start ({status})");
            } else {
                eprintln!(
                    "s3mirror: the mount did not start ({status}); see {}",
                    log.display()
                );
            }
            return ExitCode::Fatal;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "s3mirror: {} was not mounted within a minute; see {}",
        mountpoint.display(),
        log.display()
    );
    ExitCode::Fatal
}

/// Whether `path` (canonical) is a mount point now, from /proc/self/mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = escape_mount_path(&path.to_string_lossy());
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

/// Mount points in mountinfo have space, tab, newline and backslash as octal escapes.
fn escape_mount_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Resolves once the mount point is no longer mounted (unmounted from outside).
async fn unmounted(path: &Path) {
    while is_mounted(path) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Detaches the mount (MNT_DETACH): the kernel ends it once its open files are closed.
fn lazy_unmount(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_found_with_their_escapes() {
        assert!(is_mounted(Path::new("/proc")));
        assert!(!is_mounted(Path::new("/proc/self")));
        assert_eq!(escape_mount_path("/a b\\c"), "/a\\040b\\134c");
    }
}
