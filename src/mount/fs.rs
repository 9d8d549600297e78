//! The mounted filesystem's logic, apart from FUSE: inodes for keys, metadata and
//! listings trusted for at most the TTL, reads through the disk cache, and writes of new
//! files that are durable in S3 when `flush` (close) or `fsync` returns.
//!
//! Directories are key prefixes split on `/`; a zero-byte `dir/` object marks an empty
//! one. A name that is both a file and a directory (`a` and `a/b`) shows as the directory.
//! Locks guard the tables for a moment and are never held across a request; each open
//! file has its own lock, so different files never wait for each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::cache::ReadCache;
use super::remote::{ErrorKind, ObjectMeta, Remote, RemoteError};

/// An error as the kernel wants it (a libc errno).
pub type Errno = i32;

pub const ROOT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
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
    pub allow_delete: bool,
    /// Files at least this big are uploaded in parts of this size while written.
    pub part_size: u64,
}

struct Node {
    /// Relative path without a trailing `/`; empty for the root.
    path: String,
    kind: Kind,
    size: u64,
    mtime: SystemTime,
    etag: String,
    /// When the metadata was last confirmed by the server.
    checked: Option<Instant>,
    /// Being written through this mount, not yet in the bucket.
    local: bool,
}

struct Nodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
    /// When each directory was last listed whole.
    listed: HashMap<String, Instant>,
}

impl Nodes {
    /// The inode of `path`, created (unconfirmed) if new.
    fn ino_for(&mut self, path: &str, kind: Kind) -> u64 {
        if let Some(&ino) = self.by_path.get(path) {
            return ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_path.insert(path.to_owned(), ino);
        self.by_ino.insert(
            ino,
            Node {
                path: path.to_owned(),
                kind,
                size: 0,
                mtime: SystemTime::UNIX_EPOCH,
                etag: String::new(),
                checked: None,
                local: false,
            },
        );
        ino
    }
}

/// An open file: for reading, the version it was opened at; for writing, the upload.
enum Handle {
    Read {
        key: String,
        etag: String,
        size: u64,
    },
    Write(tokio::sync::Mutex<Writer>),
}

struct Writer {
    ino: u64,
    key: String,
    /// The process that created the file: closes of its descriptors by others (a
    /// shell's dup2 dance, a forked child exiting) do not end the file.
    opener: u32,
    /// Bytes written so far; the next write must start here.
    written: u64,
    /// The part being filled (the whole file while it is smaller than a part).
    buffer: Vec<u8>,
    upload: Option<Upload>,
    /// The state after the last flush: `Some(Ok)` once the object is in the bucket.
    committed: Option<Result<(), Errno>>,
}

struct Upload {
    id: String,
    /// Parts sent or being sent, in order.
    parts: Vec<Part>,
}

enum Part {
    Sending(tokio::task::JoinHandle<Result<String, RemoteError>>),
    /// Its result: the part's ETag.
    Sent(Result<String, RemoteError>),
}

impl Part {
    async fn result(self) -> Result<String, RemoteError> {
        match self {
            Part::Sent(result) => result,
            Part::Sending(task) => task.await.unwrap_or_else(|err| {
                Err(RemoteError {
                    kind: ErrorKind::Other,
                    message: err.to_string(),
                })
            }),
        }
    }

    fn sending(&self) -> bool {
        matches!(self, Part::Sending(task) if !task.is_finished())
    }
}

/// Parts of one file uploaded at once while it is written.
const PARTS_IN_FLIGHT: usize = 2;
/// The most parts one S3 object can have.
const MAX_PARTS: u64 = 10_000;

/// Waits for parts still being sent; their results no longer matter.
async fn finish_parts(parts: Vec<Part>) {
    for part in parts {
        let _ = part.result().await;
    }
}

pub struct Fs<R: Remote> {
    remote: Arc<R>,
    cache: ReadCache,
    settings: FsSettings,
    nodes: Mutex<Nodes>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Open directories: the listing taken at opendir, read in pieces by readdir.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    next_fh: AtomicU64,
    mounted_at: SystemTime,
}

impl<R: Remote> Fs<R> {
    pub fn new(remote: Arc<R>, cache: ReadCache, settings: FsSettings) -> Self {
        let mut nodes = Nodes {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next: ROOT,
            listed: HashMap::new(),
        };
        nodes.ino_for("", Kind::Dir);
        Self {
            remote,
            cache,
            settings,
            nodes: Mutex::new(nodes),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mounted_at: SystemTime::now(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.settings.ttl
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.settings.prefix)
    }

    /// The directory prefix of a path: `path/`, or the mount's prefix for the root.
    fn dir_key(&self, path: &str) -> String {
        match path {
            "" => self.settings.prefix.clone(),
            path => format!("{}{path}/", self.settings.prefix),
        }
    }

    fn path_of(&self, ino: u64) -> Result<(String, Kind), Errno> {
        let nodes = self.nodes.lock().expect("nodes lock");
        nodes
            .by_ino
            .get(&ino)
            .map(|n| (n.path.clone(), n.kind))
            .ok_or(libc::ENOENT)
    }

    fn child_path(&self, parent: u64, name: &str) -> Result<String, Errno> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(libc::EINVAL);
        }
        let (parent, kind) = self.path_of(parent)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(match parent.as_str() {
            "" => name.to_owned(),
            parent => format!("{parent}/{name}"),
        })
    }

    fn attr_of(&self, node: &Node, ino: u64) -> Attr {
        Attr {
            ino,
            kind: node.kind,
            size: node.size,
            mtime: match node.kind {
                Kind::Dir => self.mounted_at,
                Kind::File => node.mtime,
            },
        }
    }

    /// The node's attributes if they can be trusted without asking the server.
    fn fresh(&self, ino: u64) -> Option<Attr> {
        let nodes = self.nodes.lock().expect("nodes lock");
        let node = nodes.by_ino.get(&ino)?;
        let fresh = node.local
            || ino == ROOT
            || node
                .checked
                .is_some_and(|at| at.elapsed() < self.settings.ttl);
        fresh.then(|| self.attr_of(node, ino))
    }

    /// Whether the parent's fresh listing shows that `name` is not there.
    fn known_absent(&self, parent_path: &str, path: &str) -> bool {
        let nodes = self.nodes.lock().expect("nodes lock");
        let listed = nodes
            .listed
            .get(parent_path)
            .is_some_and(|at| at.elapsed() < self.settings.ttl);
        let confirmed = nodes
            .by_path
            .get(path)
            .and_then(|ino| nodes.by_ino.get(ino))
            .is_some_and(|n| {
                n.local || n.checked.is_some_and(|at| at.elapsed() < self.settings.ttl)
            });
        listed && !confirmed
    }

    /// Records what the server says about a path, and returns its attributes.
    fn record(&self, path: &str, kind: Kind, meta: Option<&ObjectMeta>) -> Attr {
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let ino = nodes.ino_for(path, kind);
        let node = nodes.by_ino.get_mut(&ino).expect("just made");
        if node.local {
            return self.attr_of(node, ino);
        }
        node.kind = kind;
        if let Some(meta) = meta {
            node.size = meta.size;
            node.mtime = meta.mtime;
            node.etag = meta.etag.clone();
        } else {
            node.size = 0;
        }
        node.checked = Some(Instant::now());
        self.attr_of(node, ino)
    }

    /// Asks the server what `path` is now: a directory (any key below it) or a file.
    async fn stat_path(&self, path: &str) -> Result<Attr, Errno> {
        let (dir_key, key) = (self.dir_key(path), self.key(path));
        let (dir, file) = futures::join!(self.remote.has_keys(&dir_key), self.remote.head(&key));
        if dir.map_err(errno)? {
            return Ok(self.record(path, Kind::Dir, None));
        }
        match file.map_err(errno)? {
            Some(meta) => Ok(self.record(path, Kind::File, Some(&meta))),
            None => Err(libc::ENOENT),
        }
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, Errno> {
        let path = self.child_path(parent, name)?;
        let existing = self
            .nodes
            .lock()
            .expect("nodes lock")
            .by_path
            .get(&path)
            .copied();
        if let Some(attr) = existing.and_then(|ino| self.fresh(ino)) {
            return Ok(attr);
        }
        let (parent_path, _) = self.path_of(parent)?;
        if self.known_absent(&parent_path, &path) {
            return Err(libc::ENOENT);
        }
        self.stat_path(&path).await
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        if let Some(attr) = self.fresh(ino) {
            return Ok(attr);
        }
        let (path, _) = self.path_of(ino)?;
        self.stat_path(&path).await
    }

    /// Every entry of a directory, `.` and `..` first, as the server lists it now (plus
    /// files being written here).
    pub async fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, Errno> {
        let (path, kind) = self.path_of(ino)?;
        if kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let listing = self
            .remote
            .list(&self.dir_key(&path))
            .await
            .map_err(errno)?;
        let join = |name: &str| match path.as_str() {
            "" => name.to_owned(),
            path => format!("{path}/{name}"),
        };
        let usable = |name: &str| !name.is_empty() && name != "." && name != "..";
        let mut entries = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: Kind::Dir,
            },
            DirEntry {
                ino,
                name: "..".into(),
                kind: Kind::Dir,
            },
        ];
        let mut seen = std::collections::HashSet::new();
        for name in listing.dirs.iter().filter(|n| usable(n)) {
            let attr = self.record(&join(name), Kind::Dir, None);
            seen.insert(name.clone());
            entries.push(DirEntry {
                ino: attr.ino,
                name: name.clone(),
                kind: Kind::Dir,
            });
        }
        for (name, meta) in listing.files.iter().filter(|(n, _)| usable(n)) {
            // A directory shadows a file of the same name.
            if seen.insert(name.clone()) {
                let attr = self.record(&join(name), Kind::File, Some(meta));
                entries.push(DirEntry {
                    ino: attr.ino,
                    name: name.clone(),
                    kind: Kind::File,
                });
            }
        }
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let prefix = join("");
        for (node_ino, node) in &nodes.by_ino {
            let Some(name) = node.path.strip_prefix(&prefix) else {
                continue;
            };
            if node.local && !name.contains('/') && !seen.contains(name) {
                entries.push(DirEntry {
                    ino: *node_ino,
                    name: name.to_owned(),
                    kind: node.kind,
                });
            }
        }
        nodes.listed.insert(path, Instant::now());
        Ok(entries)
    }

    /// Lists a directory once for a reader, who then takes the entries in pieces.
    pub async fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let entries = self.readdir(ino).await?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .expect("dirs lock")
            .insert(fh, Arc::new(entries));
        Ok(fh)
    }

    pub fn dir_entries(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        self.dirs
            .lock()
            .expect("dirs lock")
            .get(&fh)
            .cloned()
            .ok_or(libc::EBADF)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().expect("dirs lock").remove(&fh);
    }

    /// Opens a file for reading, at its current version; opening an existing file for
    /// writing is refused (objects are replaced whole, never edited).
    pub async fn open(&self, ino: u64, write: bool) -> Result<u64, Errno> {
        let attr = self.getattr(ino).await?;
        if attr.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        if write {
            return Err(if self.settings.read_only {
                libc::EROFS
            } else {
                libc::EPERM
            });
        }
        // Size and ETag from one look at the node, so that they describe one version.
        let (key, etag, size, local) = {
            let nodes = self.nodes.lock().expect("nodes lock");
            let node = nodes.by_ino.get(&ino).ok_or(libc::ENOENT)?;
            (
                self.key(&node.path),
                node.etag.clone(),
                node.size,
                node.local,
            )
        };
        if local {
            // Still being written through this mount: readable once it is closed.
            return Err(libc::EBUSY);
        }
        Ok(self.add_handle(Handle::Read { key, etag, size }))
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .expect("handles lock")
            .insert(fh, Arc::new(handle));
        fh
    }

    fn handle(&self, fh: u64) -> Result<Arc<Handle>, Errno> {
        self.handles
            .lock()
            .expect("handles lock")
            .get(&fh)
            .cloned()
            .ok_or(libc::EBADF)
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        match &*self.handle(fh)? {
            Handle::Read {
                key,
                etag,
                size: object_size,
            } => self
                .cache
                .read(
                    &self.remote,
                    key,
                    etag,
                    *object_size,
                    offset,
                    u64::from(size),
                )
                .await
                .map_err(errno),
            Handle::Write(_) => Err(libc::EBADF),
        }
    }

    /// The path of a name about to be made: refused on a read-only mount, or when the
    /// name is taken.
    async fn new_name(&self, parent: u64, name: &str) -> Result<String, Errno> {
        if self.settings.read_only {
            return Err(libc::EROFS);
        }
        let path = self.child_path(parent, name)?;
        match self.lookup(parent, name).await {
            Ok(_) => Err(libc::EEXIST),
            Err(libc::ENOENT) => Ok(path),
            Err(err) => Err(err),
        }
    }

    /// Creates a new file, written sequentially and uploaded when closed.
    pub async fn create(&self, parent: u64, name: &str, opener: u32) -> Result<(Attr, u64), Errno> {
        let path = self.new_name(parent, name).await?;
        let attr = {
            let mut nodes = self.nodes.lock().expect("nodes lock");
            let ino = nodes.ino_for(&path, Kind::File);
            let node = nodes.by_ino.get_mut(&ino).expect("just made");
            node.kind = Kind::File;
            node.size = 0;
            node.mtime = SystemTime::now();
            node.local = true;
            self.attr_of(node, ino)
        };
        let writer = Writer {
            ino: attr.ino,
            key: self.key(&path),
            opener,
            written: 0,
            buffer: Vec::new(),
            upload: None,
            committed: None,
        };
        let fh = self.add_handle(Handle::Write(tokio::sync::Mutex::new(writer)));
        Ok((attr, fh))
    }

    /// Appends to a file being written; writes must be sequential.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let handle = self.handle(fh)?;
        let Handle::Write(writer) = &*handle else {
            return Err(libc::EBADF);
        };
        let mut writer = writer.lock().await;
        if writer.committed.is_some() {
            tracing::warn!(
                "{}: writing after close or fsync is not supported",
                writer.key
            );
            return Err(libc::EINVAL);
        }
        if offset != writer.written {
            tracing::warn!(
                "{}: a write at offset {offset} where {} bytes were written; only sequential writes are supported",
                writer.key,
                writer.written
            );
            return Err(libc::EINVAL);
        }
        if writer.written + data.len() as u64 > self.settings.part_size * MAX_PARTS {
            tracing::warn!(
                "{}: larger than {MAX_PARTS} parts of --part-size; mount with a larger --part-size",
                writer.key
            );
            return Err(self.give_up(&mut writer, libc::EFBIG).await);
        }
        writer.buffer.extend_from_slice(data);
        writer.written += data.len() as u64;
        self.set_size(writer.ino, writer.written);
        while writer.buffer.len() as u64 >= self.settings.part_size {
            if let Err(code) = self.send_part(&mut writer).await {
                return Err(self.give_up(&mut writer, code).await);
            }
        }
        Ok(data.len() as u32)
    }

    /// A write failed: the file will not be created, and its close reports the failure.
    async fn give_up(&self, writer: &mut Writer, code: Errno) -> Errno {
        writer.committed = Some(Err(libc::EIO));
        writer.buffer = Vec::new();
        if let Some(upload) = writer.upload.take() {
            finish_parts(upload.parts).await;
            self.remote.abort_upload(&writer.key, &upload.id).await;
        }
        self.forget_written(writer.ino, false);
        code
    }

    fn set_size(&self, ino: u64, size: u64) {
        let mut nodes = self.nodes.lock().expect("nodes lock");
        if let Some(node) = nodes.by_ino.get_mut(&ino) {
            node.size = size;
            node.mtime = SystemTime::now();
        }
    }

    /// Sends one full part from the buffer, starting the multipart upload first if need
    /// be; waits while too many parts of this file are in flight.
    async fn send_part(&self, writer: &mut Writer) -> Result<(), Errno> {
        if writer.upload.is_none() {
            let id = self
                .remote
                .create_upload(&writer.key)
                .await
                .map_err(errno)?;
            writer.upload = Some(Upload {
                id,
                parts: Vec::new(),
            });
        }
        let part_size = self.settings.part_size as usize;
        let take = part_size.min(writer.buffer.len());
        let body: Vec<u8> = writer.buffer.drain(..take).collect();
        let key = writer.key.clone();
        let upload = writer.upload.as_mut().expect("started above");
        if upload.parts.iter().filter(|p| p.sending()).count() >= PARTS_IN_FLIGHT {
            if let Some(oldest) = upload.parts.iter_mut().find(|p| p.sending()) {
                let part = std::mem::replace(oldest, Part::Sent(Ok(String::new())));
                *oldest = Part::Sent(part.result().await);
            }
        }
        let number = upload.parts.len() as i32 + 1;
        let (remote, id) = (Arc::clone(&self.remote), upload.id.clone());
        upload.parts.push(Part::Sending(tokio::spawn(async move {
            remote.upload_part(&key, &id, number, body).await
        })));
        Ok(())
    }

    /// Makes a written file durable: the object is in the bucket when this returns Ok.
    /// A failure is returned (EIO) and the object is not created. Flushing again
    /// without new writes returns the same result. `closer` is the process closing a
    /// descriptor (None for fsync and release, which always commit): a close before any
    /// write, or by another process, leaves the file open for writing.
    pub async fn flush(&self, fh: u64, closer: Option<u32>) -> Result<(), Errno> {
        let handle = self.handle(fh)?;
        let Handle::Write(writer) = &*handle else {
            return Ok(());
        };
        let mut writer = writer.lock().await;
        if let Some(result) = writer.committed {
            return result;
        }
        if closer.is_some_and(|pid| pid != writer.opener || writer.written == 0) {
            return Ok(());
        }
        let result = self.commit(&mut writer).await;
        if let Err(err) = &result {
            tracing::warn!("{}: upload failed: {}", writer.key, err.message);
        }
        let result = result.map_err(|err| match err.kind {
            ErrorKind::Denied => libc::EACCES,
            _ => libc::EIO,
        });
        writer.committed = Some(result);
        self.forget_written(writer.ino, result.is_ok());
        result
    }

    /// After a file's commit: it is an object like any other (the server has the final
    /// word on its metadata), or, when it failed, it never existed.
    fn forget_written(&self, ino: u64, created: bool) {
        let mut nodes = self.nodes.lock().expect("nodes lock");
        let Some(node) = nodes.by_ino.get_mut(&ino) else {
            return;
        };
        node.local = false;
        node.checked = None;
        let path = node.path.clone();
        // The parent's listing predates the file.
        let parent = path
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent)
            .to_owned();
        nodes.listed.remove(&parent);
        if !created {
            nodes.by_path.remove(&path);
            nodes.by_ino.remove(&ino);
        }
    }

    async fn commit(&self, writer: &mut Writer) -> Result<(), RemoteError> {
        let Some(mut upload) = writer.upload.take() else {
            let body = std::mem::take(&mut writer.buffer);
            return self.remote.put(&writer.key, body).await;
        };
        let last = std::mem::take(&mut writer.buffer);
        if !last.is_empty() {
            let number = upload.parts.len() as i32 + 1;
            let (remote, key, id) = (
                Arc::clone(&self.remote),
                writer.key.clone(),
                upload.id.clone(),
            );
            upload.parts.push(Part::Sending(tokio::spawn(async move {
                remote.upload_part(&key, &id, number, last).await
            })));
        }
        let mut etags = Vec::new();
        let mut failure = None;
        for part in upload.parts {
            match part.result().await {
                Ok(etag) => etags.push(etag),
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        let result = match failure {
            Some(err) => Err(err),
            None => {
                self.remote
                    .complete_upload(&writer.key, &upload.id, etags)
                    .await
            }
        };
        if result.is_err() {
            self.remote.abort_upload(&writer.key, &upload.id).await;
        }
        result
    }

    /// Closes a handle; a written file not yet flushed is committed now (its errors can
    /// only be logged: the process has already closed it).
    pub async fn release(&self, fh: u64) {
        if let Ok(handle) = self.handle(fh) {
            if matches!(&*handle, Handle::Write(_)) {
                let _ = self.flush(fh, None).await;
            }
        }
        self.handles.lock().expect("handles lock").remove(&fh);
    }

    /// At unmount: aborts the multipart uploads of files that were never closed (their
    /// writers got no success from close, so nothing is lost that was promised).
    pub async fn abort_unfinished(&self) {
        let handles: Vec<Arc<Handle>> = self
            .handles
            .lock()
            .expect("handles lock")
            .values()
            .cloned()
            .collect();
        for handle in handles {
            if let Handle::Write(writer) = &*handle {
                let mut writer = writer.lock().await;
                if let (None, Some(upload)) = (writer.committed, writer.upload.take()) {
                    // Parts still on their way would outlive an abort sent before them.
                    finish_parts(upload.parts).await;
                    self.remote.abort_upload(&writer.key, &upload.id).await;
                }
            }
        }
    }

    /// Accepts a truncation to zero of a file just created (O_TRUNC); other size
    /// changes are refused. Times and modes are not kept by S3 and are left as they are.
    pub async fn setattr(&self, ino: u64, size: Option<u64>) -> Result<Attr, Errno> {
        let attr = self.getattr(ino).await?;
        match size {
            None => Ok(attr),
            Some(size) if size == attr.size => Ok(attr),
            Some(_) if self.settings.read_only => Err(libc::EROFS),
            Some(_) => Err(libc::EPERM),
        }
    }

    pub async fn mkdir(&self, parent: u64, name: &str) -> Result<Attr, Errno> {
        let path = self.new_name(parent, name).await?;
        self.remote
            .put(&self.dir_key(&path), Vec::new())
            .await
            .map_err(errno)?;
        Ok(self.record(&path, Kind::Dir, None))
    }

    /// Removes an empty directory (its marker object, if any).
    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<(), Errno> {
        if self.settings.read_only {
            return Err(libc::EROFS);
        }
        let path = self.child_path(parent, name)?;
        let attr = self.lookup(parent, name).await?;
        if attr.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        let marker = self.dir_key(&path);
        let listing = self.remote.list(&marker).await.map_err(errno)?;
        let only_marker =
            listing.dirs.is_empty() && listing.files.iter().all(|(name, _)| name.is_empty());
        if !only_marker {
            return Err(libc::ENOTEMPTY);
        }
        self.remote.delete(&marker).await.map_err(errno)?;
        self.forget_path(&path);
        Ok(())
    }

    /// Deletes a file's object, with `--allow-delete` only.
    pub async fn unlink(&self, parent: u64, name: &str) -> Result<(), Errno> {
        if self.settings.read_only {
            return Err(libc::EROFS);
        }
        if !self.settings.allow_delete {
            return Err(libc::EPERM);
        }
        let path = self.child_path(parent, name)?;
        let attr = self.lookup(parent, name).await?;
        if attr.kind == Kind::Dir {
            return Err(libc::EISDIR);
        }
        self.remote.delete(&self.key(&path)).await.map_err(errno)?;
        self.forget_path(&path);
        Ok(())
    }

    fn forget_path(&self, path: &str) {
        let mut nodes = self.nodes.lock().expect("nodes lock");
        if let Some(ino) = nodes.by_path.get(path).copied() {
            if let Some(node) = nodes.by_ino.get_mut(&ino) {
                node.checked = None;
            }
        }
        let parent = path
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent)
            .to_owned();
        nodes.listed.remove(&parent);
    }
}

/// The errno for a failed request; the cause goes to the log.
fn errno(err: RemoteError) -> Errno {
    match err.kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::Denied => libc::EACCES,
        ErrorKind::Changed | ErrorKind::Other => {
            tracing::warn!("{}", err.message);
            libc::EIO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::remote::memory::MemoryRemote;

    fn fs(
        remote: &Arc<MemoryRemote>,
        ttl: Duration,
        allow_delete: bool,
    ) -> (Fs<MemoryRemote>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(dir.path().to_path_buf(), 64 << 20).unwrap();
        let settings = FsSettings {
            prefix: "m/".into(),
            ttl,
            read_only: false,
            allow_delete,
            part_size: 5,
        };
        (Fs::new(Arc::clone(remote), cache, settings), dir)
    }

    async fn names(fs: &Fs<MemoryRemote>, ino: u64) -> Vec<(String, Kind)> {
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

    #[tokio::test]
    async fn prefixes_are_directories_and_names_are_kept_as_they_are() {
        let remote = Arc::new(MemoryRemote::default());
        for key in [
            "m/a",
            "m/a/b",
            "m/d/ü é 🎉.txt",
            "m/empty/",
            "m/x%20y",
            "other/z",
        ] {
            remote.insert(key, b"data");
        }
        let (fs, _dir) = fs(&remote, Duration::from_secs(1), false);
        assert_eq!(
            names(&fs, ROOT).await,
            [
                ("a".to_owned(), Kind::Dir),
                ("d".to_owned(), Kind::Dir),
                ("empty".to_owned(), Kind::Dir),
                ("x%20y".to_owned(), Kind::File)
            ]
        );
        let d = fs.lookup(ROOT, "d").await.unwrap();
        let file = fs.lookup(d.ino, "ü é 🎉.txt").await.unwrap();
        assert_eq!((file.kind, file.size), (Kind::File, 4));
        let empty = fs.lookup(ROOT, "empty").await.unwrap();
        assert!(
            names(&fs, empty.ino).await.is_empty(),
            "the marker is not a file"
        );
        assert_eq!(fs.lookup(ROOT, "nope").await, Err(libc::ENOENT));
        let fh = fs.open(file.ino, false).await.unwrap();
        assert_eq!(fs.read(fh, 1, 10).await.unwrap(), b"ata");
    }

    #[tokio::test]
    async fn written_files_are_in_the_bucket_when_flush_returns() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1), false);
        let (attr, fh) = fs.create(ROOT, "small", 1).await.unwrap();
        fs.write(fh, 0, b"abc").await.unwrap();
        assert_eq!(fs.getattr(attr.ino).await.unwrap().size, 3);
        assert!(
            remote.get("m/small").is_none(),
            "nothing is sent before close"
        );
        fs.flush(fh, Some(1)).await.unwrap();
        assert_eq!(remote.get("m/small").unwrap(), b"abc");

        // Bigger than a part (5 bytes here): parts go while the file is written.
        let (_, fh) = fs.create(ROOT, "big", 1).await.unwrap();
        let data: Vec<u8> = (0..23u8).collect();
        for (i, chunk) in data.chunks(4).enumerate() {
            fs.write(fh, i as u64 * 4, chunk).await.unwrap();
        }
        fs.flush(fh, Some(1)).await.unwrap();
        fs.release(fh).await;
        assert_eq!(remote.get("m/big").unwrap(), data);
        assert_eq!(remote.open_uploads(), 0);

        // Out-of-order writes, overwrites and writes after close are refused.
        let (_, fh) = fs.create(ROOT, "seq", 1).await.unwrap();
        assert_eq!(fs.write(fh, 10, b"x").await, Err(libc::EINVAL));
        let existing = fs.lookup(ROOT, "small").await.unwrap();
        assert_eq!(fs.open(existing.ino, true).await, Err(libc::EPERM));
        assert_eq!(fs.create(ROOT, "small", 1).await.err(), Some(libc::EEXIST));
        // A close before any write (a shell's `> file` closes a duplicate first), or by
        // another process, does not end the file.
        fs.flush(fh, Some(1)).await.unwrap();
        fs.write(fh, 0, b"hi").await.unwrap();
        fs.flush(fh, Some(2)).await.unwrap();
        assert!(remote.get("m/seq").is_none());
        fs.write(fh, 2, b"!").await.unwrap();
        // fsync ends it whoever asks; writing after that is refused.
        fs.flush(fh, None).await.unwrap();
        assert_eq!(remote.get("m/seq").unwrap(), b"hi!");
        assert_eq!(fs.write(fh, 3, b"late").await, Err(libc::EINVAL));
    }

    #[tokio::test]
    async fn a_failed_upload_fails_close_and_leaves_nothing() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1), false);
        remote.fail_writes.store(true, Ordering::Relaxed);
        for size in [3usize, 12] {
            let name = format!("f{size}");
            let (_, fh) = fs.create(ROOT, &name, 1).await.unwrap();
            let written = fs.write(fh, 0, &vec![1; size]).await;
            let closed = match written {
                Ok(_) => fs.flush(fh, Some(1)).await,
                Err(err) => Err(err),
            };
            assert_eq!(closed, Err(libc::EIO), "{size} bytes");
            fs.release(fh).await;
            assert_eq!(fs.lookup(ROOT, &name).await, Err(libc::ENOENT));
        }
        assert!(remote.keys().is_empty());
        assert_eq!(remote.open_uploads(), 0);
    }

    #[tokio::test]
    async fn changes_by_others_show_after_the_ttl() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_millis(200), true);
        assert!(names(&fs, ROOT).await.is_empty());
        remote.insert("m/new", b"from elsewhere");
        // Within the TTL the fresh listing answers; after it, the server does.
        assert_eq!(fs.lookup(ROOT, "new").await, Err(libc::ENOENT));
        tokio::time::sleep(Duration::from_millis(250)).await;
        let attr = fs.lookup(ROOT, "new").await.unwrap();
        assert_eq!(attr.size, 14);
        remote.insert("m/new", b"changed");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let fh = fs.open(attr.ino, false).await.unwrap();
        assert_eq!(fs.read(fh, 0, 100).await.unwrap(), b"changed");

        fs.unlink(ROOT, "new").await.unwrap();
        assert!(remote.get("m/new").is_none());
        let dir = fs.mkdir(ROOT, "dir").await.unwrap();
        assert_eq!(remote.get("m/dir/").unwrap(), b"");
        let (_, fh) = fs.create(dir.ino, "inside", 1).await.unwrap();
        fs.flush(fh, None).await.unwrap();
        assert_eq!(fs.rmdir(ROOT, "dir").await, Err(libc::ENOTEMPTY));
        fs.unlink(dir.ino, "inside").await.unwrap();
        fs.rmdir(ROOT, "dir").await.unwrap();
        assert!(remote.keys().is_empty());
    }

    #[tokio::test]
    async fn deleting_needs_allow_delete() {
        let remote = Arc::new(MemoryRemote::default());
        remote.insert("m/keep", b"x");
        let (fs, _dir) = fs(&remote, Duration::from_secs(1), false);
        assert_eq!(fs.unlink(ROOT, "keep").await, Err(libc::EPERM));
        assert!(remote.get("m/keep").is_some());
    }
}
