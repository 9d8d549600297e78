//! The FUSE side: each kernel request becomes a task on the runtime, which answers it
//! when the filesystem logic has; the FUSE thread never waits for S3.

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use super::fs::{Attr, Fs, Kind};
use super::remote::Remote;

pub struct Fuse<R: Remote> {
    ctx: Ctx<R>,
    runtime: Handle,
}

/// What a task needs: the filesystem, and who owns its files.
struct Ctx<R: Remote> {
    fs: Arc<Fs<R>>,
    uid: u32,
    gid: u32,
}

impl<R: Remote> Clone for Ctx<R> {
    fn clone(&self) -> Self {
        Self {
            fs: Arc::clone(&self.fs),
            uid: self.uid,
            gid: self.gid,
        }
    }
}

impl<R: Remote> Ctx<R> {
    fn attr(&self, attr: &Attr) -> FileAttr {
        let (perm, nlink) = match attr.kind {
            Kind::Dir => (0o755, 2),
            Kind::File => (0o644, 1),
        };
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512),
            atime: attr.mtime,
            mtime: attr.mtime,
            ctime: attr.mtime,
            crtime: attr.mtime,
            kind: kind_of(attr.kind),
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}

impl<R: Remote> Fuse<R> {
    pub fn new(fs: Arc<Fs<R>>, runtime: Handle, uid: u32, gid: u32) -> Self {
        Self {
            ctx: Ctx { fs, uid, gid },
            runtime,
        }
    }

    /// Runs a request's work on the runtime.
    fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Ctx<R>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(work(self.ctx.clone()));
    }
}

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), i32>) {
    match result {
        Ok(()) => reply.ok(),
        Err(code) => reply.error(errno(code)),
    }
}

fn name_of(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_owned)
}

fn kind_of(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    }
}

impl<R: Remote> Filesystem for Fuse<R> {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name_of(name) else {
            return reply.error(errno(libc::ENOENT));
        };
        self.spawn(|ctx| async move {
            match ctx.fs.lookup(parent.0, &name).await {
                Ok(attr) => reply.entry(&ctx.fs.ttl(), &ctx.attr(&attr), Generation(0)),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.spawn(|ctx| async move {
            match ctx.fs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&ctx.fs.ttl(), &ctx.attr(&attr)),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.spawn(|ctx| async move {
            match ctx.fs.setattr(ino.0, size).await {
                Ok(attr) => reply.attr(&ctx.fs.ttl(), &ctx.attr(&attr)),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = name_of(name) else {
            return reply.error(errno(libc::EINVAL));
        };
        self.spawn(|ctx| async move {
            match ctx.fs.mkdir(parent.0, &name).await {
                Ok(attr) => reply.entry(&ctx.fs.ttl(), &ctx.attr(&attr), Generation(0)),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_of(name) else {
            return reply.error(errno(libc::ENOENT));
        };
        self.spawn(|ctx| async move { reply_empty(reply, ctx.fs.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name_of(name) else {
            return reply.error(errno(libc::ENOENT));
        };
        self.spawn(|ctx| async move { reply_empty(reply, ctx.fs.rmdir(parent.0, &name).await) });
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // S3 has no rename: a copy and a delete would not be atomic.
        tracing::warn!("rename {name:?}: not supported (S3 cannot rename atomically)");
        reply.error(errno(libc::ENOTSUP));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        self.spawn(|ctx| async move {
            match ctx.fs.open(ino.0, write).await {
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
        self.spawn(|ctx| async move {
            match ctx.fs.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(code) => reply.error(errno(code)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
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
        self.spawn(|ctx| async move {
            match ctx.fs.write(fh.0, offset, &data).await {
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
        let closer = Some(req.pid());
        self.spawn(|ctx| async move { reply_empty(reply, ctx.fs.flush(fh.0, closer).await) });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|ctx| async move { reply_empty(reply, ctx.fs.flush(fh.0, None).await) });
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
        self.spawn(|ctx| async move {
            ctx.fs.release(fh.0).await;
            reply.ok();
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(|ctx| async move {
            match ctx.fs.opendir(ino.0).await {
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
        let entries = match self.ctx.fs.dir_entries(fh.0) {
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
        self.ctx.fs.releasedir(fh.0);
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = name_of(name) else {
            return reply.error(errno(libc::EINVAL));
        };
        let opener = req.pid();
        self.spawn(|ctx| async move {
            match ctx.fs.create(parent.0, &name, opener).await {
                Ok((attr, fh)) => reply.created(
                    &ctx.fs.ttl(),
                    &ctx.attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(code) => reply.error(errno(code)),
            }
        });
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
