//! The write path of open files: create (O_EXCL checked against the bucket), writes and
//! truncation on the staged copy, and the upload at `fsync` and `close` — which return
//! only once the object is in the bucket, or fail with EIO and keep the staged data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use rustix::fs::OFlags;

use super::fs::{Attr, Caller, Errno, Fs, Kind};
use super::remote::{ObjectMeta, Remote, RemoteError};
use super::staging::{upload_errno, Staged, StagedFile, Target};

impl<R: Remote> Fs<R> {
    /// Gives a node a staged copy if it has none: the object's bytes, fetched when first
    /// needed.
    pub(super) fn stage(&self, ino: u64) -> Result<(), Errno> {
        let mut inodes = self.inodes();
        let node = inodes.get_mut(ino).ok_or(Errno::NOENT)?;
        if node.staged.is_some() {
            return Ok(());
        }
        let file = StagedFile::new(
            &self.settings.staging_dir,
            Some(node.size),
            node.attrs.clone(),
            Arc::clone(&self.staged_bytes),
        )
        .map_err(|err| self.staging_failed(err))?;
        node.staged = Some(Arc::new(Staged {
            file: tokio::sync::Mutex::new(file),
        }));
        Ok(())
    }

    fn staging_failed(&self, err: std::io::Error) -> Errno {
        tracing::warn!(
            "staging a file in {}: {err}",
            self.settings.staging_dir.display()
        );
        Errno::from_io_error(&err).unwrap_or(Errno::IO)
    }

    fn target<'a>(&'a self, key: &'a str) -> Target<'a, R> {
        Target {
            remote: &self.remote,
            key,
            part_size: self.settings.part_size,
        }
    }

    /// Creates a file (or, when the name turns out to be taken and O_EXCL is not set,
    /// opens the existing one), staged until it is uploaded.
    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        flags: OFlags,
        caller: Caller,
    ) -> Result<(Attr, u64), Errno> {
        self.refuse_if_read_only()?;
        let path = self.child_path(parent, name)?;
        if flags.contains(OFlags::EXCL) {
            // Lock files rely on this: ask the bucket, not what was cached (a file made
            // here and not uploaded yet counts too).
            let made_here = self
                .inodes()
                .node_at(&path)
                .is_some_and(|n| n.staged.is_some());
            if made_here || self.exists_now(&path).await? {
                return Err(Errno::EXIST);
            }
        } else if let Err(Errno::EXIST) = self.new_name(parent, name).await {
            let attr = self.lookup(parent, name).await?;
            let fh = self.open(attr.ino, flags | OFlags::WRONLY, caller).await?;
            return Ok((self.attr(attr.ino)?, fh));
        }
        let attrs = self.new_attrs(Kind::File, mode, caller);
        let file = StagedFile::new(
            &self.settings.staging_dir,
            None,
            attrs.clone(),
            Arc::clone(&self.staged_bytes),
        )
        .map_err(|err| self.staging_failed(err))?;
        let (attr, handle) = {
            let mut inodes = self.inodes();
            let ino = inodes.node_for(&path, Kind::File);
            inodes.set_pending(&path, true);
            inodes.looked_up(ino);
            let node = inodes.get_mut(ino).expect("just made");
            node.kind = Kind::File;
            node.size = 0;
            node.etag.clear();
            node.attrs = attrs;
            node.attrs_known = true;
            node.checked = Some(Instant::now());
            node.staged = Some(Arc::new(Staged {
                file: tokio::sync::Mutex::new(file),
            }));
            node.opens += 1;
            let handle = super::fs::Handle {
                ino,
                write: true,
                append: flags.contains(OFlags::APPEND),
                key: self.key(&path),
                etag: String::new(),
                size: 0,
                last_writer: AtomicU32::new(caller.pid),
            };
            (self.attr_of(node, ino), handle)
        };
        Ok((attr, self.add_handle(handle)))
    }

    /// Writes to the staged copy (appending ones at its end, whatever the offset).
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8], pid: u32) -> Result<u32, Errno> {
        let handle = self.handle(fh)?;
        if !handle.write {
            return Err(Errno::BADF);
        }
        self.load_staged(handle.ino).await?;
        let staged = self.staged_of(handle.ino).ok_or(Errno::BADF)?;
        let key = self.key(&self.path_or_unlinked(handle.ino)?);
        let mut file = staged.file.lock().await;
        let offset = if handle.append { file.size() } else { offset };
        file.write(&self.target(&key), offset, data)
            .await
            .map_err(|err| self.staging_failed(err))?;
        handle.last_writer.store(pid, Ordering::Relaxed);
        self.show_staged(handle.ino, &file);
        Ok(data.len() as u32)
    }

    /// The node's path, also for a file unlinked while open (its bytes go nowhere).
    fn path_or_unlinked(&self, ino: u64) -> Result<String, Errno> {
        self.inodes()
            .get(ino)
            .map(|n| n.path.clone())
            .ok_or(Errno::NOENT)
    }

    /// Keeps the node's size and mtime those of the staged copy.
    fn show_staged(&self, ino: u64, file: &StagedFile) {
        if let Some(node) = self.inodes().get_mut(ino) {
            node.size = file.size();
            node.attrs = file.attrs.clone();
        }
    }

    /// Truncates or extends a file through its staged copy.
    pub(super) async fn truncate(&self, ino: u64, size: u64) -> Result<(), Errno> {
        self.stage(ino)?;
        if size > 0 {
            self.load_staged(ino).await?;
        }
        let staged = self.staged_of(ino).ok_or(Errno::BADF)?;
        let key = self.key(&self.path_or_unlinked(ino)?);
        let mut file = staged.file.lock().await;
        file.set_len(&self.target(&key), size)
            .map_err(|err| self.staging_failed(err))?;
        self.show_staged(ino, &file);
        Ok(())
    }

    /// Uploads a node's staged changes, if any; on success the node shows the object.
    pub(super) async fn upload_node(&self, ino: u64) -> Result<(), RemoteError> {
        let Some(staged) = self.staged_of(ino) else {
            return Ok(());
        };
        let (path, unlinked) = match self.inodes().get(ino) {
            Some(node) => (node.path.clone(), node.unlinked),
            None => return Ok(()),
        };
        let key = self.key(&path);
        let mut file = staged.file.lock().await;
        if unlinked {
            file.discard(&self.target(&key)).await;
            return Ok(());
        }
        let Some(etag) = file.upload(&self.target(&key)).await? else {
            return Ok(());
        };
        let meta = ObjectMeta {
            size: file.size(),
            last_modified: SystemTime::now(),
            etag,
            attrs: Some(file.attrs.clone()),
        };
        let mut inodes = self.inodes();
        if let Some(node) = inodes.get_mut(ino) {
            node.set_meta(&meta);
            node.checked = Some(Instant::now());
        }
        inodes.set_pending(&path, false);
        inodes.note_written(&path, Kind::File, Some(meta));
        Ok(())
    }

    /// At close (`closer` is the process closing a descriptor): uploads the file's
    /// changes when the closing process was the last to write through this open file,
    /// and returns only once the object is in the bucket. A close by a process that only
    /// inherited the descriptor (a shell's child) leaves the upload to the writer's.
    pub async fn flush(&self, fh: u64, closer: u32) -> Result<(), Errno> {
        let handle = self.handle(fh)?;
        if !handle.write {
            return Ok(());
        }
        let last_writer = handle.last_writer.load(Ordering::Relaxed);
        tracing::debug!(
            "flush of inode {} by {closer} (last writer {last_writer})",
            handle.ino
        );
        if last_writer != closer {
            return Ok(());
        }
        self.commit(handle.ino).await
    }

    /// fsync: uploads the file's changes, whoever asks and through whichever descriptor
    /// (as on a local disk, it makes the file durable, not the descriptor's writes).
    pub async fn fsync(&self, fh: u64) -> Result<(), Errno> {
        let handle = self.handle(fh)?;
        self.commit(handle.ino).await
    }

    async fn commit(&self, ino: u64) -> Result<(), Errno> {
        self.upload_node(ino).await.map_err(|err| {
            tracing::warn!(
                "upload failed: {}; the data stays staged for another try",
                err.message
            );
            upload_errno(&err)
        })
    }

    /// The last close of a descriptor: uploads what is left (its errors can only be
    /// logged: the process has closed the file), then lets the staged copy go once no
    /// descriptor has the file open.
    pub async fn release(&self, fh: u64) {
        let Ok(handle) = self.handle(fh) else {
            return;
        };
        if handle.write {
            let _ = self.commit(handle.ino).await;
        }
        self.handles.lock().expect("handles lock").remove(&fh);
        self.closed(handle.ino).await;
    }

    pub(super) async fn closed(&self, ino: u64) {
        if let Some(node) = self.inodes().get_mut(ino) {
            node.opens = node.opens.saturating_sub(1);
        }
        self.unstage_if_idle(ino).await;
    }

    /// Drops a staged copy that no descriptor uses and the bucket holds; one whose
    /// upload failed stays, so the data is not lost.
    pub(super) async fn unstage_if_idle(&self, ino: u64) {
        let Some(staged) = self.staged_of(ino) else {
            self.inodes().release_if_idle(ino);
            return;
        };
        let file = staged.file.lock().await;
        let mut inodes = self.inodes();
        let Some(node) = inodes.get_mut(ino) else {
            return;
        };
        if node.opens == 0 && (!file.is_dirty() || node.unlinked) {
            drop(file);
            node.staged = None;
            inodes.release_if_idle(ino);
        }
    }

    /// At unmount: files whose changes never reached the bucket (closed after a failed
    /// upload, or never closed) are copied to `keep_dir`, and listed in the log, so that
    /// nothing written is lost; parts sent early are aborted.
    pub async fn shut_down(&self, keep_dir: &Path) -> Vec<PathBuf> {
        let staged: Vec<(String, Arc<Staged>)> = {
            let inodes = self.inodes();
            inodes
                .staged_below("")
                .into_iter()
                .filter_map(|ino| inodes.get(ino))
                .filter(|n| !n.unlinked)
                .filter_map(|n| Some((n.path.clone(), n.staged.clone()?)))
                .collect()
        };
        let mut kept = Vec::new();
        for (path, staged) in staged {
            let mut file = staged.file.lock().await;
            if !file.is_dirty() {
                continue;
            }
            let key = self.key(&path);
            file.discard(&self.target(&key)).await;
            let copy = keep_dir.join(&path);
            let saved = copy
                .parent()
                .map_or(Ok(()), crate::private::create_dir)
                .and_then(|()| std::fs::copy(file.path(), &copy));
            match saved {
                Ok(_) => {
                    tracing::warn!(
                        "{key}: its last changes are not in the bucket; they are kept in {}",
                        copy.display()
                    );
                    kept.push(copy);
                }
                Err(err) => tracing::warn!(
                    "{key}: its last changes are not in the bucket, and keeping them in {} failed: {err}",
                    copy.display()
                ),
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::mount::attrs::AttrChange;
    use crate::mount::fs::testing::{fs, read_file, write_file, ME};
    use crate::mount::fs::ROOT;
    use crate::mount::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn written_files_are_in_the_bucket_when_close_returns() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let (attr, fh) = fs
            .create(ROOT, "small", 0o644, OFlags::empty(), ME)
            .await
            .unwrap();
        fs.write(fh, 0, b"abc", ME.pid).await.unwrap();
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 3);
        assert!(
            remote.get("m/small").is_none(),
            "nothing is sent before close"
        );
        fs.flush(fh, ME.pid).await.unwrap();
        assert_eq!(remote.get("m/small").unwrap(), b"abc");
        let stored = remote.attrs("m/small").unwrap();
        assert_eq!((stored.mode, stored.uid), (Some(0o100644), Some(1000)));

        // Bigger than a part (5 bytes here): parts go while the file is written.
        let (_, fh) = fs
            .create(ROOT, "big", 0o644, OFlags::empty(), ME)
            .await
            .unwrap();
        let data: Vec<u8> = (0..23u8).collect();
        for (i, chunk) in data.chunks(4).enumerate() {
            fs.write(fh, i as u64 * 4, chunk, ME.pid).await.unwrap();
        }
        assert_eq!(remote.open_uploads(), 1);
        fs.flush(fh, ME.pid).await.unwrap();
        fs.release(fh).await;
        assert_eq!(remote.get("m/big").unwrap(), data);
        assert_eq!(remote.open_uploads(), 0);
    }

    #[tokio::test]
    async fn overwrite_append_and_read_modify_write() {
        let remote = Arc::new(MemoryRemote::default());
        remote.insert("m/f", b"0123456789");
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let attr = fs.lookup(ROOT, "f").await.unwrap();
        // Append (`echo >> f`).
        let fh = fs
            .open(attr.ino, OFlags::WRONLY | OFlags::APPEND, ME)
            .await
            .unwrap();
        fs.write(fh, 0, b"ab", ME.pid).await.unwrap();
        fs.flush(fh, ME.pid).await.unwrap();
        fs.release(fh).await;
        assert_eq!(remote.get("m/f").unwrap(), b"0123456789ab");
        // A write in the middle, without truncation.
        let fh = fs.open(attr.ino, OFlags::RDWR, ME).await.unwrap();
        fs.write(fh, 1, b"XY", ME.pid).await.unwrap();
        assert_eq!(fs.read(fh, 0, 5).await.unwrap(), b"0XY34");
        fs.fsync(fh).await.unwrap();
        fs.release(fh).await;
        assert_eq!(remote.get("m/f").unwrap(), b"0XY3456789ab");
        // Overwrite (`echo > f`): truncated at open, the old bytes never fetched.
        let requests = remote.request_count();
        let fh = fs
            .open(attr.ino, OFlags::WRONLY | OFlags::TRUNC, ME)
            .await
            .unwrap();
        fs.write(fh, 0, b"new", ME.pid).await.unwrap();
        fs.flush(fh, ME.pid).await.unwrap();
        fs.release(fh).await;
        assert_eq!(remote.get("m/f").unwrap(), b"new");
        assert_eq!(remote.request_count() - requests, 1, "one PutObject");
        // truncate(2) by name uploads at once.
        fs.setattr(
            attr.ino,
            AttrChange {
                size: Some(1),
                ..AttrChange::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(remote.get("m/f").unwrap(), b"n");
    }

    #[tokio::test]
    async fn a_failed_upload_fails_close_and_keeps_the_data() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, dir) = fs(&remote, Duration::from_secs(1));
        remote.insert("m/old", b"old");
        remote.fail_writes.store(true, Ordering::Relaxed);
        for size in [3usize, 12] {
            let name = format!("f{size}");
            let (_, fh) = fs
                .create(ROOT, &name, 0o644, OFlags::empty(), ME)
                .await
                .unwrap();
            fs.write(fh, 0, &vec![1; size], ME.pid).await.unwrap();
            assert_eq!(fs.flush(fh, ME.pid).await, Err(Errno::IO), "{size} bytes");
            fs.release(fh).await;
            // Still there, readable, for another try.
            assert_eq!(read_file(&fs, ROOT, &name).await, vec![1; size]);
        }
        // An overwrite that fails leaves the old object as it was.
        let attr = fs.lookup(ROOT, "old").await.unwrap();
        let fh = fs
            .open(attr.ino, OFlags::WRONLY | OFlags::TRUNC, ME)
            .await
            .unwrap();
        fs.write(fh, 0, b"new", ME.pid).await.unwrap();
        assert_eq!(fs.flush(fh, ME.pid).await, Err(Errno::IO));
        assert_eq!(remote.get("m/old").unwrap(), b"old");
        fs.release(fh).await;
        assert_eq!(remote.keys(), ["m/old"]);
        assert_eq!(remote.open_uploads(), 0);
        // A retry succeeds once the bucket takes writes again.
        remote.fail_writes.store(false, Ordering::Relaxed);
        let attr = fs.lookup(ROOT, "f3").await.unwrap();
        let fh = fs.open(attr.ino, OFlags::WRONLY, ME).await.unwrap();
        fs.fsync(fh).await.unwrap();
        fs.release(fh).await;
        assert_eq!(remote.get("m/f3").unwrap(), vec![1; 3]);
        // At unmount what never reached the bucket is kept.
        let kept = fs.shut_down(&dir.path().join("kept")).await;
        assert_eq!(kept.len(), 2);
        assert_eq!(std::fs::read(dir.path().join("kept/old")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(dir.path().join("kept/f12")).unwrap(),
            vec![1; 12]
        );
    }

    #[tokio::test]
    async fn exclusive_create_asks_the_bucket() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(60));
        assert!(crate::mount::fs::testing::names(&fs, ROOT).await.is_empty());
        remote.insert("m/lock", b"held elsewhere");
        // The cached listing says it is not there; O_EXCL asks anyway.
        let excl = OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY;
        assert_eq!(
            fs.create(ROOT, "lock", 0o644, excl, ME).await.err(),
            Some(Errno::EXIST)
        );
        write_file(&fs, ROOT, "mine", b"").await;
        assert_eq!(
            fs.create(ROOT, "mine", 0o644, excl, ME).await.err(),
            Some(Errno::EXIST)
        );
        // A file made here, still open and not in the bucket yet, is taken as well.
        let (_, fh) = fs.create(ROOT, "open.lock", 0o644, excl, ME).await.unwrap();
        fs.write(fh, 0, b"pid", ME.pid).await.unwrap();
        assert_eq!(
            fs.create(ROOT, "open.lock", 0o644, excl, ME).await.err(),
            Some(Errno::EXIST)
        );
        fs.flush(fh, ME.pid).await.unwrap();
    }

    #[tokio::test]
    async fn a_close_by_a_process_that_did_not_write_does_not_upload() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let (_, fh) = fs
            .create(ROOT, "f", 0o644, OFlags::empty(), ME)
            .await
            .unwrap();
        fs.write(fh, 0, b"hi", ME.pid).await.unwrap();
        fs.flush(fh, ME.pid + 1).await.unwrap();
        assert!(remote.get("m/f").is_none());
        fs.flush(fh, ME.pid).await.unwrap();
        assert_eq!(remote.get("m/f").unwrap(), b"hi");
    }

    #[tokio::test]
    async fn a_file_removed_while_open_is_not_uploaded_again() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let (attr, fh) = fs
            .create(ROOT, "journal", 0o644, OFlags::empty(), ME)
            .await
            .unwrap();
        fs.write(fh, 0, b"x", ME.pid).await.unwrap();
        fs.unlink(ROOT, "journal").await.unwrap();
        fs.write(fh, 1, b"y", ME.pid).await.unwrap();
        assert_eq!(fs.read(fh, 0, 10).await.unwrap(), b"xy");
        fs.flush(fh, ME.pid).await.unwrap();
        fs.release(fh).await;
        assert!(remote.keys().is_empty());
        fs.forget(attr.ino, 1);
        assert_eq!(fs.node_count(), 1);
    }
}
