//! Rename: server-side copies (CopyObject, UploadPartCopy above 5 GiB), then deletes of
//! the old keys; a directory key by key, many at once.
//!
//! A rename is not atomic in S3: the copy is complete before the original is deleted, so
//! a crash between the two leaves both names holding the whole object, never half of one.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::fs::{errno, Errno, Fs, Kind};
use super::remote::Remote;
use super::staging::upload_errno;

/// Keys copied or deleted at once when a directory is renamed.
const RENAME_CONCURRENCY: usize = 16;

impl<R: Remote> Fs<R> {
    /// Renames a file or a directory, replacing what holds the new name (POSIX
    /// `rename`): server-side copies, then deletes of the old keys.
    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<(), Errno> {
        self.refuse_if_read_only()?;
        let from = self.child_path(parent, name)?;
        let to = self.child_path(new_parent, new_name)?;
        let source = self.peek(parent, name).await?;
        if from == to {
            return Ok(());
        }
        if source.kind == Kind::Dir && to.starts_with(&format!("{from}/")) {
            return Err(Errno::INVAL);
        }
        let target = match self.peek(new_parent, new_name).await {
            Ok(attr) => Some(attr),
            Err(Errno::NOENT) => None,
            Err(err) => return Err(err),
        };
        if let Some(target) = &target {
            match (target.kind, source.kind) {
                _ if no_replace => return Err(Errno::EXIST),
                (Kind::Dir, Kind::Dir) => {}
                (_, Kind::Dir) => return Err(Errno::NOTDIR),
                (Kind::Dir, _) => return Err(Errno::ISDIR),
                _ => {}
            }
        }
        let target_dir = target.as_ref().is_some_and(|t| t.kind == Kind::Dir);
        if target_dir && !self.is_empty_dir(&to).await? {
            return Err(Errno::NOTEMPTY);
        }
        // What is staged under the old name goes up first, so the copy has it.
        self.upload_staged_below(&from).await?;
        match source.kind {
            Kind::Dir => self.rename_dir(&from, &to, target.is_some()).await?,
            _ => self.rename_object(&from, &to, source.size).await?,
        }
        self.inodes().rename(&from, &to);
        Ok(())
    }

    async fn upload_staged_below(&self, path: &str) -> Result<(), Errno> {
        let staged = self.inodes().staged_below(path);
        for ino in staged {
            self.upload_node(ino).await.map_err(|err| {
                tracing::warn!("rename: uploading {path} first failed: {}", err.message);
                upload_errno(&err)
            })?;
        }
        Ok(())
    }

    async fn rename_object(&self, from: &str, to: &str, size: u64) -> Result<(), Errno> {
        let (from_key, to_key) = (self.key(from), self.key(to));
        self.remote
            .copy(&from_key, &to_key, size, None)
            .await
            .map_err(errno)?;
        self.remote.delete(&from_key).await.map_err(|err| {
            tracing::warn!(
                "rename {from} to {to}: the copy is made, but {}",
                err.message
            );
            Errno::IO
        })
    }

    /// Copies every key below the directory to the new prefix, then deletes the old
    /// ones, each step for many keys at once. Until the deletes end, both hold the files.
    async fn rename_dir(&self, from: &str, to: &str, replacing: bool) -> Result<(), Errno> {
        let (from_prefix, to_prefix) = (self.dir_key(from), self.dir_key(to));
        let keys = self.remote.list_below(&from_prefix).await.map_err(errno)?;
        if replacing {
            // The target is an empty directory: only its marker is in the way.
            let _ = self.remote.delete(&to_prefix).await;
        }
        // Collected first: a lazy map over borrows would keep the future from being Send.
        let copies: Vec<_> = keys
            .iter()
            .map(|(key, size)| {
                let (remote, size) = (Arc::clone(&self.remote), *size);
                let new_key = format!("{to_prefix}{}", &key[from_prefix.len()..]);
                let key = key.clone();
                async move { remote.copy(&key, &new_key, size, None).await }
            })
            .collect();
        futures::stream::iter(copies)
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map_err(errno)?;
        let deletes: Vec<_> = keys
            .into_iter()
            .map(|(key, _)| {
                let remote = Arc::clone(&self.remote);
                async move { remote.delete(&key).await }
            })
            .collect();
        futures::stream::iter(deletes)
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map_err(|err| {
                tracing::warn!("rename {from} to {to}: copies made, but {}", err.message);
                Errno::IO
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::mount::fs::testing::{fs, read_file, write_file, ME};
    use crate::mount::fs::{Errno, ROOT};
    use crate::mount::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn renames_replace_the_target_and_move_directories() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        write_file(&fs, ROOT, "old", b"old bytes").await;
        write_file(&fs, ROOT, ".tmp", b"new bytes").await;
        fs.rename(ROOT, ".tmp", ROOT, "old", false).await.unwrap();
        assert_eq!(remote.get("m/old").unwrap(), b"new bytes");
        assert!(remote.get("m/.tmp").is_none());
        assert_eq!(read_file(&fs, ROOT, "old").await, b"new bytes");
        assert_eq!(fs.lookup(ROOT, ".tmp").await, Err(Errno::NOENT));

        let d = fs.mkdir(ROOT, "d", 0o755, ME).await.unwrap();
        let sub = fs.mkdir(d.ino, "sub", 0o755, ME).await.unwrap();
        write_file(&fs, sub.ino, "f", b"deep").await;
        fs.rename(ROOT, "d", ROOT, "e", false).await.unwrap();
        assert_eq!(remote.keys(), ["m/e/", "m/e/sub/", "m/e/sub/f", "m/old"]);
        let e = fs.lookup(ROOT, "e").await.unwrap();
        assert_eq!(e.ino, d.ino, "a renamed directory keeps its inode");
        let sub = fs.lookup(e.ino, "sub").await.unwrap();
        assert_eq!(read_file(&fs, sub.ino, "f").await, b"deep");
        assert_eq!(
            fs.rename(ROOT, "old", ROOT, "e", false).await,
            Err(Errno::ISDIR)
        );
        assert_eq!(
            fs.rename(ROOT, "e", ROOT, "old", false).await,
            Err(Errno::NOTDIR)
        );
        assert_eq!(
            fs.rename(ROOT, "e", ROOT, "old", true).await,
            Err(Errno::EXIST)
        );
    }

    #[tokio::test]
    async fn a_failed_copy_fails_the_rename_and_keeps_both_files() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        write_file(&fs, ROOT, "target", b"old").await;
        write_file(&fs, ROOT, "new", b"new").await;
        remote.fail_copies.store(true, Ordering::Relaxed);
        assert_eq!(
            fs.rename(ROOT, "new", ROOT, "target", false).await,
            Err(Errno::IO)
        );
        assert_eq!(remote.get("m/target").unwrap(), b"old");
        assert_eq!(remote.get("m/new").unwrap(), b"new");
    }
}
