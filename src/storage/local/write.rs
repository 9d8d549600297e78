//! Writes into the destination directory through a temporary file in the same
//! directory, made durable and given its final mtime before it is renamed into place.
//! A write returns once the bytes are written and checked, with a `Landing` that ends
//! once the file has its name: the sync and rename happen behind it, so that a file
//! waiting for the disk holds no transfer.
//!
//! Invariant: a file under its final name is always complete. A crash leaves at most a
//! `.s3mirror-tmp-*` file, which listings ignore.
//!
//! The runtime thread only receives bytes. Everything that touches the file system or
//! hashes runs on a blocking thread, one job per file (or per range of a large file):
//! the runtime thread hands each job the chunks it received, uncopied, in blocks of at
//! least `BLOCK` bytes through a short channel, so a download costs it no system call and
//! no copy, and hashing and `fsync` run on as many cores as there are files in flight.

use std::fs::File;
use std::future::Future;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use rustix::fs::OFlags;
use tokio::sync::{mpsc, oneshot};

use super::durable::Durability;
use super::{digests_as_written, refuse_links_between, LocalStore, TEMP_PREFIX};
use crate::storage::checksum::Hasher;
use crate::storage::s3::{describe_body_error, PartSettings};
use crate::storage::{Expected, ObjectError, RangeCheck, StreamCheck};

/// Bytes handed to a file's blocking job at a time, at the least (but for the last): the
/// chunks received until they add up to this. A body of one block is received whole
/// before its job starts, and most files of a typical tree are that small.
const BLOCK: usize = 256 * 1024;

/// Blocks a job may have waiting, beyond the one it writes and the one being filled: a
/// download holds at most six blocks, each `BLOCK` and one chunk, however slow the disk.
/// Room for a megabyte lets the runtime thread drain a connection while the job waits for
/// a thread or the disk; one block of room held the server's answer back in the socket,
/// which cost the server CPU and a restore of the seed-like set about 5 % of its time.
const BLOCKS_AHEAD: usize = 4;

/// Chunks of a body as they were received, written with one system call; empty, the end
/// of the bytes.
type Block = Vec<Bytes>;

/// The most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const MAX_BUFFERS: usize = 1024;

/// Distinguishes the temporary files of concurrent writes in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Bytes on their way into a local file.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub size: u64,
    pub mtime: SystemTime,
    /// Where the bytes come from, named in errors about receiving them.
    pub source: &'a str,
    /// What they must hash to.
    pub expected: &'a Expected,
}

/// A file whose bytes are written and checked, on its way to its final name: made
/// durable, then renamed into place. Dropped, the file still lands; only its outcome is
/// not heard.
#[derive(Debug)]
#[must_use = "a file has landed only once its landing ends"]
pub struct Landing(Option<(oneshot::Receiver<Result<(), ObjectError>>, String)>);

impl Landing {
    /// Nothing left to do: the copy ended where it was written.
    pub fn done() -> Self {
        Self(None)
    }

    /// Ends once the file is durable under its final name, or failed to be.
    pub async fn landed(self) -> Result<(), ObjectError> {
        let Some((outcome, described)) = self.0 else {
            return Ok(());
        };
        outcome.await.unwrap_or_else(|_| {
            // Only if the thread that syncs files ended before this one's turn.
            Err(ObjectError::new(
                "sync",
                &described,
                "the file was never made durable, so it was not renamed into place; run again",
            ))
        })
    }
}

impl LocalStore {
    /// Writes `incoming.size` bytes from `body` to `key`, checks them as they stream
    /// in and sets the mtime.
    pub async fn write(
        &self,
        key: &str,
        body: impl Stream<Item = std::io::Result<Bytes>>,
        incoming: Incoming<'_>,
    ) -> Result<Landing, ObjectError> {
        let target = self.target(key, incoming)?;
        // A body of one block is received whole before its job starts: the job then never
        // waits for bytes, and the hand-over costs one thread wake-up instead of three.
        let whole = incoming.size <= BLOCK as u64;
        let (tx, mut rx) = mpsc::channel::<Block>(if whole { 2 } else { BLOCKS_AHEAD });
        let job = move || {
            let temp = target.create()?;
            let mut check = StreamCheck::new(&target.expected);
            let mut at = 0;
            while let Some(block) = rx.blocking_recv() {
                if block.is_empty() {
                    // The end: every byte came as announced.
                    return target.commit(temp, check.finish());
                }
                block.iter().for_each(|chunk| check.update(chunk));
                at = write_block(&temp.file, &block, at)
                    .map_err(io_error("write", &target.described))?;
            }
            // The sender was dropped: the copy failed or was given up, and says so.
            Err(ObjectError::new("write", &target.described, "cut short"))
        };
        if whole {
            if let Received::Failed(err) = send_blocks(body, incoming, tx).await {
                return Err(err);
            }
            return run_blocking(job).await;
        }
        let job = run_blocking(job);
        let received = send_blocks(body, incoming, tx).await;
        finish(received, job).await
    }

    /// Copies a local file to `key` (with `copy_file_range` where the file system allows),
    /// checking that it still has the listed size, and sets the mtime.
    pub async fn copy_file(
        &self,
        key: &str,
        source: &Path,
        incoming: Incoming<'_>,
    ) -> Result<Landing, ObjectError> {
        let target = self.target(key, incoming)?;
        let (source, described) = (source.to_path_buf(), incoming.source.to_owned());
        run_blocking(move || {
            let mut from =
                File::open(&source).map_err(|err| ObjectError::new("open", &described, err))?;
            let mut temp = target.create()?;
            let copied = std::io::copy(&mut from, &mut temp.file)
                .map_err(io_error("copy to", &target.described))?;
            if copied != target.size {
                return Err(ObjectError::transient(
                    "read",
                    &described,
                    format!(
                        "expected {} bytes but read {copied}; the file changed while it was copied",
                        target.size
                    ),
                ));
            }
            target.commit(temp, None)
        })
        .await
    }

    /// Writes bytes fetched as ranges (of the object's part size when its promise is about
    /// parts, else of the run's), up to the part concurrency at once (each also holding one
    /// of the shared permits), each into its place by its own job, which hashes it when
    /// that is how the object can be checked; otherwise one more job hashes the file in
    /// order as its ranges land.
    pub async fn write_ranges<F, Fut, S>(
        &self,
        key: &str,
        incoming: Incoming<'_>,
        parts: &PartSettings,
        fetch: F,
    ) -> Result<Landing, ObjectError>
    where
        F: Fn(u64, u64) -> Fut,
        Fut: Future<Output = Result<S, ObjectError>>,
        S: Stream<Item = std::io::Result<Bytes>>,
    {
        let target = Arc::new(self.target(key, incoming)?);
        let size = incoming.size;
        let range_size = incoming
            .expected
            .part_size()
            .filter(|&p| p >= crate::storage::s3::MIN_PART_SIZE)
            .unwrap_or(parts.part_size)
            .max(1);
        let how = incoming.expected.by_ranges(range_size);
        let made = Arc::clone(&target);
        let temp = run_blocking(move || {
            let temp = made.create()?;
            temp.file
                .set_len(made.size)
                .map_err(io_error("allocate", &made.described))?;
            Ok(temp)
        })
        .await?;
        let file = Arc::new(
            temp.file
                .try_clone()
                .map_err(io_error("open", &target.described))?,
        );
        // A promise that needs the bytes in order is checked by a job that follows the
        // ranges as they land.
        let (written, follower) = match (how, target.expected.request()) {
            (None, Some(request)) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let (file, described) = (Arc::clone(&file), target.described.clone());
                let job = run_blocking(move || {
                    digests_as_written(&file, size, &[request], rx)
                        .map_err(io_error("verify", &described))
                });
                (Some(tx), Some(job))
            }
            _ => (None, None),
        };
        let ranges = (0..size.div_ceil(range_size))
            .map(|i| (i * range_size, range_size.min(size - i * range_size)));
        let hashers: Result<Vec<(u64, Option<Hasher>)>, ObjectError> =
            futures::stream::iter(ranges)
                .map(|(offset, len)| {
                    let (fetch, file, target) = (&fetch, Arc::clone(&file), Arc::clone(&target));
                    let written = written.clone();
                    async move {
                        let _permit = parts
                            .permits
                            .acquire()
                            .await
                            .expect("part permits are never closed");
                        let body = fetch(offset, offset + len - 1).await?;
                        let (tx, rx) = mpsc::channel::<Block>(BLOCKS_AHEAD);
                        let job = run_blocking(move || {
                            write_range(&file, offset, len, how, rx, &target.described)
                        });
                        let source =
                            format!("{} bytes {offset}-{}", incoming.source, offset + len - 1);
                        let range = Incoming {
                            size: len,
                            source: &source,
                            ..incoming
                        };
                        let hasher = finish(send_blocks(body, range, tx).await, job).await?;
                        if let Some(written) = written {
                            let _ = written.send((offset, len));
                        }
                        Ok((offset, hasher))
                    }
                })
                .buffer_unordered(parts.concurrency)
                .try_collect()
                .await;
        // Ends the follower's announcements, so that it stops when a range failed.
        drop(written);
        let followed = match follower {
            Some(job) => job.await?,
            None => None,
        };
        let mut hashers = hashers?;
        hashers.sort_unstable_by_key(|(offset, _)| *offset);
        drop(file);
        run_blocking(move || {
            let verdict = match (how, followed) {
                (Some(how), _) => {
                    let hashers = hashers.into_iter().filter_map(|(_, h)| h).collect();
                    Some(target.expected.check_ranges(how, hashers))
                }
                (None, Some(mut read)) => Some(target.expected.check(&read.digests.remove(0))),
                (None, None) if target.expected.request().is_some() => {
                    Some(Err("the written ranges did not cover the file".to_owned()))
                }
                (None, None) => None,
            };
            target.commit(temp, verdict)
        })
        .await
    }

    /// Where `key` goes, checked for what can be checked before any file is touched.
    fn target(&self, key: &str, incoming: Incoming<'_>) -> Result<Target, ObjectError> {
        let described = self.describe(key);
        let path = self
            .path_for(key)
            .map_err(|why| ObjectError::new("write", &described, why))?;
        Ok(Target {
            root: self.root().to_path_buf(),
            dirs: Arc::clone(&self.dirs),
            durability: Arc::clone(&self.durability),
            path,
            described,
            size: incoming.size,
            mtime: incoming.mtime,
            source: incoming.source.to_owned(),
            expected: incoming.expected.clone(),
        })
    }
}

/// A file about to be written, as its blocking jobs need it.
struct Target {
    root: PathBuf,
    dirs: Arc<KnownDirs>,
    durability: Arc<Durability>,
    path: PathBuf,
    described: String,
    size: u64,
    mtime: SystemTime,
    source: String,
    expected: Expected,
}

/// Directories known to exist below the root, and to be no links: the last few hundred
/// a run wrote into (it writes in key order, so a directory's files come together).
#[derive(Default)]
pub(super) struct KnownDirs(std::sync::Mutex<std::collections::HashSet<PathBuf>>);

impl KnownDirs {
    const HELD: usize = 512;

    fn contains(&self, dir: &Path) -> bool {
        self.held().contains(dir)
    }

    fn insert(&self, dir: &Path) {
        let mut held = self.held();
        if held.len() >= Self::HELD {
            held.clear();
        }
        held.insert(dir.to_path_buf());
    }

    /// Forgets `dir`, found gone.
    fn forget(&self, dir: &Path) {
        self.held().remove(dir);
    }

    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<PathBuf>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A temporary file being filled, removed when it is dropped before its rename into
/// place: an error, a panic, or a copy given up half-way.
struct Temp {
    file: File,
    path: tempfile::TempPath,
    _listed: InFlight,
}

impl Target {
    /// Creates the parent directory and a temporary file beside the target.
    fn create(&self) -> Result<Temp, ObjectError> {
        let parent = self.path.parent().unwrap_or(&self.root);
        if !self.dirs.contains(parent) {
            self.make_parent(parent)?;
            self.dirs.insert(parent);
        }
        self.durability.prepare(&self.root);
        let path = temp_path(parent);
        let Some(listed) = InFlight::list(&path) else {
            return Err(ObjectError::new(
                "write",
                &self.described,
                "the run is being interrupted",
            ));
        };
        let create = io_error("create", &self.described);
        // Removes the file from here on, however the write ends but by its rename.
        let unfinished = tempfile::TempPath::try_from_path(&path).map_err(&create)?;
        let file = match create_temp(&path) {
            // A directory known to exist was removed since (a delete emptied it).
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.dirs.forget(parent);
                self.make_parent(parent)?;
                create_temp(&path)
            }
            made => made,
        };
        Ok(Temp {
            file: file.map_err(create)?,
            path: unfinished,
            _listed: listed,
        })
    }

    /// Makes the parent directory, refusing a path through a symbolic link.
    fn make_parent(&self, parent: &Path) -> Result<(), ObjectError> {
        refuse_links_between(&self.root, &self.path)
            .map_err(|why| ObjectError::new("write", &self.described, why))?;
        std::fs::create_dir_all(parent).map_err(|err| {
            let in_the_way = matches!(
                err.kind(),
                std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists
            );
            match in_the_way {
                true => ObjectError::new(
                    "create directory",
                    &self.described,
                    format!("{err}: a file is in the way, for another key is a leading part of this one (as 'a' is of 'a/b'); a directory tree cannot hold both"),
                ),
                false => io_error("create directory", &self.described)(err),
            }
        })
    }

    /// Takes the verdict on the temporary file's content (reached while its bytes came
    /// in; None when there was nothing to check) and gives the file its mtime and mode;
    /// then hands it over to be made durable and renamed into place.
    fn commit(
        &self,
        temp: Temp,
        verdict: Option<Result<(), String>>,
    ) -> Result<Landing, ObjectError> {
        if let Some(Err(why)) = verdict {
            return Err(ObjectError::transient("verify", &self.source, why));
        }
        let Temp {
            file,
            path,
            _listed: listed,
        } = temp;
        file.set_modified(self.mtime)
            // Unchecked bytes were private; the file takes its mode with its name.
            .and_then(|()| {
                file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
                    crate::private::default_file_mode(),
                ))
            })
            .map_err(io_error("sync", &self.described))?;
        let (outcome, landing) = oneshot::channel();
        let (to, described) = (self.path.clone(), self.described.clone());
        let landing = Landing(Some((landing, described.clone())));
        let rename = move |synced: std::io::Result<()>| {
            let landed = synced
                .map_err(io_error("sync", &described))
                .and_then(|()| rename_into_place(path, &to, &described));
            // Still in the interrupt's list until renamed or removed.
            drop(listed);
            let _ = outcome.send(landed);
        };
        self.durability.make_durable(file, Box::new(rename));
        Ok(landing)
    }
}

/// Gives a durable temporary file its final name.
fn rename_into_place(
    temp: tempfile::TempPath,
    to: &Path,
    described: &str,
) -> Result<(), ObjectError> {
    temp.persist(to).map_err(|err| {
        let err = err.error;
        match err.kind() == std::io::ErrorKind::IsADirectory {
            true => ObjectError::new(
                "rename",
                described,
                format!("{err}: a directory is in the way, for other keys continue this one (as 'a/b' does 'a'); a directory tree cannot hold both"),
            ),
            false => io_error("rename", described)(err),
        }
    })
}

/// Writes the range at `offset` from the blocks received, hashing it if `how` says so.
fn write_range(
    file: &File,
    offset: u64,
    len: u64,
    how: Option<RangeCheck>,
    mut blocks: mpsc::Receiver<Block>,
    described: &str,
) -> Result<Option<Hasher>, ObjectError> {
    let mut hasher = how.map(|how| Hasher::new(how.kind()));
    let mut at = offset;
    while let Some(block) = blocks.blocking_recv() {
        if block.is_empty() {
            start_writeback(file, offset, len);
            return Ok(hasher);
        }
        if let Some(hasher) = &mut hasher {
            block.iter().for_each(|chunk| hasher.update(chunk));
        }
        at = write_block(file, &block, at).map_err(io_error("write", described))?;
    }
    Err(ObjectError::new("write", described, "cut short"))
}

/// Starts writing a range of `file` to disk without waiting for it, so that the fsync
/// before the rename finds little left to do. Only a hint: the fsync still decides.
/// (rustix has no `sync_file_range`.)
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of this process; the descriptor is open
    // for as long as `file` is borrowed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Starts `job` on a blocking thread at once; the future gives its result.
fn run_blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> impl Future<Output = Result<T, ObjectError>> {
    let job = tokio::task::spawn_blocking(job);
    async move {
        job.await
            .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
    }
}

/// What the runtime thread's half of a write came to.
enum Received {
    All,
    /// The bytes did not arrive as they should.
    Failed(ObjectError),
    /// The blocking job stopped taking them; its result says why.
    Refused,
}

/// The result of a write from both halves: a failure to receive the bytes is the cause
/// of whatever the job then saw.
async fn finish<T>(
    received: Received,
    job: impl Future<Output = Result<T, ObjectError>>,
) -> Result<T, ObjectError> {
    let written = job.await;
    match received {
        Received::Failed(err) => Err(err),
        Received::All | Received::Refused => written,
    }
}

/// Receives exactly `incoming.size` bytes from `body` and sends them in blocks of at
/// least `BLOCK` (but for the last), then an empty block to say they all came. A failure
/// to receive them (the connection dropped, the body cut short or longer than announced)
/// is transient and names the source.
async fn send_blocks(
    body: impl Stream<Item = std::io::Result<Bytes>>,
    incoming: Incoming<'_>,
    tx: mpsc::Sender<Block>,
) -> Received {
    let mut body = std::pin::pin!(body);
    let len = incoming.size;
    let (mut block, mut gathered) = (Block::new(), 0);
    let mut received = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(err) => {
                let why = describe_body_error(&err, incoming.expected.stated_checksum());
                return Received::Failed(ObjectError::transient("receive", incoming.source, why));
            }
        };
        received += chunk.len() as u64;
        if received > len {
            break;
        }
        if chunk.is_empty() {
            continue;
        }
        gathered += chunk.len();
        block.push(chunk);
        if gathered >= BLOCK {
            gathered = 0;
            if tx.send(std::mem::take(&mut block)).await.is_err() {
                return Received::Refused;
            }
        }
    }
    if received != len {
        let received = match received > len {
            true => "more".to_owned(),
            false => received.to_string(),
        };
        return Received::Failed(ObjectError::transient(
            "receive",
            incoming.source,
            format!(
                "expected {len} bytes but received {received}; the transfer was cut short \
                 or the source changed"
            ),
        ));
    }
    if !block.is_empty() && tx.send(block).await.is_err() {
        return Received::Refused;
    }
    // An empty block ends the bytes: a job commits nothing without it.
    match tx.send(Block::new()).await {
        Ok(()) => Received::All,
        Err(_) => Received::Refused,
    }
}

/// Writes a block's chunks at `at`, in as few system calls as the kernel takes them;
/// returns where the next block goes.
fn write_block(file: &File, block: &[Bytes], mut at: u64) -> std::io::Result<u64> {
    let mut buffers: Vec<IoSlice<'_>> = block.iter().map(|chunk| IoSlice::new(chunk)).collect();
    let mut buffers = &mut buffers[..];
    while !buffers.is_empty() {
        let batch = buffers.len().min(MAX_BUFFERS);
        let written = rustix::io::pwritev(file, &buffers[..batch], at)?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        at += written as u64;
        IoSlice::advance_slices(&mut buffers, written);
    }
    Ok(at)
}

/// An error of a local file operation; a full disk and too many open files get the
/// obvious advice.
fn io_error<'a>(op: &'static str, target: &'a str) -> impl Fn(std::io::Error) -> ObjectError + 'a {
    move |err| {
        if err.kind() == std::io::ErrorKind::StorageFull {
            let cause = format!("{err}; free space on the destination file system and run again");
            return ObjectError::new(op, target, cause);
        }
        if err.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) {
            let cause = format!(
                "{err}; raise the hard limit on open files (ulimit -Hn, LimitNOFILE=) or lower --threads"
            );
            return ObjectError::new(op, target, cause);
        }
        ObjectError::new(op, target, err)
    }
}

/// A temporary file only its owner can read until its bytes are checked; created new
/// (never through a link planted at its name).
fn create_temp(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// `.s3mirror-tmp-OWNER.N.RANDOM`: the process that owns it (see `liveness`), so that a
/// later run can tell one left by a killed process, and a part no one can guess, so
/// that no link can be planted at the name beforehand.
pub(super) fn temp_path(dir: &Path) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let owner = OWNER.get_or_init(crate::liveness::owner_id);
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    // Seeded from the system's random source for every RandomState.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    dir.join(format!("{TEMP_PREFIX}{owner}.{n}.{random:016x}"))
}

/// Whether a temporary file's name says its process is gone (killed before it could
/// remove it).
pub fn is_orphaned_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX) else {
        return false;
    };
    let mut fields = rest.rsplitn(3, '.');
    let (Some(_random), Some(_n), Some(owner)) = (fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    !crate::liveness::is_running(owner)
}

/// Temporary files being filled now, removed by `remove_temps_in_flight` when the run
/// is interrupted (the tasks filling them never get to).
static IN_FLIGHT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn in_flight() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    IN_FLIGHT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A temporary file's place in `IN_FLIGHT`, for as long as this lives.
struct InFlight(PathBuf);

impl InFlight {
    /// Lists `path`, unless the run is being interrupted (checked under the lock that
    /// interruption takes, so no file slips past it).
    fn list(path: &Path) -> Option<Self> {
        let mut temps = in_flight();
        if CLOSED.load(Ordering::SeqCst) {
            return None;
        }
        temps.push(path.to_path_buf());
        Some(Self(path.to_path_buf()))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().retain(|path| path != &self.0);
    }
}

/// Set once the run is interrupted: no temporary file is made after it.
static CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Removes every temporary file of downloads still under way (at SIGINT or SIGTERM), and
/// lets no new one be made.
pub fn remove_temps_in_flight() -> usize {
    CLOSED.store(true, Ordering::SeqCst);
    // Kept listed: a task may create its file after this; a second call removes it.
    let temps = in_flight().clone();
    temps
        .iter()
        .filter(|path| std::fs::remove_file(path).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use tokio::sync::Semaphore;

    /// `data` as a body arriving in chunks of 10,000 bytes (the last shorter), which
    /// blocks do not divide evenly.
    fn body(data: &[u8]) -> impl Stream<Item = std::io::Result<Bytes>> {
        let chunks: Vec<_> = data
            .chunks(10_000)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        futures::stream::iter(chunks)
    }

    fn incoming(size: u64, mtime: SystemTime, expected: &Expected) -> Incoming<'_> {
        Incoming {
            size,
            mtime,
            source: "s3://b/k",
            expected,
        }
    }

    /// Waits until `dir` holds nothing (the job of a failed write removes its file on
    /// its thread), failing after a while.
    async fn until_empty(dir: &Path) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let left = || std::fs::read_dir(dir).map_or(0, |entries| entries.count());
        while left() > 0 {
            assert!(std::time::Instant::now() < deadline, "a file was left");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_write_dropped_half_way_leaves_no_temporary_file() {
        // Received whole before its job starts, and streamed to a job as it comes.
        for size in [1000, 3 * BLOCK as u64] {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::new(dir.path().to_path_buf());
            let first = body(b"the first bytes");
            let write = store.write(
                "sub/k",
                first.chain(futures::stream::pending()),
                incoming(size, SystemTime::now(), &Expected::Unknown),
            );
            // The rest never comes: the copy is dropped while it waits for it.
            let dropped = tokio::time::timeout(Duration::from_millis(200), write).await;
            assert!(dropped.is_err());
            until_empty(&dir.path().join("sub")).await;
            assert!(!in_flight().iter().any(|p| p.starts_with(dir.path())));
        }
    }

    #[tokio::test]
    async fn damaged_bytes_never_reach_the_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let md5 = |data: &[u8]| -> [u8; 16] {
            crate::storage::checksum::digest(crate::storage::checksum::HashKind::Md5, data)
                .try_into()
                .unwrap()
        };
        let expected = Expected::from_etag(&crate::storage::ETag::from_md5(&md5(b"hello")), None);
        let err = store
            .write(
                "f",
                body(b"hellp"),
                incoming(5, SystemTime::now(), &expected),
            )
            .await
            .unwrap_err();
        assert!(err.transient, "{err}");
        assert!(err.to_string().contains("verify s3://b/k"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        store
            .write(
                "f",
                body(b"hello"),
                incoming(5, SystemTime::now(), &expected),
            )
            .await
            .unwrap()
            .landed()
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"hello");

        // Ranges are checked by reading the file back.
        let parts = PartSettings {
            part_size: 2,
            concurrency: 2,
            permits: std::sync::Arc::new(Semaphore::new(2)),
            buffers: std::sync::Arc::new(Semaphore::new(1)),
        };
        let fetch = |first: u64, last: u64| async move {
            let mut slice = b"hello"[first as usize..=last as usize].to_vec();
            if first == 2 {
                slice[0] = b'L';
            }
            Ok::<_, ObjectError>(body(&slice))
        };
        let err = store
            .write_ranges(
                "g",
                incoming(5, SystemTime::now(), &expected),
                &parts,
                fetch,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        assert!(!dir.path().join("g").exists());
    }

    #[tokio::test]
    async fn ranges_are_checked_as_they_come_where_the_promise_allows() {
        use crate::storage::checksum::{digest, HashKind};
        use crate::storage::{Checksum, ChecksumAlgorithm};
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let crc = ChecksumAlgorithm::Crc32c;
        let expected = Expected::Checksum {
            checksum: Checksum::full(crc, &digest(HashKind::Checksum(crc), &data)),
            part_size: None,
        };
        let parts = PartSettings {
            part_size: 300,
            concurrency: 3,
            permits: std::sync::Arc::new(Semaphore::new(3)),
            buffers: std::sync::Arc::new(Semaphore::new(1)),
        };
        for (name, damage) in [("good", None), ("bad", Some(700))] {
            let fetch = |first: u64, last: u64| {
                let mut slice = data[first as usize..=last as usize].to_vec();
                if let Some(at) = damage.filter(|at| (first..=last).contains(at)) {
                    slice[(at - first) as usize] ^= 1;
                }
                // Later ranges land first.
                let delay = Duration::from_millis((1000 - first) / 50);
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, ObjectError>(body(&slice))
                }
            };
            let written = store
                .write_ranges(
                    name,
                    incoming(1000, SystemTime::now(), &expected),
                    &parts,
                    fetch,
                )
                .await;
            match damage {
                None => {
                    written.unwrap().landed().await.unwrap();
                    assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), data);
                }
                Some(_) => {
                    let err = written.unwrap_err();
                    assert!(err.to_string().contains("do not match"), "{err}");
                    assert!(!dir.path().join(name).exists());
                }
            }
        }
    }

    #[tokio::test]
    async fn a_directory_removed_after_a_write_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let write = |key: &'static str| async {
            let written = store.write(
                key,
                body(b"x"),
                incoming(1, SystemTime::now(), &Expected::Unknown),
            );
            written.await.unwrap().landed().await.unwrap();
        };
        write("sub/a").await;
        std::fs::remove_dir_all(dir.path().join("sub")).unwrap();
        write("sub/b").await;
        assert_eq!(std::fs::read(dir.path().join("sub/b")).unwrap(), b"x");
    }

    #[tokio::test]
    async fn writes_content_and_mtime_then_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let mtime = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        store
            .write(
                "a/b/c.txt",
                body(b"hello"),
                incoming(5, mtime, &Expected::Unknown),
            )
            .await
            .unwrap()
            .landed()
            .await
            .unwrap();
        let path = dir.path().join("a/b/c.txt");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    #[tokio::test]
    async fn a_rename_that_fails_after_the_write_is_the_landings_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        // The bytes are written and checked: the transfer is over.
        let landing = store
            .write(
                "a",
                body(b"x"),
                incoming(1, SystemTime::now(), &Expected::Unknown),
            )
            .await
            .unwrap();
        // The directory in the way shows when the file is renamed, behind it.
        let err = landing.landed().await.unwrap_err();
        assert!(err.to_string().contains("rename"), "{err}");
        assert!(
            err.to_string().contains("a directory is in the way"),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
        assert!(!in_flight().iter().any(|p| p.starts_with(dir.path())));
    }

    #[tokio::test]
    async fn a_file_never_told_its_outcome_fails_and_is_not_counted_as_landed() {
        let (outcome, heard) = oneshot::channel();
        drop(outcome);
        let err = Landing(Some((heard, "/d/f".to_owned())))
            .landed()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sync /d/f"), "{err}");
        assert!(err.to_string().contains("never made durable"), "{err}");
    }

    #[tokio::test]
    async fn ranges_land_at_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
        let parts = PartSettings {
            part_size: 300,
            concurrency: 3,
            permits: std::sync::Arc::new(Semaphore::new(2)),
            buffers: std::sync::Arc::new(Semaphore::new(1)),
        };
        let fetch = |first: u64, last: u64| {
            let slice = data[first as usize..=last as usize].to_vec();
            async move { Ok::<_, ObjectError>(body(&slice)) }
        };
        let mtime = UNIX_EPOCH + Duration::from_secs(1_000);
        store
            .write_ranges(
                "r",
                incoming(1000, mtime, &Expected::Unknown),
                &parts,
                fetch,
            )
            .await
            .unwrap()
            .landed()
            .await
            .unwrap();
        assert_eq!(std::fs::read(dir.path().join("r")).unwrap(), data);
        assert_eq!(
            std::fs::metadata(dir.path().join("r"))
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
    }

    #[tokio::test]
    async fn a_short_body_never_reaches_the_final_name() {
        for (size, data) in [(10, vec![1u8; 3]), (3 * BLOCK, vec![1u8; 2 * BLOCK + 3])] {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::new(dir.path().to_path_buf());
            let err = store
                .write(
                    "f",
                    self::body(&data),
                    incoming(size as u64, SystemTime::now(), &Expected::Unknown),
                )
                .await
                .unwrap_err();
            assert!(err.transient);
            let says = format!("expected {size} bytes but received {}", data.len());
            assert!(err.to_string().contains(&says), "{err}");
            until_empty(dir.path()).await;
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_never_reaches_the_final_name() {
        // Whole blocks as announced, handed on before the extra byte shows.
        for size in [BLOCK, 2 * BLOCK] {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::new(dir.path().to_path_buf());
            let announced = vec![1u8; size];
            let err = store
                .write(
                    "f",
                    body(&announced).chain(body(b"!")),
                    incoming(size as u64, SystemTime::now(), &Expected::Unknown),
                )
                .await
                .unwrap_err();
            assert!(err.to_string().contains("received more"), "{err}");
            until_empty(dir.path()).await;
        }
    }

    #[test]
    fn a_block_of_more_chunks_than_one_system_call_takes_is_written_whole() {
        let data: Vec<u8> = (0..3 * MAX_BUFFERS as u32).map(|i| i as u8).collect();
        // Chunks of 1 to 3 bytes, more than MAX_BUFFERS of them.
        let mut block = Block::new();
        let mut rest = &data[..];
        while !rest.is_empty() {
            let take = (block.len() % 3 + 1).min(rest.len());
            block.push(Bytes::copy_from_slice(&rest[..take]));
            rest = &rest[take..];
        }
        assert!(block.len() > MAX_BUFFERS);
        let file = tempfile::tempfile().unwrap();
        let end = write_block(&file, &block, 5).unwrap();
        assert_eq!(end, 5 + data.len() as u64);
        let mut written = vec![0; data.len()];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut written, 5).unwrap();
        assert_eq!(written, data);
    }

    #[test]
    fn running_out_of_space_or_descriptors_says_what_to_do() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let err = io_error("write", "/d/f")(full).to_string();
        assert!(err.contains("/d/f") && err.contains("free space"), "{err}");
        let emfile = std::io::Error::from_raw_os_error(rustix::io::Errno::MFILE.raw_os_error());
        let err = io_error("create", "/d/f")(emfile).to_string();
        assert!(
            err.contains("create") && err.contains("lower --threads"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_temporary_file_is_never_created_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let planted = dir.path().join(".s3mirror-tmp-planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_temp(&planted).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_ne!(temp_path(dir.path()), temp_path(dir.path()));
    }
}
