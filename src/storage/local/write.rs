//! Writes into the destination directory through a temporary file in the same
//! directory, made durable and given its final mtime before it is renamed into place.
//!
//! Invariant: a file under its final name is always complete. A crash leaves at most a
//! `.s3mirror-tmp-*` file, which listings ignore.

use std::future::Future;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use rustix::fs::OFlags;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::{file_digests, LocalStore, TEMP_PREFIX};
use crate::storage::s3::{describe_body_error, PartSettings};
use crate::storage::{Expected, ObjectError, StreamCheck};

const WRITE_BUFFER: usize = 256 * 1024;

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

impl LocalStore {
    /// Writes `incoming.size` bytes from `reader` to `key`, checks them as they stream
    /// in (or reads them back when only that can check them) and sets the mtime.
    pub async fn write<R>(
        &self,
        key: &str,
        mut reader: R,
        incoming: Incoming<'_>,
    ) -> Result<(), ObjectError>
    where
        R: AsyncBufRead + Unpin,
    {
        let target = self.describe(key);
        self.commit_via_temp(key, incoming, |temp| async move {
            let file = create_temp(&temp)
                .await
                .map_err(io_error("create", &target))?;
            let mut check = StreamCheck::new(incoming.expected, true);
            copy_exactly(
                &mut reader,
                file,
                incoming.size,
                &target,
                incoming.source,
                &mut check,
            )
            .await?;
            Ok(check.finish())
        })
        .await
    }

    /// Writes bytes fetched as ranges of the part size, up to the part concurrency at
    /// once (each also holding one of the shared permits), each into its place; then
    /// reads the file back to check it.
    pub async fn write_ranges<F, Fut, R>(
        &self,
        key: &str,
        incoming: Incoming<'_>,
        parts: &PartSettings,
        fetch: F,
    ) -> Result<(), ObjectError>
    where
        F: Fn(u64, u64) -> Fut,
        Fut: Future<Output = Result<R, ObjectError>>,
        R: AsyncBufRead + Unpin,
    {
        let target = self.describe(key);
        let (size, part_size, permits) = (incoming.size, parts.part_size.max(1), &parts.permits);
        self.commit_via_temp(key, incoming, |temp| async move {
            let file = create_temp(&temp)
                .await
                .map_err(io_error("create", &target))?;
            file.set_len(size)
                .await
                .map_err(io_error("allocate", &target))?;
            drop(file);
            let ranges = (0..size.div_ceil(part_size))
                .map(|i| (i * part_size, part_size.min(size - i * part_size)));
            futures::stream::iter(ranges)
                .map(|(offset, len)| {
                    let (temp, target, fetch) = (&temp, &target, &fetch);
                    async move {
                        let _permit = permits
                            .acquire()
                            .await
                            .expect("part permits are never closed");
                        let mut reader = fetch(offset, offset + len - 1).await?;
                        let mut file = tokio::fs::OpenOptions::new()
                            .write(true)
                            .open(temp)
                            .await
                            .map_err(io_error("open", target))?;
                        file.seek(SeekFrom::Start(offset))
                            .await
                            .map_err(io_error("seek", target))?;
                        let source =
                            format!("{} bytes {offset}-{}", incoming.source, offset + len - 1);
                        let mut unchecked = StreamCheck::new(&Expected::Unknown, false);
                        copy_exactly(&mut reader, file, len, target, &source, &mut unchecked).await
                    }
                })
                .buffer_unordered(parts.concurrency)
                .try_collect::<()>()
                .await?;
            Ok(None)
        })
        .await
    }

    /// Creates the parent directory, lets `fill` write a temporary file beside the
    /// target, checks its content against what was expected (with the verdict `fill`
    /// reached while streaming, or by reading the file back), then makes it durable,
    /// gives it its mtime and renames it into place. The temporary file is removed on
    /// any failure, and when the copy is dropped half-way.
    async fn commit_via_temp<F, Fut>(
        &self,
        key: &str,
        incoming: Incoming<'_>,
        fill: F,
    ) -> Result<(), ObjectError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<Option<Result<(), String>>, ObjectError>>,
    {
        let target = self.describe(key);
        let path = self
            .path_for(key)
            .map_err(|why| ObjectError::new("write", target.clone(), why))?;
        self.refuse_links_above(&path)
            .map_err(|why| ObjectError::new("write", target.clone(), why))?;
        let parent = path.parent().unwrap_or(self.root());
        tokio::fs::create_dir_all(parent).await.map_err(|err| {
            let in_the_way = matches!(
                err.kind(),
                std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists
            );
            match in_the_way {
                true => ObjectError::new(
                    "create directory",
                    &target,
                    format!("{err}: a file is in the way, for another key is a leading part of this one (as 'a' is of 'a/b'); a directory tree cannot hold both"),
                ),
                false => io_error("create directory", &target)(err),
            }
        })?;
        let temp = temp_path(parent);
        let Some(_listed) = InFlight::list(&temp) else {
            return Err(ObjectError::new(
                "write",
                target,
                "the run is being interrupted",
            ));
        };
        // Removes the file when this ends in any way but its rename into place: an
        // error, a panic, or the task being dropped mid-copy.
        let unfinished =
            tempfile::TempPath::try_from_path(&temp).map_err(io_error("create", &target))?;
        let result = async {
            let streamed = fill(temp.clone()).await?;
            let verdict = match (streamed, incoming.expected.request()) {
                (Some(verdict), _) => verdict,
                (None, None) => Ok(()),
                (None, Some(request)) => {
                    let mut read = file_digests(temp.clone(), vec![request])
                        .await
                        .map_err(io_error("verify", &target))?;
                    incoming.expected.check(&read.digests.remove(0))
                }
            };
            verdict.map_err(|why| ObjectError::transient("verify", incoming.source, why))?;
            let synced = temp.clone();
            let mtime = incoming.mtime;
            tokio::task::spawn_blocking(move || {
                let file = std::fs::OpenOptions::new().write(true).open(synced)?;
                file.sync_all()?;
                file.set_modified(mtime)?;
                // Unchecked bytes were private; the file takes its mode with its name.
                file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
                    crate::private::default_file_mode(),
                ))
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(io_error("sync", &target))?;
            tokio::fs::rename(&temp, &path).await.map_err(|err| {
                match err.kind() == std::io::ErrorKind::IsADirectory {
                    true => ObjectError::new(
                        "rename",
                        &target,
                        format!("{err}: a directory is in the way, for other keys continue this one (as 'a/b' does 'a'); a directory tree cannot hold both"),
                    ),
                    false => io_error("rename", &target)(err),
                }
            })
        }
        .await;
        if result.is_ok() {
            // Renamed: nothing is left at the temporary name to remove.
            let _ = unfinished.keep();
        }
        result
    }
}

/// An error of a local file operation; a full disk gets the obvious advice.
fn io_error<'a>(op: &'static str, target: &'a str) -> impl Fn(std::io::Error) -> ObjectError + 'a {
    move |err| {
        if err.kind() == std::io::ErrorKind::StorageFull {
            let cause = format!("{err}; free space on the destination file system and run again");
            return ObjectError::new(op, target, cause);
        }
        ObjectError::new(op, target, err)
    }
}

/// Copies exactly `len` bytes into `file`, feeding `check`. A failure to receive them
/// (the connection dropped, the body cut short) is transient and names `source`; a
/// failure to write them names the file.
async fn copy_exactly<R>(
    reader: &mut R,
    file: tokio::fs::File,
    len: u64,
    target: &str,
    source: &str,
    check: &mut StreamCheck,
) -> Result<(), ObjectError>
where
    R: AsyncBufRead + Unpin,
{
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut written = 0u64;
    loop {
        let chunk = reader.fill_buf().await.map_err(|err| {
            let why = describe_body_error(&err, check.stated_checksum());
            ObjectError::transient("receive", source, why)
        })?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        written += n as u64;
        if written > len {
            break;
        }
        check.update(chunk);
        writer
            .write_all(chunk)
            .await
            .map_err(io_error("write", target))?;
        reader.consume(n);
    }
    if written != len {
        let received = match written > len {
            true => "more".to_owned(),
            false => written.to_string(),
        };
        return Err(ObjectError::transient(
            "receive",
            source,
            format!(
                "expected {len} bytes but received {received}; the transfer was cut short \
                 or the source changed"
            ),
        ));
    }
    writer.flush().await.map_err(io_error("write", target))
}

/// A temporary file only its owner can read until its bytes are checked; created new
/// (never through a link planted at its name).
async fn create_temp(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .await
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

    fn incoming(size: u64, mtime: SystemTime, expected: &Expected) -> Incoming<'_> {
        Incoming {
            size,
            mtime,
            source: "s3://b/k",
            expected,
        }
    }

    #[tokio::test]
    async fn a_write_dropped_half_way_leaves_no_temporary_file() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let (mut sender, receiver) = tokio::io::duplex(64);
        sender.write_all(b"the first bytes").await.unwrap();
        let reader = tokio::io::BufReader::new(receiver);
        let write = store.write(
            "sub/k",
            reader,
            incoming(1000, SystemTime::now(), &Expected::Unknown),
        );
        // The rest never comes: the copy is dropped while it waits for it.
        let dropped = tokio::time::timeout(Duration::from_millis(200), write).await;
        assert!(dropped.is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!in_flight().iter().any(|p| p.starts_with(dir.path())));
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
                &b"hellp"[..],
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
                &b"hello"[..],
                incoming(5, SystemTime::now(), &expected),
            )
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
            Ok::<_, ObjectError>(std::io::Cursor::new(slice))
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
    async fn writes_content_and_mtime_then_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let mtime = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        store
            .write(
                "a/b/c.txt",
                &b"hello"[..],
                incoming(5, mtime, &Expected::Unknown),
            )
            .await
            .unwrap();
        let path = dir.path().join("a/b/c.txt");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
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
            async move { Ok::<_, ObjectError>(std::io::Cursor::new(slice)) }
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
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let err = store
            .write(
                "f",
                &b"abc"[..],
                incoming(10, SystemTime::now(), &Expected::Unknown),
            )
            .await
            .unwrap_err();
        assert!(err.transient);
        assert!(
            err.to_string().contains("expected 10 bytes but received 3"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_temporary_file_is_never_created_through_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let planted = dir.path().join(".s3mirror-tmp-planted");
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert!(create_temp(&planted).await.is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_ne!(temp_path(dir.path()), temp_path(dir.path()));
    }
}
