//! The FUSE side: each kernel request becomes a task on the runtime, which answers it
//! when the filesystem logic has; the FUSE thread never waits for S3.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use rustix::fs::OFlags;
use tokio::runtime::Handle;

use std::time::{Duration, SystemTime};

use super::attrs::AttrChange;
use super::fs::{Attr, Caller, Fs, Kind};
use super::remote::Remote;

pub struct Fuse<R: Remote> {
    fs: Arc<Fs<R>>,
    runtime: Handle,
}

fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: kind_of(attr.kind),
        perm: attr.perm,
        nlink: if attr.kind == Kind::Dir { 2 } else { 1 },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        pid: req.pid(),
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time_of(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl<R: Remote> Fuse<R> {
    pub fn new(fs: Arc<Fs<R>>, runtime: Handle) -> Self {
        Self { fs, runtime }
    }

    /// Runs a request's work on the runtime.
    fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<Fs<R>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work(Arc::clone(&self.fs)));
    }
}

fn reply_entry(reply: ReplyEntry, ttl: Duration, result: Result<Attr, rustix::io::Errno>) {
    match result {
        Ok(attr) => reply.entry(&ttl, &file_attr(&attr), Generation(0)),
        Err(code) => reply.error(errno(code)),
    }
}

/// The filesystem's errno, as FUSE replies with it.
fn errno(code: rustix::io::Errno) -> Errno {
    Errno::from_i32(code.raw_os_error())
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), rustix::io::Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(code) => reply.error(errno(code)),
    }
}

/// The open(2) flags the kernel passes on, every bit kept.
fn open_flags(flags: i32) -> OFlags {
    OFlags::from_bits_retain(flags as u32)
}

fn name_of(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_owned)
}

fn kind_of(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

impl<R: Remote> Filesystem for Fuse<R> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_of(name) else {
            return reply.error(Errno::ENOENT);
        };
        self.spawn(|fs| async move {
            let ttl = fs.ttl();
            reply_entry(reply, ttl, fs.lookup(parent.0, &name).await);
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // Only the table's lock: no request, so it stays on this thread.
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn(|fs| async move {
            match fs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&fs.ttl(), &file_attr(&attr)),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            size,
            mtime: mtime.map(time_of),
            fh: fh.map(|fh| fh.0),
        };
        // The kernel has checked who may change what (default_permissions).
        self.spawn(|fs| async move {
            match fs.setattr(ino.0, change).await {
                Ok(attr) => reply.attr(&fs.ttl(), &file_attr(&attr)),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(|fs| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        let caller = caller(req);
        self.spawn(|fs| async move {
            let ttl = fs.ttl();
            reply_entry(reply, ttl, fs.mkdir(parent.0, &name, mode, caller).await);
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (Some(name), Some(target)) = (name_of(link_name), target.to_str().map(str::to_owned))
        else {
            return reply.error(Errno::EINVAL);
        };
        let caller = caller(req);
        self.spawn(|fs| async move {
            let ttl = fs.ttl();
            reply_entry(
                reply,
                ttl,
                fs.symlink(parent.0, &name, &target, caller).await,
            );
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_of(name) else {
            return reply.error(Errno::ENOENT);
        };
        self.spawn(|fs| async move { reply_empty(reply, fs.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_of(name) else {
            return reply.error(Errno::ENOENT);
        };
        self.spawn(|fs| async move { reply_empty(reply, fs.rmdir(parent.0, &name).await) });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (Some(name), Some(newname)) = (name_of(name), name_of(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            // Two objects cannot trade names at once in S3.
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.spawn(|fs| async move {
            let result = fs
                .rename(parent.0, &name, newparent.0, &newname, no_replace)
                .await;
            reply_empty(reply, result);
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let caller = caller(req);
        self.spawn(|fs| async move {
            match fs.open(ino.0, open_flags(flags.0), caller).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(|fs| async move {
            match fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        let pid = req.pid();
        self.spawn(|fs| async move {
            match fs.write(fh.0, offset, &data, pid).await {
                Ok(written) => reply.written(written),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let closer = req.pid();
        self.spawn(|fs| async move { reply_empty(reply, fs.flush(fh.0, closer).await) });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|fs| async move { reply_empty(reply, fs.fsync(fh.0).await) });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|fs| async move {
            fs.release(fh.0).await;
            reply.ok();
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(|fs| async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Served from the listing taken at opendir: no request, so it stays on this thread.
        let entries = match self.fs.dir_entries(fh.0) {
            Ok(entries) => entries,
            Err(code) => return reply.error(errno(code)),
        };
        for (i, entry) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(entry.ino),
                i as u64 + 1,
                kind_of(entry.kind),
                &entry.name,
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name_of(name) else {
            return reply.error(Errno::EINVAL);
        };
        let caller = caller(req);
        self.spawn(|fs| async move {
            match fs
                .create(parent.0, &name, mode, open_flags(flags), caller)
                .await
            {
                Ok((attr, fh)) => reply.created(
                    &fs.ttl(),
                    &file_attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    // Extended attributes are not kept: ENOSYS tells the kernel so once, and it stops
    // asking (programs then see EOPNOTSUPP, as on a file system without them).
    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A bucket has no size limit: report plenty of room.
        let blocks = u64::MAX / 2 / (1 << 20);
        reply.statfs(
            blocks,
            blocks,
            blocks,
            u64::MAX / 2,
            u64::MAX / 2,
            1 << 20,
            1024,
            1 << 20,
        );
    }
}
