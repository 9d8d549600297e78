//! Moving a file (or a link kept as an object) from one local tree into another, for
//! `--backup-dir`: a rename, or where the trees are on different file systems, a copy
//! that is made durable before the original is removed.

use std::path::Path;

use super::LocalStore;
use crate::storage::ObjectError;

impl LocalStore {
    /// Moves `key` of `from` to `target` here, replacing what was there.
    pub async fn move_from(
        &self,
        from: &LocalStore,
        key: &str,
        target: &str,
    ) -> Result<(), ObjectError> {
        let described = self.describe(target);
        let fail = |why: &dyn std::fmt::Display| ObjectError::new("move", &described, why);
        let source = match from.link_for(key) {
            Some(link) => link,
            None => from.path_for(key).map_err(|why| fail(&why))?,
        };
        let name = match from.link_for(key) {
            Some(_) => target.strip_suffix(super::LINK_SUFFIX).unwrap_or(target),
            None => target,
        };
        let path = self.path_for(name).map_err(|why| fail(&why))?;
        self.refuse_links_above(&path).map_err(|why| fail(&why))?;
        tokio::task::spawn_blocking(move || move_path(&source, &path))
            .await
            .map_err(std::io::Error::other)
            .and_then(|moved| moved)
            .map_err(|err| fail(&err))
    }
}

fn move_path(source: &Path, path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::rename(source, path) {
        Err(err) if err.kind() == std::io::ErrorKind::CrossesDevices => {}
        done => return done,
    }
    let meta = std::fs::symlink_metadata(source)?;
    if meta.file_type().is_symlink() {
        let _ = std::fs::remove_file(path);
        std::os::unix::fs::symlink(std::fs::read_link(source)?, path)?;
    } else {
        std::fs::copy(source, path)?;
        let copy = std::fs::OpenOptions::new().write(true).open(path)?;
        copy.set_modified(meta.modified()?)?;
        copy.sync_all()?;
    }
    std::fs::remove_file(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_moved_below_its_key_with_the_suffix_and_replaces_an_older_one() {
        let (dest, backup) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(dest.path().join("a")).unwrap();
        std::fs::write(dest.path().join("a/f.txt"), b"old").unwrap();
        std::fs::create_dir_all(backup.path().join("a")).unwrap();
        std::fs::write(backup.path().join("a/f.txt.1"), b"older").unwrap();
        let (from, to) = (
            LocalStore::new(dest.path().to_path_buf()),
            LocalStore::new(backup.path().to_path_buf()),
        );
        to.move_from(&from, "a/f.txt", "a/f.txt.1").await.unwrap();
        assert!(!dest.path().join("a/f.txt").exists());
        assert_eq!(
            std::fs::read(backup.path().join("a/f.txt.1")).unwrap(),
            b"old"
        );
        let err = to
            .move_from(&from, "a/f.txt", "a/f.txt.1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("move"), "{err}");
    }
}
