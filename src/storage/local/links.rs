//! Symbolic links kept as objects (`--links`), the way rclone keeps them: a link `NAME`
//! is the object `NAME.rclonelink` whose content is the link's target, and such an
//! object becomes a link again in a local destination. The link itself is copied, never
//! what it points to, so a link to nothing or to a directory is as good as any other.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::LocalStore;
use crate::storage::{Entry, ObjectError};

/// Appended to a link's name to make its key.
pub const LINK_SUFFIX: &str = ".rclonelink";

/// The longest target a link may have (PATH_MAX); a bigger object is no link.
pub const MAX_TARGET: u64 = 4096;

/// What a walk does with a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Lists what the link points to (the default); a link to nothing is passed over.
    Follow,
    /// Passes over every link (`--no-follow-symlinks`).
    Skip,
    /// Lists the link itself as `NAME.rclonelink` holding its target (`--links`).
    Store,
}

/// The entry a walk lists for link `path` under key `key` (its name and the suffix).
pub(super) fn link_entry(key: String, path: &Path) -> std::io::Result<Entry> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok(Entry {
        key,
        size: std::fs::read_link(path)?.as_os_str().len() as u64,
        mtime: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
        etag: None,
        skip: None,
        storage_class: None,
        version: None,
    })
}

impl LocalStore {
    /// The symbolic link that `key` stands for, when links are kept as objects and the
    /// key names one that exists.
    pub fn link_for(&self, key: &str) -> Option<PathBuf> {
        if self.links != LinkMode::Store {
            return None;
        }
        let name = key.strip_suffix(LINK_SUFFIX)?;
        let path = self.path_for(name).ok()?;
        let meta = std::fs::symlink_metadata(&path).ok()?;
        meta.file_type().is_symlink().then_some(path)
    }

    /// Whether objects named `NAME.rclonelink` become links here.
    pub fn makes_links(&self, key: &str) -> bool {
        self.links == LinkMode::Store && key.ends_with(LINK_SUFFIX) && key != LINK_SUFFIX
    }

    /// The target of the link `key` stands for, as the object's content; None when the
    /// key names no link.
    pub async fn read_link(&self, key: &str) -> Result<Option<Vec<u8>>, ObjectError> {
        let Some(path) = self.link_for(key) else {
            return Ok(None);
        };
        let target = tokio::fs::read_link(&path)
            .await
            .map_err(|err| ObjectError::new("read link", path.display().to_string(), err))?;
        Ok(Some(target.into_os_string().into_vec()))
    }

    /// The entry of the link `key` stands for, as a walk would list it now.
    pub fn stat_link(&self, key: &str) -> Option<std::io::Result<Entry>> {
        let path = self.link_for(key)?;
        Some(link_entry(key.to_owned(), &path))
    }

    /// Makes `key` (`NAME.rclonelink`) the link `NAME` to `target`, with `mtime`. The
    /// link is made under a temporary name and renamed over whatever file or link was
    /// there, so the name is never missing; a directory in the way is an error.
    pub async fn write_link(
        &self,
        key: &str,
        target: Vec<u8>,
        mtime: SystemTime,
    ) -> Result<(), ObjectError> {
        let name = key.strip_suffix(LINK_SUFFIX).unwrap_or(key);
        let described = self.describe(name);
        let fail = |why: &dyn std::fmt::Display| ObjectError::new("make link", &described, why);
        if target.is_empty() || target.contains(&0) {
            return Err(fail(&not_a_target(target.len() as u64)));
        }
        let path = self.path_for(name).map_err(|why| fail(&why))?;
        self.refuse_links_above(&path).map_err(|why| fail(&why))?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Err(fail(
                &"a directory is in the way: the bucket holds both a link and a directory of this name",
            ));
        }
        let parent = path.parent().unwrap_or(self.root()).to_path_buf();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&parent)?;
            let temp = super::write::temp_path(&parent);
            std::os::unix::fs::symlink(OsString::from_vec(target), &temp)?;
            let made = set_link_mtime(&temp, mtime).and_then(|()| std::fs::rename(&temp, &path));
            if made.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            made
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|made| made)
        .map_err(|err| fail(&err))
    }
}

/// Why an object cannot be made a link: too big, empty, or holding a NUL.
pub fn not_a_target(size: u64) -> String {
    format!(
        "the object holds {size} bytes, which are not a link target; mirror it without --links to get it as a file"
    )
}

/// Sets a link's own modification time (not its target's), so that the next run finds
/// it unchanged.
fn set_link_mtime(path: &Path, mtime: SystemTime) -> std::io::Result<()> {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let since = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let at = Timespec {
        tv_sec: since.as_secs() as i64,
        tv_nsec: since.subsec_nanos() as _,
    };
    let times = Timestamps {
        last_access: at,
        last_modification: at,
    };
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    utimensat(CWD, &path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(root: &Path) -> LocalStore {
        LocalStore::new(root.to_path_buf()).with_links(LinkMode::Store)
    }

    #[tokio::test]
    async fn a_link_is_read_as_its_target_and_made_again_with_its_mtime() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("../elsewhere/file", dir.path().join("to")).unwrap();
        let links = store(dir.path());
        let target = links.read_link("to.rclonelink").await.unwrap().unwrap();
        assert_eq!(target, b"../elsewhere/file");
        assert!(links.read_link("to").await.unwrap().is_none());
        let entry = links.stat_link("to.rclonelink").unwrap().unwrap();
        assert_eq!(entry.size, target.len() as u64);

        let copy = tempfile::tempdir().unwrap();
        let made = store(copy.path());
        let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        made.write_link("sub/to.rclonelink", target.clone(), mtime)
            .await
            .unwrap();
        let link = copy.path().join("sub/to");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../elsewhere/file")
        );
        assert_eq!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
        // Made again over a file of the same name.
        std::fs::remove_file(&link).unwrap();
        std::fs::write(&link, b"a file").unwrap();
        made.write_link("sub/to.rclonelink", b"new".to_vec(), mtime)
            .await
            .unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("new"));
    }

    #[tokio::test]
    async fn what_cannot_be_a_link_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let links = store(dir.path());
        let mtime = SystemTime::now();
        for body in [Vec::new(), b"a\0b".to_vec()] {
            let err = links
                .write_link("l.rclonelink", body, mtime)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("without --links"), "{err}");
        }
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let err = links
            .write_link("d.rclonelink", b"t".to_vec(), mtime)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("directory is in the way"), "{err}");
    }
}
