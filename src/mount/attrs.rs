//! Changes of mode, owner, times and size (setattr). A file with staged changes takes
//! them into its next upload; any other object gets its metadata replaced at once
//! (CopyObject onto itself), and a directory its marker rewritten.

use std::time::{Instant, SystemTime};

use super::fs::{errno, Attr, Errno, Fs, Kind};
use super::meta::S_IFMT;
use super::remote::{Remote, StoredAttrs};
use super::staging::upload_errno;

/// What setattr was asked to change.
#[derive(Debug, Clone, Default)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub mtime: Option<SystemTime>,
    /// The open file it was asked through (ftruncate, futimens), if any.
    pub fh: Option<u64>,
}

impl<R: Remote> Fs<R> {
    /// Changes mode, owner, times or size. A file with staged changes takes them into
    /// its next upload; otherwise the object's metadata is replaced now (CopyObject onto
    /// itself), and a size change stages the file and uploads it at once, unless it was
    /// made through an open descriptor (then it goes up at close).
    pub async fn setattr(&self, ino: u64, change: AttrChange) -> Result<Attr, Errno> {
        let attr = self.getattr(ino).await?;
        let wants_attrs = change.mode.is_some()
            || change.uid.is_some()
            || change.gid.is_some()
            || change.mtime.is_some();
        if !wants_attrs
            && change
                .size
                .is_none_or(|s| s == attr.size && change.fh.is_none())
        {
            return Ok(attr);
        }
        self.refuse_if_read_only()?;
        if let Some(size) = change.size {
            if attr.kind != Kind::File {
                return Err(Errno::ISDIR);
            }
            self.truncate(ino, size).await?;
        }
        if wants_attrs {
            self.change_attrs(ino, &change).await?;
        }
        if change.size.is_some() && change.fh.is_none() {
            // truncate(2) by name: no close will come to upload it.
            let still_open = self.inodes().get(ino).is_some_and(|n| n.opens > 0);
            if !still_open {
                self.upload_node(ino)
                    .await
                    .map_err(|err| upload_errno(&err))?;
                self.unstage_if_idle(ino).await;
            }
        }
        self.attr(ino)
    }

    async fn change_attrs(&self, ino: u64, change: &AttrChange) -> Result<(), Errno> {
        let (path, kind, mut attrs, size, staged) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(Errno::NOENT)?;
            let staged = node.staged.clone();
            (
                node.path.clone(),
                node.kind,
                node.attrs.clone(),
                node.size,
                staged,
            )
        };
        let kind_bits = match kind {
            Kind::Dir => super::meta::S_IFDIR,
            Kind::File => super::meta::S_IFREG,
            Kind::Symlink => super::meta::S_IFLNK,
        };
        let current_perm = u32::from(self.attr(ino)?.perm);
        if let Some(mode) = change.mode {
            attrs.mode = Some(kind_bits | (mode & !S_IFMT & 0o7777));
        } else if attrs.mode.is_none() {
            attrs.mode = Some(kind_bits | current_perm);
        }
        attrs.uid = change.uid.or(attrs.uid);
        attrs.gid = change.gid.or(attrs.gid);
        attrs.mtime = change.mtime.or(attrs.mtime);
        if let Some(staged) = staged {
            let mut file = staged.file.lock().await;
            if file.is_dirty() {
                let mut pending = file.attrs.clone();
                pending.mode = attrs.mode;
                pending.uid = attrs.uid;
                pending.gid = attrs.gid;
                pending.mtime = change.mtime.or(pending.mtime);
                file.set_attrs(pending.clone());
                drop(file);
                self.set_node_attrs(ino, pending);
                return Ok(());
            }
        }
        let result = match kind {
            Kind::Dir => self
                .remote
                .put(&self.dir_key(&path), Vec::new(), &attrs)
                .await
                .map(drop),
            _ => {
                let key = self.key(&path);
                self.remote.copy(&key, &key, size, Some(&attrs)).await
            }
        };
        result.map_err(errno)?;
        self.set_node_attrs(ino, attrs);
        Ok(())
    }

    fn set_node_attrs(&self, ino: u64, attrs: StoredAttrs) {
        if let Some(node) = self.inodes().get_mut(ino) {
            node.attrs = attrs;
            node.attrs_known = true;
            node.checked = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::mount::fs::testing::fs;
    use crate::mount::fs::ROOT;
    use crate::mount::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn modes_owners_and_times_come_from_metadata_or_the_defaults() {
        let remote = Arc::new(MemoryRemote::default());
        remote.insert("m/plain", b"x");
        let s3fs_style = StoredAttrs {
            mode: Some(0o100750),
            uid: Some(33),
            gid: Some(44),
            mtime: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        };
        remote.insert_with("m/kept", b"x", s3fs_style);
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let plain = fs.lookup(ROOT, "plain").await.unwrap();
        assert_eq!((plain.perm, plain.uid, plain.gid), (0o644, 7, 8));
        let kept = fs.lookup(ROOT, "kept").await.unwrap();
        assert_eq!((kept.perm, kept.uid, kept.gid), (0o750, 33, 44));
        assert_eq!(
            kept.mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
        );

        // chmod and utimens of an object in the bucket replace its metadata.
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
        let change = AttrChange {
            mode: Some(0o755),
            mtime: Some(when),
            ..AttrChange::default()
        };
        let attr = fs.setattr(plain.ino, change).await.unwrap();
        assert_eq!((attr.perm, attr.mtime), (0o755, when));
        let stored = remote.attrs("m/plain").unwrap();
        assert_eq!(stored.mode, Some(0o100755));
        assert_eq!(stored.mtime, Some(when));
        assert_eq!(remote.get("m/plain").unwrap(), b"x", "the bytes stay");
    }
}
