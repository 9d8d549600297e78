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
use tokio::io::{AsyncBufRead, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::{LocalStore, TEMP_PREFIX};
use crate::storage::s3::PartSettings;
use crate::storage::ObjectError;

const WRITE_BUFFER: usize = 256 * 1024;

/// Distinguishes the temporary files of concurrent writes in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalStore {
    /// Writes `size` bytes from `reader` to `key` and sets its mtime.
    pub async fn write<R>(
        &self,
        key: &str,
        mut reader: R,
        size: u64,
        mtime: SystemTime,
    ) -> Result<(), ObjectError>
    where
        R: AsyncBufRead + Unpin,
    {
        let target = self.describe(key);
        self.commit_via_temp(key, mtime, |temp| async move {
            let file = tokio::fs::File::create_new(&temp)
                .await
                .map_err(io_error("create", &target))?;
            copy_exactly(&mut reader, file, size, &target).await
        })
        .await
    }

    /// Writes `size` bytes fetched as ranges of the part size, up to the part concurrency
    /// at once (each also holding one of the shared permits), each into its place.
    pub async fn write_ranges<F, Fut, R>(
        &self,
        key: &str,
        size: u64,
        mtime: SystemTime,
        parts: &PartSettings,
        fetch: F,
    ) -> Result<(), ObjectError>
    where
        F: Fn(u64, u64) -> Fut,
        Fut: Future<Output = Result<R, ObjectError>>,
        R: AsyncBufRead + Unpin,
    {
        let target = self.describe(key);
        let (part_size, permits) = (parts.part_size.max(1), &parts.permits);
        self.commit_via_temp(key, mtime, |temp| async move {
            let file = tokio::fs::File::create_new(&temp)
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
                        copy_exactly(&mut reader, file, len, target).await
                    }
                })
                .buffer_unordered(parts.concurrency)
                .try_collect::<()>()
                .await
        })
        .await
    }

    /// Creates the parent directory, lets `fill` write a temporary file beside the
    /// target, then makes it durable, gives it `mtime` and renames it into place. The
    /// temporary file is removed on any failure.
    async fn commit_via_temp<F, Fut>(
        &self,
        key: &str,
        mtime: SystemTime,
        fill: F,
    ) -> Result<(), ObjectError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<(), ObjectError>>,
    {
        let target = self.describe(key);
        let path = self
            .path_for(key)
            .map_err(|why| ObjectError::new("write", target.clone(), why))?;
        let parent = path.parent().unwrap_or(self.root());
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io_error("create directory", &target))?;
        let temp = temp_path(parent);
        let result = async {
            fill(temp.clone()).await?;
            let synced = temp.clone();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::OpenOptions::new().write(true).open(synced)?;
                file.sync_all()?;
                file.set_modified(mtime)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(io_error("sync", &target))?;
            tokio::fs::rename(&temp, &path)
                .await
                .map_err(io_error("rename", &target))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }
}

fn io_error<'a>(op: &'static str, target: &'a str) -> impl Fn(std::io::Error) -> ObjectError + 'a {
    move |err| ObjectError::new(op, target, err)
}

/// Copies exactly `len` bytes into `file`; fewer or more is an error, since the
/// object or file it comes from must have changed or the transfer was cut short.
async fn copy_exactly<R>(
    reader: &mut R,
    file: tokio::fs::File,
    len: u64,
    target: &str,
) -> Result<(), ObjectError>
where
    R: AsyncBufRead + Unpin,
{
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    let written = tokio::io::copy_buf(reader, &mut writer)
        .await
        .map_err(io_error("write", target))?;
    if written != len {
        return Err(ObjectError::new(
            "write",
            target,
            format!("expected {len} bytes but received {written}; the source may have changed or the transfer was cut short"),
        ));
    }
    writer.flush().await.map_err(io_error("write", target))
}

fn temp_path(dir: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};
    use tokio::sync::Semaphore;

    #[tokio::test]
    async fn writes_content_and_mtime_then_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let mtime = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        store
            .write("a/b/c.txt", &b"hello"[..], 5, mtime)
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
            .write_ranges("r", 1000, mtime, &parts, fetch)
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
            .write("f", &b"abc"[..], 10, SystemTime::now())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("expected 10 bytes but received 3"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
