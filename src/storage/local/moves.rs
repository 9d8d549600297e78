//! Keeping a file (or a link kept as an object) of one local tree in another, for
//! `--backup-dir`: a hard link, or where the trees are on different file systems, a copy
//! made durable. The original stays until the overwrite or the delete that follows
//! replaces it, so a copy that then fails leaves the destination as it was.

use std::path::Path;

use super::LocalStore;
use crate::storage::ObjectError;

impl LocalStore {
    /// Keeps `key` of `from` as `target` here, replacing what was there.
    pub async fn keep_from(
        &self,
        from: &LocalStore,
        key: &str,
        target: &str,
    ) -> Result<(), ObjectError> {
        let described = self.describe(target);
        let fail = |why: &dyn std::fmt::Display| ObjectError::new("keep", &described, why);
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
        tokio::task::spawn_blocking(move || keep_path(&source, &path))
            .await
            .map_err(std::io::Error::other)
            .and_then(|moved| moved)
            .map_err(|err| fail(&err))
    }
}

fn keep_path(source: &Path, path: &Path) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)?;
    // Made under a temporary name, then renamed over what the name held before.
    let temp = super::write::temp_path(parent);
    let made = match std::fs::hard_link(source, &temp) {
        Err(err) if err.kind() == std::io::ErrorKind::CrossesDevices => copy_to(source, &temp),
        linked => linked,
    }
    .and_then(|()| std::fs::rename(&temp, path));
    if made.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    made
}

/// A durable copy of a file, or of a link itself, with its mtime.
fn copy_to(source: &Path, copy: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(source)?;
    if meta.file_type().is_symlink() {
        return std::os::unix::fs::symlink(std::fs::read_link(source)?, copy);
    }
    std::fs::copy(source, copy)?;
    let file = std::fs::OpenOptions::new().write(true).open(copy)?;
    file.set_modified(meta.modified()?)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_is_kept_below_its_key_with_the_suffix_and_replaces_an_older_one() {
        let (dest, backup) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(dest.path().join("a")).unwrap();
        std::fs::write(dest.path().join("a/f.txt"), b"old").unwrap();
        std::fs::create_dir_all(backup.path().join("a")).unwrap();
        std::fs::write(backup.path().join("a/f.txt.1"), b"older").unwrap();
        let (from, to) = (
            LocalStore::new(dest.path().to_path_buf()),
            LocalStore::new(backup.path().to_path_buf()),
        );
        to.keep_from(&from, "a/f.txt", "a/f.txt.1").await.unwrap();
        // The original stays until the overwrite or the delete that follows.
        assert_eq!(std::fs::read(dest.path().join("a/f.txt")).unwrap(), b"old");
        assert_eq!(
            std::fs::read(backup.path().join("a/f.txt.1")).unwrap(),
            b"old"
        );
        assert_eq!(
            std::fs::read_dir(backup.path().join("a")).unwrap().count(),
            1
        );
        let err = to
            .keep_from(&from, "a/gone.txt", "a/gone.txt.1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("keep"), "{err}");
    }
}
