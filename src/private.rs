//! Directories and files s3mirror makes for itself (caches, staging, state, journals,
//! logs): directories 0700 and files 0600, owned by the user running s3mirror, and never
//! reached through a symbolic link planted in their place.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::OFlags;

/// Creates `dir` (and missing parents) as 0700, or makes an existing one of ours 0700.
/// Refuses a directory that is a symbolic link or belongs to another user: whoever owns
/// it could read what goes in.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory (a symbolic link?); refusing to keep private data there",
            dir.display()
        )));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::other(format!(
            "{} belongs to user {}, not to this one ({me}); refusing to keep private data there",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates a new file of mode 0600; fails if anything, a link included, is in the way.
pub fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Opens a file of ours for appending, made 0600 if new; never through a link.
pub fn append_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// A private directory for this user's short-lived files (the background mount's log):
/// `$XDG_RUNTIME_DIR/s3mirror`, else `STATE_DIR/run`.
pub fn runtime_dir(state_dir: Option<&Path>) -> io::Result<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir());
    let dir = match (runtime, state_dir) {
        (Some(runtime), _) => runtime.join("s3mirror"),
        (None, Some(state)) => state.join("run"),
        (None, None) => {
            return Err(io::Error::other(
                "no private directory for the log: set XDG_RUNTIME_DIR, HOME or --log-file",
            ))
        }
    };
    create_dir(&dir)?;
    Ok(dir)
}

/// The mode a file created by this process would get: 0666 less the umask.
pub fn default_file_mode() -> u32 {
    static MODE: OnceLock<u32> = OnceLock::new();
    *MODE.get_or_init(|| {
        // Read, not set: setting the umask to learn it would race with other threads.
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("Umask:"))
                    .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
            })
            .unwrap_or(0o022);
        0o666 & !umask
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_private_and_links_are_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().mode() & 0o777,
            0o700,
            "tightened"
        );
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(create_dir(&link).is_err());

        let file = dir.join("f");
        create_file(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert!(create_file(&file).is_err(), "never over an existing file");
        let victim = base.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let planted = dir.join("planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_file(&planted).is_err());
        assert!(append_file(&planted).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn the_default_mode_follows_the_umask() {
        assert_eq!(default_file_mode() & !0o666, 0);
        assert_ne!(default_file_mode() & 0o600, 0);
    }
}
