//! Writes into the destination directory through a temporary file in the same
//! directory, made durable and given its final mtime before it is renamed into place.
//!
//! Invariant: a file under its final name is always complete. A crash leaves at most a
//! `.s3mirror-tmp-*` file, which listings ignore.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::io::{AsyncBufRead, AsyncWriteExt, BufWriter};

use super::{LocalStore, TEMP_PREFIX};
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
        let fail = |op: &'static str| {
            let target = target.clone();
            move |err: std::io::Error| ObjectError::new(op, target, err)
        };
        let path = self
            .path_for(key)
            .map_err(|why| ObjectError::new("write", target.clone(), why))?;
        let parent = path.parent().unwrap_or(self.root());
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(fail("create directory"))?;
        let temp = temp_path(parent);

        let result = async {
            let file = tokio::fs::File::create_new(&temp).await.map_err(fail("create"))?;
            let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
            let written = tokio::io::copy_buf(&mut reader, &mut writer)
                .await
                .map_err(fail("write"))?;
            if written != size {
                return Err(ObjectError::new(
                    "write",
                    target.clone(),
                    format!("expected {size} bytes but received {written}; the source may have changed or the transfer was cut short"),
                ));
            }
            writer.flush().await.map_err(fail("write"))?;
            let file = writer.into_inner().into_std().await;
            tokio::task::spawn_blocking(move || {
                file.sync_all()?;
                file.set_modified(mtime)
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(fail("sync"))?;
            tokio::fs::rename(&temp, &path).await.map_err(fail("rename"))
        }
        .await;

        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }
}

fn temp_path(dir: &Path) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
