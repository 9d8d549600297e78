//! Local-directory side of a mirror: a sorted walk for listing, and writes that never
//! leave a partial file under its final name.

mod durable;
mod hash;
mod links;
mod moves;
mod walk;
mod write;

use std::path::{Path, PathBuf};

use crate::storage::{KeyRange, Listing};

pub use hash::{
    as_md5, bytes_digests, digests_as_written, file_digests, read_small, DigestRequest, Digests,
    FileDigests, Md5Digest, SmallFile,
};
pub use links::{not_a_target, LinkMode, LINK_SUFFIX, MAX_TARGET as MAX_LINK_TARGET};
pub use write::{remove_temps_in_flight, Incoming, Landing};

/// Name prefix of s3mirror's temporary files; listings skip them, so a leftover from a
/// crash is neither uploaded nor mistaken for a finished file.
pub const TEMP_PREFIX: &str = ".s3mirror-tmp-";

pub struct LocalStore {
    root: PathBuf,
    /// What a walk does with symbolic links, and whether `NAME.rclonelink` keys are
    /// links here.
    links: LinkMode,
    /// Directories this run has made or found, so most writes skip those checks.
    dirs: std::sync::Arc<write::KnownDirs>,
    /// How its files are made durable before their rename: in groups where it can.
    durability: std::sync::Arc<durable::Durability>,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            links: LinkMode::Follow,
            dirs: Default::default(),
            durability: Default::default(),
        }
    }

    pub fn with_links(mut self, links: LinkMode) -> Self {
        self.links = links;
        self
    }

    /// Gives each file written its own fsync, never a syncfs of the file system.
    pub fn with_fsync_each_file(mut self, each_file: bool) -> Self {
        if each_file {
            self.durability = std::sync::Arc::new(durable::Durability::each_file());
        }
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn describe(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    /// The names right below relative prefix `below` (files, and directories ending in
    /// `/`), in key order, at most `limit` of them.
    pub fn level(&self, below: &str, limit: usize) -> Result<Vec<String>, String> {
        let dir = self.root.join(below);
        let names = walk::names_in(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        Ok(names
            .into_iter()
            .take(limit)
            .map(|name| format!("{below}{name}"))
            .collect())
    }

    /// Walks the tree, skipping directories that hold no key of `range`.
    pub fn list(&self, range: KeyRange) -> Listing {
        let (tx, listing) = Listing::channel();
        let (root, links) = (self.root.clone(), self.links);
        tokio::task::spawn_blocking(move || walk::walk(&root, &range, links, &tx));
        listing
    }

    /// Refuses a path below the root whose directories include a symbolic link: writing
    /// or deleting through it would reach outside the destination tree. (A link at the
    /// final name is fine: a rename replaces it, a delete removes the link itself.)
    pub fn refuse_links_above(&self, path: &Path) -> Result<(), String> {
        refuse_links_between(&self.root, path)
    }

    /// The path a key maps to, refusing keys that would escape the root or that no
    /// file system can hold.
    pub fn path_for(&self, key: &str) -> Result<PathBuf, &'static str> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

impl LocalStore {
    /// The file for `key` as a listing would report it now.
    pub async fn stat(
        &self,
        key: &str,
    ) -> Result<crate::storage::Entry, crate::storage::ObjectError> {
        let fail = |err: &dyn std::fmt::Display| {
            crate::storage::ObjectError::new("stat", self.describe(key), err)
        };
        if let Some(link) = self.stat_link(key) {
            return link.map_err(|err| fail(&err));
        }
        let path = self.path_for(key).map_err(|why| fail(&why))?;
        let meta = tokio::fs::metadata(&path).await.map_err(|err| fail(&err))?;
        Ok(crate::storage::Entry {
            key: key.to_owned(),
            size: meta.len(),
            mtime: meta.modified().map_err(|err| fail(&err))?,
            etag: None,
            skip: None,
            storage_class: None,
            version: None,
        })
    }

    /// Answers a digest request for the content of `key`: a file's, or a link's target
    /// when links are kept as objects.
    pub async fn digests(
        &self,
        key: &str,
        request: DigestRequest,
    ) -> Result<Digests, crate::storage::ObjectError> {
        let fail = |why: &dyn std::fmt::Display| {
            crate::storage::ObjectError::new("hash", self.describe(key), why)
        };
        let mut answered = match self.read_link(key).await? {
            Some(target) => bytes_digests(&target, std::slice::from_ref(&request)),
            None => {
                let path = self.path_for(key).map_err(|why| fail(&why))?;
                file_digests(path, vec![request])
                    .await
                    .map_err(|err| fail(&err))?
            }
        };
        Ok(answered.digests.remove(0))
    }

    /// Makes the directory a folder marker stands for (`key` ends with `/`).
    pub async fn make_dir(&self, key: &str) -> Result<(), crate::storage::ObjectError> {
        let fail = |why: &dyn std::fmt::Display| {
            crate::storage::ObjectError::new("create directory", self.describe(key), why)
        };
        let dir = key.trim_end_matches('/');
        let path = self.path_for(dir).map_err(|why| fail(&why))?;
        self.refuse_links_above(&path.join("x"))
            .map_err(|why| fail(&why))?;
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|err| fail(&err))
    }

    /// Removes the file for `key`, then its parent directories as long as they are
    /// empty (S3 has no directories, so a mirror leaves none behind). A folder marker's
    /// key removes its directory, when empty.
    pub async fn delete(&self, key: &str) -> Result<(), crate::storage::ObjectError> {
        if let Some(dir) = key.strip_suffix('/') {
            let path = self.path_for(dir).map_err(|why| {
                crate::storage::ObjectError::new("delete", self.describe(key), why)
            })?;
            self.refuse_links_above(&path).map_err(|why| {
                crate::storage::ObjectError::new("delete", self.describe(key), why)
            })?;
            return tokio::fs::remove_dir(&path).await.map_err(|err| {
                crate::storage::ObjectError::new("delete", self.describe(key), err)
            });
        }
        let path = match self.link_for(key) {
            Some(link) => link,
            None => self.path_for(key).map_err(|why| {
                crate::storage::ObjectError::new("delete", self.describe(key), why)
            })?,
        };
        self.refuse_links_above(&path)
            .map_err(|why| crate::storage::ObjectError::new("delete", self.describe(key), why))?;
        match tokio::fs::remove_file(&path).await {
            // Gone already (moved to --backup-dir, or by someone else): as wanted.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            done => done.map_err(|err| {
                crate::storage::ObjectError::new("delete", self.describe(key), err)
            })?,
        }
        let mut dir = path.parent();
        while let Some(parent) = dir.filter(|d| *d != self.root) {
            if tokio::fs::remove_dir(parent).await.is_err() {
                break;
            }
            dir = parent.parent();
        }
        Ok(())
    }
}

/// Longest file name (one path component) Linux file systems accept, in bytes.
const NAME_MAX: usize = 255;

fn validate_key(key: &str) -> Result<(), &'static str> {
    if key.contains('\0') {
        return Err("the key contains a NUL byte, which no local file name can hold");
    }
    if key.starts_with('/') {
        return Err("the key starts with '/', so it has no local file name");
    }
    for component in key.split('/') {
        match component {
            "" => return Err("the key has an empty path segment ('//' or a trailing '/')"),
            "." | ".." => return Err(
                "the key has a '.' or '..' segment, which would leave the destination directory",
            ),
            c if c.len() > NAME_MAX => {
                return Err("a segment of the key is longer than 255 bytes, the file name limit")
            }
            c if c.starts_with(TEMP_PREFIX) => {
                return Err("the key's name is reserved for s3mirror's temporary files")
            }
            _ => {}
        }
    }
    Ok(())
}

/// `LocalStore::refuse_links_above` for a tree at `root`, callable from a blocking thread.
pub(super) fn refuse_links_between(root: &Path, path: &Path) -> Result<(), String> {
    let Ok(below) = path.strip_prefix(root) else {
        return Ok(());
    };
    let mut at = root.to_path_buf();
    let parents: Vec<_> = below.components().collect();
    for component in parents.iter().take(parents.len().saturating_sub(1)) {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symbolic link; s3mirror does not write or delete through links in the destination (replace it with a directory, or remove it)",
                    at.display()
                ))
            }
            Ok(_) => {}
            Err(_) => break, // Not there yet: it will be made as a directory.
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_cannot_be_file_names_are_refused() {
        let store = LocalStore::new(PathBuf::from("/dst"));
        assert_eq!(
            store.path_for("a/b c/ü").unwrap(),
            PathBuf::from("/dst/a/b c/ü")
        );
        let long = "x".repeat(256);
        for key in [
            "../etc/passwd",
            "a/../../b",
            "./a",
            "/abs",
            "a//b",
            "dir/",
            "nul\0",
            long.as_str(),
        ] {
            assert!(store.path_for(key).is_err(), "{key:?} accepted");
        }
    }
}
