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
/// Chunks a first GetObject fetches: the read-ahead of a reader that just started.
const WINDOW: u64 = 8;
/// The widest read-ahead a sequential reader grows to.
const MAX_WINDOW: u64 = 64;
/// Chunks one read-ahead GET fetches: a window wider than this is fetched in pieces, at
/// once.
const PIECE: u64 = 8;
/// Objects held on disk at most, whatever their sizes.
const MAX_ENTRIES: usize = 16_384;
/// Listed objects up to this size are fetched whole when first looked up: one GetObject
/// costs what a HeadObject does, and the read that usually follows costs nothing.
pub(super) const SMALL_OBJECT: u64 = 64 << 10;
/// Memory for small objects fetched whole at lookup.
const SMALL_BUDGET: usize = 8 << 20;

/// Small objects fetched whole, by key and ETag, the oldest dropped first.
#[derive(Default)]
struct SmallBodies {
    bytes: usize,
    order: std::collections::VecDeque<(String, String)>,
    bodies: HashMap<(String, String), Arc<Vec<u8>>>,
}

impl SmallBodies {
    /// What an entry costs: its bytes, its names (twice: map and queue) and the tables'
    /// own room, so that many tiny objects count for what they hold in memory.
    fn cost(id: &(String, String), body: &[u8]) -> usize {
        body.len() + 2 * (id.0.len() + id.1.len()) + 128
    }

    fn insert(&mut self, key: &str, etag: &str, body: Vec<u8>) {
        let id = (key.to_owned(), etag.to_owned());
        self.bytes += Self::cost(&id, &body);
        if let Some(old) = self.bodies.insert(id.clone(), Arc::new(body)) {
            self.bytes -= Self::cost(&id, &old);
        } else {
            self.order.push_back(id);
        }
        while self.bytes > SMALL_BUDGET {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(body) = self.bodies.remove(&oldest) {
                self.bytes -= Self::cost(&oldest, &body);
            }
        }
    }

    fn get(&self, key: &str, etag: &str, size: u64) -> Option<Arc<Vec<u8>>> {
        self.bodies
            .get(&(key.to_owned(), etag.to_owned()))
            .filter(|body| body.len() as u64 == size)
            .cloned()
    }
}

pub struct ReadCache {
    dir: PathBuf,
    limit: u64,
    used: Arc<AtomicU64>,
    /// Bytes of files staged for writing: they share the budget, and are never evicted,
    /// so the read cache gives way to them.
    staged: Arc<AtomicU64>,
    /// Small objects fetched whole at lookup, oldest out first, within SMALL_BUDGET.
    small: Mutex<SmallBodies>,
    /// How many objects `entries` holds, kept under its lock, read without it.
    held: std::sync::atomic::AtomicUsize,
    clock: AtomicU64,
    entries: Mutex<HashMap<(String, String), Arc<Entry>>>,
}

struct Entry {
    path: PathBuf,
    size: u64,
    /// The state of each chunk.
    chunks: Mutex<Vec<Chunk>>,
    /// Woken whenever chunks arrive or a fetch gives up.
    changed: tokio::sync::Notify,
    /// Chunks a read-ahead fetches at once; doubles while a reader goes on sequentially.
    window: AtomicU64,
    /// The chunk the last read ended in, to tell sequential readers from random ones.
    last_read: AtomicU64,
    last_used: AtomicU64,
    /// Readers currently using the entry; an entry in use is never evicted.
    readers: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Absent,
    Fetching,
    Present,
}

/// What a reader must do for a range of chunks.
enum Next {
    Ready,
    /// Fetch these chunks (now claimed by this reader).
    Fetch(u64, u64),
    /// Another fetch is bringing them: wait.
    Wait,
}

impl Entry {
    fn next(&self, first: u64, last: u64, window: u64) -> Next {
        let mut chunks = self.chunks.lock().expect("chunks lock");
        let total = chunks.len() as u64;
        match (first..=last).find(|&c| chunks[c as usize] != Chunk::Present) {
            None => Next::Ready,
            Some(c) if chunks[c as usize] == Chunk::Fetching => Next::Wait,
            Some(c) => {
                let stop = claim(&mut chunks, c, (c + window.max(last - c + 1)).min(total));
                Next::Fetch(c, stop)
            }
        }
    }

    /// Claims the absent chunks ahead of `from` for a read-ahead, unless they are there
    /// or coming already.
    fn claim_ahead(&self, from: u64, window: u64) -> Option<(u64, u64)> {
        let mut chunks = self.chunks.lock().expect("chunks lock");
        let total = chunks.len() as u64;
        let look = (from + window / 2).min(total);
        let first = (from..look).find(|&c| chunks[c as usize] != Chunk::Present)?;
        if chunks[first as usize] == Chunk::Fetching {
            return None;
        }
        let stop = claim(&mut chunks, first, (first + window).min(total));
        Some((first, stop))
    }

    /// Fetches claimed chunks `chunk..stop` in one ranged GET; on failure they are
    /// given back for another reader to try.
    async fn fetch<R: Remote>(
        &self,
        remote: &R,
        key: &str,
        etag: &str,
        chunk: u64,
        stop: u64,
        used: &AtomicU64,
    ) -> Result<(), RemoteError> {
        let result = self
            .fetch_claimed(remote, key, etag, chunk, stop, used)
            .await;
        let mut chunks = self.chunks.lock().expect("chunks lock");
        for c in chunk..stop {
            chunks[c as usize] = match (&result, chunks[c as usize]) {
                (Ok(()), _) => Chunk::Present,
                (Err(_), Chunk::Fetching) => Chunk::Absent,
                (Err(_), state) => state,
            };
        }
        drop(chunks);
        self.changed.notify_waiters();
        result
    }

    /// Streams the claimed chunks into the file, marking each present (and waking its
    /// readers) as soon as all its bytes are there.
    async fn fetch_claimed<R: Remote>(
        &self,
        remote: &R,
        key: &str,
        etag: &str,
        chunk: u64,
        stop: u64,
        used: &AtomicU64,
    ) -> Result<(), RemoteError> {
        let (start_byte, end_byte) = (chunk * CHUNK, (stop * CHUNK).min(self.size));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|err| cache_error(&self.path, err))?;
        let mut at = start_byte;
        let mut sink = |piece: &[u8]| -> Result<(), RemoteError> {
            if at + piece.len() as u64 > end_byte {
                return Err(RemoteError {
                    kind: super::remote::ErrorKind::Other,
                    message: format!("GetObject {key}: more bytes than the range holds"),
                });
            }
            file.write_all_at(piece, at)
                .map_err(|err| cache_error(&self.path, err))?;
            let before = at;
            at += piece.len() as u64;
            // Chunks completed by this piece (the last one ends with the object); only
            // they count as held, so a fetch cut short leaves no bytes counted.
            let done_until = if at == self.size { stop } else { at / CHUNK };
            if done_until > before / CHUNK {
                let mut chunks = self.chunks.lock().expect("chunks lock");
                for c in before / CHUNK..done_until {
                    chunks[c as usize] = Chunk::Present;
                    used.fetch_add(CHUNK.min(self.size - c * CHUNK), Ordering::Relaxed);
                }
                drop(chunks);
                self.changed.notify_waiters();
            }
            Ok(())
        };
        remote
            .get_range(key, etag, start_byte, end_byte, &mut sink)
            .await?;
        if at != end_byte {
            return Err(RemoteError {
                kind: super::remote::ErrorKind::Other,
                message: format!(
                    "GetObject {key}: {} bytes where {} were asked for",
                    at - start_byte,
                    end_byte - start_byte
                ),
            });
        }
        Ok(())
    }
}

/// Marks the absent chunks from `from` up to `stop` (or the first that is not absent)
/// as being fetched; returns where the claimed run ends.
fn claim(chunks: &mut [Chunk], from: u64, stop: u64) -> u64 {
    let mut c = from;
    while c < stop && chunks[c as usize] == Chunk::Absent {
        chunks[c as usize] = Chunk::Fetching;
        c += 1;
    }
    c
}

impl ReadCache {
    pub fn new(dir: PathBuf, limit: u64) -> std::io::Result<Self> {
        // Cached bytes are the bucket's: readable by the mount's owner only.
        crate::private::create_dir(&dir)?;
        Ok(Self {
            dir,
            limit,
            used: Arc::new(AtomicU64::new(0)),
            staged: Arc::new(AtomicU64::new(0)),
            small: Mutex::new(SmallBodies::default()),
            held: std::sync::atomic::AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes `offset..offset+len` of an object of `size` bytes with `etag`, fetching
    /// what the cache does not hold, and reading the next window ahead in the
    /// background once a reader gets near the end of what is there.
    pub async fn read<R: Remote>(
        &self,
        remote: &Arc<R>,
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
        // Only small objects are ever held in memory: larger ones skip the look.
        if size <= SMALL_OBJECT {
            if let Some(body) = self.small.lock().expect("small lock").get(key, etag, size) {
                return Ok(body[offset as usize..end as usize].to_vec());
            }
        }
        let entry = self.entry(key, etag, size)?;
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
        remote: &Arc<R>,
        key: &str,
        etag: &str,
        entry: &Arc<Entry>,
        offset: u64,
        end: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        // A read where the last one ended (or in the next chunk) goes on sequentially:
        // it fetches a window and reads ahead. Any other read fetches just its chunks.
        let previous = entry.last_read.swap(last, Ordering::Relaxed);
        let sequential = first == previous || first == previous + 1;
        if !sequential {
            entry.window.store(WINDOW, Ordering::Relaxed);
        }
        loop {
            let changed = entry.changed.notified();
            let window = match sequential {
                true => entry.window.load(Ordering::Relaxed),
                false => 1,
            };
            match entry.next(first, last, window) {
                Next::Ready => break,
                Next::Fetch(chunk, stop) => {
                    entry
                        .fetch(&**remote, key, etag, chunk, stop, &self.used)
                        .await?
                }
                Next::Wait => changed.await,
            }
        }
        // A reader going on sequentially gets the next window read ahead, in the
        // background, and a wider one each time, up to MAX_WINDOW.
        let window = entry.window.load(Ordering::Relaxed);
        let ahead = sequential
            .then(|| entry.claim_ahead(last + 1, window))
            .flatten();
        if let Some((chunk, stop)) = ahead {
            entry
                .window
                .store((window * 2).min(MAX_WINDOW), Ordering::Relaxed);
            // A wide window goes as several ranged GETs at once: one stream is bound by
            // what one connection carries; pieces in parallel are not.
            for piece in (chunk..stop).step_by(PIECE as usize) {
                let piece_stop = (piece + PIECE).min(stop);
                let (entry, remote, used) = (
                    Arc::clone(entry),
                    Arc::clone(remote),
                    Arc::clone(&self.used),
                );
                let (key, etag) = (key.to_owned(), etag.to_owned());
                tokio::spawn(async move {
                    let fetched = entry
                        .fetch(&*remote, &key, &etag, piece, piece_stop, &used)
                        .await;
                    if let Err(err) = fetched {
                        tracing::debug!("read-ahead: {}", err.message);
                    }
                });
            }
        }
        let mut out = vec![0; (end - offset) as usize];
        std::fs::File::open(&entry.path)
            .and_then(|file| file.read_exact_at(&mut out, offset))
            .map_err(|err| cache_error(&entry.path, err))?;
        Ok(out)
    }

    /// The entry of one object version, counted as being read (the caller gives that
    /// back): counted under the same lock eviction takes, so it is never evicted between
    /// being found and being read.
    fn entry(&self, key: &str, etag: &str, size: u64) -> Result<Arc<Entry>, RemoteError> {
        let mut entries = self.entries.lock().expect("cache lock");
        // The size belongs to the version's identity: a size from another version of
        // the object never meets this entry's chunks.
        let id = (key.to_owned(), format!("{etag}/{size}"));
        if let Some(entry) = entries.get(&id) {
            entry.readers.fetch_add(1, Ordering::SeqCst);
            return Ok(Arc::clone(entry));
        }
        let n = self.clock.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{n}",
            hex::encode(digest(HashKind::Md5, format!("{key}\0{etag}").as_bytes()))
        );
        let path = self.dir.join(name);
        let file = crate::private::create_file(&path).map_err(|err| cache_error(&path, err))?;
        file.set_len(size).map_err(|err| cache_error(&path, err))?;
        let entry = Arc::new(Entry {
            path,
            size,
            chunks: Mutex::new(vec![Chunk::Absent; size.div_ceil(CHUNK) as usize]),
            changed: tokio::sync::Notify::new(),
            window: AtomicU64::new(WINDOW),
            last_read: AtomicU64::new(0),
            last_used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
            readers: AtomicU64::new(1),
        });
        entries.insert(id, Arc::clone(&entry));
        self.held.store(entries.len(), Ordering::Relaxed);
        Ok(entry)
    }

    /// Holds a whole small object that arrived by other means (fetched with its
    /// metadata at lookup), in memory, so that reading it soon after costs no request.
    pub fn insert_whole(&self, key: &str, etag: &str, body: Vec<u8>) {
        self.small
            .lock()
            .expect("small lock")
            .insert(key, etag, body);
    }

    /// The counter of staged bytes, which the write path keeps.
    pub fn staged_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.staged)
    }

    /// What the read cache may hold: the budget less what is staged.
    fn room(&self) -> u64 {
        self.limit
            .saturating_sub(self.staged.load(Ordering::Relaxed))
    }

    /// Drops least recently used entries not being read until the cache fits its room
    /// (and holds at most MAX_ENTRIES objects: a walk reading many tiny files must not
    /// grow the table, or the directory, without end).
    fn evict(&self) {
        let full = |used: &AtomicU64, count: usize| {
            used.load(Ordering::Relaxed) > self.room() || count > MAX_ENTRIES
        };
        // Every read ends here: the common case answers from the counters, unlocked.
        if !full(&self.used, self.held.load(Ordering::Relaxed)) {
            return;
        }
        let mut entries = self.entries.lock().expect("cache lock");
        let mut idle: Vec<((String, String), u64)> = entries
            .iter()
            .filter(|(_, e)| {
                e.readers.load(Ordering::SeqCst) == 0
                    && !e
                        .chunks
                        .lock()
                        .expect("chunks lock")
                        .contains(&Chunk::Fetching)
            })
            .map(|(id, e)| (id.clone(), e.last_used.load(Ordering::Relaxed)))
            .collect();
        idle.sort_by_key(|(_, used)| *used);
        for (id, _) in idle {
            if !full(&self.used, entries.len()) {
                break;
            }
            if let Some(entry) = entries.remove(&id) {
                self.held.store(entries.len(), Ordering::Relaxed);
                let chunks = entry
                    .chunks
                    .lock()
                    .expect("chunks lock")
                    .iter()
                    .filter(|&&chunk| chunk == Chunk::Present)
                    .count() as u64;
                let held = (chunks * CHUNK).min(entry.size);
                let _ = std::fs::remove_file(&entry.path);
                let used = self.used.load(Ordering::Relaxed);
                self.used.fetch_sub(held.min(used), Ordering::Relaxed);
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
    use crate::mount::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn random_reads_fetch_only_their_chunks() {
        let remote = Arc::new(MemoryRemote::default());
        let data: Vec<u8> = (0..40 * CHUNK).map(|i| (i % 253) as u8).collect();
        remote.insert("r", &data);
        let etag = remote.head_etag("r");
        let dir = tempfile::tempdir().unwrap();
        let cache = ReadCache::new(dir.path().to_path_buf(), 64 * CHUNK).unwrap();
        let size = data.len() as u64;
        for chunk in [30u64, 12, 25] {
            let at = chunk * CHUNK + 7;
            let got = cache.read(&remote, "r", &etag, size, at, 10).await.unwrap();
            assert_eq!(got, &data[at as usize..at as usize + 10]);
        }
        assert_eq!(
            cache.used(),
            3 * CHUNK,
            "one chunk per random read, no read-ahead"
        );
    }

    #[tokio::test]
    async fn reads_fetch_once_and_the_cache_stays_within_its_limit() {
        let remote = Arc::new(MemoryRemote::default());
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
