//! Opening files, and the read path: a file with a staged copy is read from it (what
//! was written through any descriptor shows at once); any other through the disk cache,
//! at the object version it was opened at.

use std::sync::Arc;

use rustix::fs::OFlags;

use super::fs::{errno, Caller, Errno, Fs, Handle, Kind};
use super::remote::Remote;
use super::staging::Target;

impl<R: Remote> Fs<R> {
    /// Opens a file. For writing, its bytes are staged (fetched only when first needed;
    /// with O_TRUNC not at all); the upload comes at fsync or close.
    pub async fn open(&self, ino: u64, flags: OFlags, caller: Caller) -> Result<u64, Errno> {
        let attr = self.getattr(ino).await?;
        if attr.kind == Kind::Dir {
            return Err(Errno::ISDIR);
        }
        let write = flags & OFlags::ACCMODE != OFlags::RDONLY;
        if write {
            self.refuse_if_read_only()?;
        }
        let (key, etag, size) = {
            let mut inodes = self.inodes();
            let node = inodes.get_mut(ino).ok_or(Errno::NOENT)?;
            node.opens += 1;
            (self.key(&node.path), node.etag.clone(), node.size)
        };
        let handle = Handle {
            ino,
            write,
            append: flags.contains(OFlags::APPEND),
            key,
            etag,
            size,
            last_writer: std::sync::atomic::AtomicU32::new(caller.pid),
        };
        if write {
            let staged = self.stage(ino);
            let truncated = match staged {
                Ok(()) if flags.contains(OFlags::TRUNC) => self.truncate(ino, 0).await,
                other => other,
            };
            if let Err(err) = truncated {
                self.closed(ino).await;
                return Err(err);
            }
        }
        Ok(self.add_handle(handle))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let handle = self.handle(fh)?;
        let staged = self.inodes().get(handle.ino).and_then(|n| n.staged.clone());
        if let Some(staged) = staged {
            let file = staged.file.lock().await;
            if file.is_loaded() {
                return file.read(offset, u64::from(size)).map_err(errno);
            }
        }
        self.cache
            .read(
                &self.remote,
                &handle.key,
                &handle.etag,
                handle.size,
                offset,
                u64::from(size),
            )
            .await
            .map_err(errno)
    }

    /// Fetches the object's bytes into its staged copy, if not done yet.
    pub(super) async fn load_staged(&self, ino: u64) -> Result<(), Errno> {
        let (staged, key, etag) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(Errno::NOENT)?;
            let staged = node.staged.clone().ok_or(Errno::BADF)?;
            (staged, self.key(&node.path), node.etag.clone())
        };
        let mut file = staged.file.lock().await;
        let target = Target {
            remote: &self.remote,
            key: &key,
            part_size: self.settings.part_size,
        };
        file.load(&target, &etag).await.map_err(errno)
    }

    pub(super) fn staged_of(&self, ino: u64) -> Option<Arc<super::staging::Staged>> {
        self.inodes().get(ino).and_then(|n| n.staged.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mount::fs::testing::{fs, names, ME};
    use crate::mount::fs::ROOT;
    use crate::mount::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn a_file_is_readable_while_another_descriptor_writes_it() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let (attr, writer) = fs
            .create(ROOT, "log", 0o644, OFlags::empty(), ME)
            .await
            .unwrap();
        fs.write(writer, 0, b"first line\n", ME.pid).await.unwrap();
        let reader = fs.open(attr.ino, OFlags::RDONLY, ME).await.unwrap();
        assert_eq!(fs.read(reader, 0, 100).await.unwrap(), b"first line\n");
        fs.write(writer, 11, b"second\n", ME.pid).await.unwrap();
        assert_eq!(fs.read(reader, 11, 100).await.unwrap(), b"second\n");
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 18);
        fs.flush(writer, ME.pid).await.unwrap();
        fs.release(writer).await;
        assert_eq!(
            fs.read(reader, 0, 100).await.unwrap(),
            b"first line\nsecond\n"
        );
        fs.release(reader).await;
        assert_eq!(remote.get("m/log").unwrap(), b"first line\nsecond\n");
        assert_eq!(names(&fs, ROOT).await.len(), 1);
    }

    #[tokio::test]
    async fn a_cold_read_of_a_listed_file_costs_one_request_after_its_first_lookup() {
        let remote = Arc::new(MemoryRemote::default());
        remote.insert("m/small", b"tiny");
        let (fs, _dir) = fs(&remote, Duration::from_secs(60));
        let attr = fs.lookup(ROOT, "small").await.unwrap();
        let before = remote.request_count();
        let fh = fs.open(attr.ino, OFlags::RDONLY, ME).await.unwrap();
        assert_eq!(fs.read(fh, 0, 1 << 20).await.unwrap(), b"tiny");
        assert_eq!(remote.request_count() - before, 1, "one GetObject");
    }
}
