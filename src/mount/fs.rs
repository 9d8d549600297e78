//! The mounted filesystem's logic, apart from FUSE: the state shared by its rooms
//! (`namespace` for names, `read` and `write` for open files, `inodes` for the table,
//! `staging` for files being changed) and the attributes shown to the kernel.
//!
//! Directories are key prefixes split on `/`; a zero-byte `dir/` object marks one (and
//! keeps its mode). A name that is both a file and a directory shows as the directory.
//! Locks guard the tables for a moment and are never held across a request; each staged
//! file has its own lock, so different files never wait for each other.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use super::cache::ReadCache;
use super::inodes::{Inodes, Node};
use super::meta::{S_IFDIR, S_IFLNK, S_IFREG};
use super::remote::{ErrorKind, Remote, RemoteError, StoredAttrs};

pub use super::inodes::{Kind, ROOT};

/// An error as the kernel wants it: an errno, whose number the FUSE adapter replies with.
pub type Errno = rustix::io::Errno;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits (`0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: String,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub struct FsSettings {
    /// Key prefix of the mount in the bucket: empty, or ending with `/`.
    pub prefix: String,
    /// How long metadata and listings are trusted.
    pub ttl: Duration,
    pub read_only: bool,
    /// Files written through the mount are uploaded in parts of this size.
    pub part_size: u64,
    /// Shown for objects whose metadata holds none.
    pub file_mode: u16,
    pub dir_mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Where files being written are staged.
    pub staging_dir: PathBuf,
}

/// Who asks: the process and its credentials, from the kernel's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// An open file.
pub(super) struct Handle {
    pub ino: u64,
    pub write: bool,
    pub append: bool,
    /// The object version it was opened at, for reads not served by a staged copy.
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// The process that wrote last through this open file (at first, the one that
    /// opened it): its close uploads the changes.
    pub last_writer: std::sync::atomic::AtomicU32,
}

pub struct Fs<R: Remote> {
    pub(super) remote: Arc<R>,
    pub(super) cache: ReadCache,
    pub(super) settings: FsSettings,
    pub(super) inodes: Mutex<Inodes>,
    pub(super) handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Open directories: the listing taken at opendir, read in pieces by readdir.
    pub(super) dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    pub(super) next_fh: AtomicU64,
    /// Bytes held by staged files, shared with the cache's budget.
    pub(super) staged_bytes: Arc<AtomicU64>,
}

impl<R: Remote> Fs<R> {
    pub fn new(remote: Arc<R>, cache: ReadCache, settings: FsSettings) -> Self {
        let staged_bytes = cache.staged_counter();
        Self {
            remote,
            cache,
            settings,
            inodes: Mutex::new(Inodes::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            staged_bytes,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.settings.ttl
    }

    pub(super) fn inodes(&self) -> MutexGuard<'_, Inodes> {
        self.inodes.lock().expect("inodes lock")
    }

    /// Nodes held now: what memory follows.
    pub fn node_count(&self) -> usize {
        self.inodes().len()
    }

    pub(super) fn key(&self, path: &str) -> String {
        format!("{}{path}", self.settings.prefix)
    }

    /// The directory prefix of a path: `path/`, or the mount's prefix for the root.
    pub(super) fn dir_key(&self, path: &str) -> String {
        match path {
            "" => self.settings.prefix.clone(),
            path => format!("{}{path}/", self.settings.prefix),
        }
    }

    pub(super) fn path_of(&self, ino: u64) -> Result<(String, Kind), Errno> {
        self.inodes()
            .get(ino)
            .filter(|n| !n.unlinked)
            .map(|n| (n.path.clone(), n.kind))
            .ok_or(Errno::NOENT)
    }

    pub(super) fn child_path(&self, parent: u64, name: &str) -> Result<String, Errno> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Errno::INVAL);
        }
        let (parent, kind) = self.path_of(parent)?;
        if kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        Ok(super::inodes::join(&parent, name))
    }

    pub(super) fn attr_of(&self, node: &Node, ino: u64) -> Attr {
        // A staged file's size and mtime are kept on its node by the write path.
        let mtime = node.attrs.mtime.unwrap_or(node.last_modified);
        let default_perm = match node.kind {
            Kind::Dir => self.settings.dir_mode,
            Kind::File => self.settings.file_mode,
            Kind::Symlink => 0o777,
        };
        Attr {
            ino,
            kind: node.kind,
            size: if node.kind == Kind::Dir { 0 } else { node.size },
            mtime,
            perm: node
                .attrs
                .mode
                .map_or(default_perm, |m| (m & 0o7777) as u16),
            uid: node.attrs.uid.unwrap_or(self.settings.uid),
            gid: node.attrs.gid.unwrap_or(self.settings.gid),
        }
    }

    pub(super) fn attr(&self, ino: u64) -> Result<Attr, Errno> {
        let inodes = self.inodes();
        let node = inodes.get(ino).ok_or(Errno::NOENT)?;
        Ok(self.attr_of(node, ino))
    }

    /// The attributes to store with a new object made by `caller`.
    pub(super) fn new_attrs(&self, kind: Kind, perm: u32, caller: Caller) -> StoredAttrs {
        let kind_bits = match kind {
            Kind::Dir => S_IFDIR,
            Kind::File => S_IFREG,
            Kind::Symlink => S_IFLNK,
        };
        StoredAttrs {
            mode: Some(kind_bits | (perm & 0o7777)),
            uid: Some(caller.uid),
            gid: Some(caller.gid),
            mtime: Some(SystemTime::now()),
        }
    }

    pub(super) fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .expect("handles lock")
            .insert(fh, Arc::new(handle));
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        self.handles
            .lock()
            .expect("handles lock")
            .get(&fh)
            .cloned()
            .ok_or(Errno::BADF)
    }

    pub(super) fn refuse_if_read_only(&self) -> Result<(), Errno> {
        match self.settings.read_only {
            true => Err(Errno::ROFS),
            false => Ok(()),
        }
    }
}

/// The errno for a failed request; the cause goes to the log.
pub(super) fn errno(err: RemoteError) -> Errno {
    match err.kind {
        ErrorKind::NotFound => Errno::NOENT,
        ErrorKind::Denied => Errno::ACCESS,
        ErrorKind::Changed | ErrorKind::Other => {
            tracing::warn!("{}", err.message);
            Errno::IO
        }
    }
}

#[cfg(test)]
pub(super) mod testing {
    use rustix::fs::OFlags;

    use super::*;
    use crate::mount::remote::memory::MemoryRemote;

    pub const ME: Caller = Caller {
        pid: 1,
        uid: 1000,
        gid: 1000,
    };

    /// A filesystem over `m/` of an in-memory bucket, with parts of 5 bytes.
    pub fn fs(remote: &Arc<MemoryRemote>, ttl: Duration) -> (Fs<MemoryRemote>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(dir.path().join("cache"), 64 << 20).unwrap();
        let settings = FsSettings {
            prefix: "m/".into(),
            ttl,
            read_only: false,
            part_size: 5,
            file_mode: 0o644,
            dir_mode: 0o755,
            uid: 7,
            gid: 8,
            staging_dir: dir.path().join("cache"),
        };
        (Fs::new(Arc::clone(remote), cache, settings), dir)
    }

    pub async fn names(fs: &Fs<MemoryRemote>, ino: u64) -> Vec<(String, Kind)> {
        let mut names: Vec<_> = fs
            .readdir(ino)
            .await
            .unwrap()
            .into_iter()
            .skip(2)
            .map(|e| (e.name, e.kind))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        names
    }

    /// Writes a whole file through the filesystem as a program would, and closes it.
    pub async fn write_file(fs: &Fs<MemoryRemote>, parent: u64, name: &str, data: &[u8]) -> Attr {
        let (attr, fh) = fs
            .create(parent, name, 0o644, OFlags::empty(), ME)
            .await
            .unwrap();
        if !data.is_empty() {
            fs.write(fh, 0, data, ME.pid).await.unwrap();
        }
        fs.flush(fh, ME.pid).await.unwrap();
        fs.release(fh).await;
        attr
    }

    pub async fn read_file(fs: &Fs<MemoryRemote>, parent: u64, name: &str) -> Vec<u8> {
        let attr = fs.lookup(parent, name).await.unwrap();
        let fh = fs.open(attr.ino, OFlags::RDONLY, ME).await.unwrap();
        let data = fs.read(fh, 0, 1 << 20).await.unwrap();
        fs.release(fh).await;
        data
    }
}
