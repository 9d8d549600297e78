//! The read cache: object data on local disk, one sparse file per object version (key
//! and ETag), filled chunk by chunk as reads need it, bounded by `--cache-size` with
//! least-recently-used eviction.
//!
//! Invariant: a chunk is marked present only once its bytes are in the file, and an
//! entry is found only under the ETag it was filled from, so a changed object is never
//! served from the cache.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::remote::{Remote, RemoteError};
use crate::storage::checksum::{digest, HashKind};

/// Unit of fetching and of bookkeeping.
pub const CHUNK: u64 = 1 << 20;
/// Chunks one GetObject fetches at most: the read-ahead of a sequential reader.
const WINDOW: u64 = 8;

pub struct ReadCache {
    dir: PathBuf,
    limit: u64,
    used: AtomicU64,
    clock: AtomicU64,
    entries: Mutex<HashMap<(String, String), Arc<Entry>>>,
}

struct Entry {
    path: PathBuf,
    size: u64,
    /// Which chunks are in the file; the lock also serialises fetching.
    chunks: tokio::sync::Mutex<Vec<bool>>,
    last_used: AtomicU64,
    /// Readers currently using the entry; an entry in use is never evicted.
    readers: AtomicU64,
}

impl ReadCache {
    pub fn new(dir: PathBuf, limit: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            limit,
            used: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes `offset..offset+len` of an object of `size` bytes with `etag`, fetching
    /// (with read-ahead) what the cache does not hold.
    pub async fn read<R: Remote>(
        &self,
        remote: &R,
        key: &str,
        etag: &str,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let end = (offset + len).min(size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let entry = self.entry(key, etag, size)?;
        entry.readers.fetch_add(1, Ordering::SeqCst);
        let result = self
            .fill_and_read(remote, key, etag, &entry, offset, end)
            .await;
        entry.readers.fetch_sub(1, Ordering::SeqCst);
        entry.last_used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.evict();
        result
    }

    async fn fill_and_read<R: Remote>(
        &self,
        remote: &R,
        key: &str,
        etag: &str,
        entry: &Entry,
        offset: u64,
        end: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let total = entry.size.div_ceil(CHUNK);
        let mut chunks = entry.chunks.lock().await;
        let mut chunk = first;
        while chunk <= last {
            if chunks[chunk as usize] {
                chunk += 1;
                continue;
            }
            // Fetch the missing run from here, up to a window ahead of the read.
            let mut stop = chunk + 1;
            while stop < total
                && stop < chunk + WINDOW.max(last - chunk + 1)
                && !chunks[stop as usize]
            {
                stop += 1;
            }
            let (start_byte, end_byte) = (chunk * CHUNK, (stop * CHUNK).min(entry.size));
            let bytes = remote.get_range(key, etag, start_byte, end_byte).await?;
            if bytes.len() as u64 != end_byte - start_byte {
                return Err(RemoteError {
                    kind: super::remote::ErrorKind::Other,
                    message: format!(
                        "GetObject {key}: {} bytes where {} were asked for",
                        bytes.len(),
                        end_byte - start_byte
                    ),
                });
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&entry.path)
                .and_then(|file| file.write_all_at(&bytes, start_byte).map(|()| file));
            if let Err(err) = file {
                return Err(cache_error(&entry.path, err));
            }
            for c in chunk..stop {
                chunks[c as usize] = true;
            }
            self.used
                .fetch_add(end_byte - start_byte, Ordering::Relaxed);
            chunk = stop;
        }
        drop(chunks);
        let mut out = vec![0; (end - offset) as usize];
        std::fs::File::open(&entry.path)
            .and_then(|file| file.read_exact_at(&mut out, offset))
            .map_err(|err| cache_error(&entry.path, err))?;
        Ok(out)
    }

    fn entry(&self, key: &str, etag: &str, size: u64) -> Result<Arc<Entry>, RemoteError> {
        let mut entries = self.entries.lock().expect("cache lock");
        let id = (key.to_owned(), etag.to_owned());
        if let Some(entry) = entries.get(&id) {
            return Ok(Arc::clone(entry));
        }
        let name = hex::encode(digest(HashKind::Md5, format!("{key}\0{etag}").as_bytes()));
        let path = self.dir.join(name);
        let file = std::fs::File::create(&path).map_err(|err| cache_error(&path, err))?;
        file.set_len(size).map_err(|err| cache_error(&path, err))?;
        let entry = Arc::new(Entry {
            path,
            size,
            chunks: tokio::sync::Mutex::new(vec![false; size.div_ceil(CHUNK) as usize]),
            last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            readers: AtomicU64::new(0),
        });
        entries.insert(id, Arc::clone(&entry));
        Ok(entry)
    }

    /// Drops least recently used entries not being read until the cache fits its limit.
    fn evict(&self) {
        if self.used.load(Ordering::Relaxed) <= self.limit {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        let mut idle: Vec<((String, String), u64)> = entries
            .iter()
            .filter(|(_, e)| e.readers.load(Ordering::SeqCst) == 0)
            .map(|(id, e)| (id.clone(), e.last_used.load(Ordering::Relaxed)))
            .collect();
        idle.sort_by_key(|(_, used)| *used);
        for (id, _) in idle {
            if self.used.load(Ordering::Relaxed) <= self.limit {
                break;
            }
            if let Some(entry) = entries.remove(&id) {
                let held = entry
                    .chunks
                    .try_lock()
                    .map(|c| c.iter().filter(|&&present| present).count() as u64 * CHUNK)
                    .unwrap_or(0)
                    .min(entry.size);
                let _ = std::fs::remove_file(&entry.path);
                self.used.fetch_sub(
                    held.min(self.used.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Bytes held on disk.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

fn cache_error(path: &std::path::Path, err: std::io::Error) -> RemoteError {
    RemoteError {
        kind: super::remote::ErrorKind::Other,
        message: format!("read cache {}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::remote::MemoryRemote;

    #[tokio::test]
    async fn reads_fetch_once_and_the_cache_stays_within_its_limit() {
        let remote = MemoryRemote::default();
        let data: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 251) as u8).collect();
        remote.insert("k", &data);
        let etag = remote.head_etag("k");
        let size = data.len() as u64;
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(dir.path().join("big"), 8 * CHUNK).unwrap();
        let got = cache
            .read(&remote, "k", &etag, size, 10, 100)
            .await
            .unwrap();
        assert_eq!(got, &data[10..110]);
        let requests = remote.requests.load(Ordering::Relaxed);
        // The read-ahead fetched the rest: reading it costs no request.
        let tail = cache
            .read(&remote, "k", &etag, size, CHUNK * 3, 100)
            .await
            .unwrap();
        assert_eq!(tail, &data[(CHUNK * 3) as usize..]);
        assert_eq!(remote.requests.load(Ordering::Relaxed), requests);

        // A changed object is read under its new ETag, never from the old one's entry.
        remote.insert("k", b"new content");
        let fresh = remote.head_etag("k");
        let got = cache.read(&remote, "k", &fresh, 11, 0, 11).await.unwrap();
        assert_eq!(got, b"new content");

        // A small cache gives back what it holds beyond its limit once reads end.
        let small = ReadCache::new(dir.path().join("small"), 2 * CHUNK).unwrap();
        remote.insert("k", &data);
        let etag = remote.head_etag("k");
        let all = small
            .read(&remote, "k", &etag, size, 0, size)
            .await
            .unwrap();
        assert_eq!(all, data);
        assert!(small.used() <= 2 * CHUNK, "{}", small.used());
    }
}
