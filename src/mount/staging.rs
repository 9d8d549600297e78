//! The write path: a file being changed through the mount lives in a local staging file
//! (under the cache directory, mode 0600) until it is uploaded at `fsync` or `close`.
//! Random writes, truncation and reads of the same file all work on the staged copy.
//!
//! The fast path: while a file is written sequentially from empty, every full part is
//! uploaded as soon as it is written (a multipart upload), so a large file is mostly in
//! the bucket when it is closed. Any other change (a write elsewhere, a truncation)
//! abandons those parts, and the upload at close sends the staged file whole.
//!
//! Invariant: `dirty` is cleared only when the bucket holds exactly the staged bytes and
//! attributes; a failed upload leaves the staged data as it was, for another try.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tempfile::NamedTempFile;

use super::fs::Errno;
use super::remote::{ErrorKind, Remote, RemoteError, StoredAttrs};

/// Parts of one file uploaded at once.
const PARTS_IN_FLIGHT: usize = 2;
/// The most parts one S3 object can have.
const MAX_PARTS: u64 = 10_000;

/// A staged file, locked while it is read, written or uploaded.
pub struct Staged {
    pub file: tokio::sync::Mutex<StagedFile>,
}

pub struct StagedFile {
    file: NamedTempFile,
    size: u64,
    /// Whether the staged file holds the object's bytes; until then (an existing object
    /// opened for writing, nothing done yet) they are fetched before the first change.
    loaded: bool,
    dirty: bool,
    /// Mode, owner and times to store with the object.
    pub attrs: StoredAttrs,
    stream: Option<Stream>,
    /// Bytes staged by all files, counted against the cache budget.
    staged_total: Arc<AtomicU64>,
}

/// Parts uploaded while the file is written sequentially.
struct Stream {
    upload: Option<(String, StoredAttrs)>,
    parts: Vec<Part>,
    /// Bytes covered by the parts.
    sent: u64,
}

enum Part {
    Sending(tokio::task::JoinHandle<Result<String, RemoteError>>),
    /// Its result: the part's ETag.
    Sent(Result<String, RemoteError>),
}

impl Part {
    fn sending(&self) -> bool {
        matches!(self, Part::Sending(task) if !task.is_finished())
    }

    async fn result(self) -> Result<String, RemoteError> {
        match self {
            Part::Sent(result) => result,
            Part::Sending(task) => task
                .await
                .unwrap_or_else(|err| Err(RemoteError::other(err.to_string()))),
        }
    }
}

/// Where a staged file's upload is to go, and how.
pub struct Target<'a, R: Remote> {
    pub remote: &'a Arc<R>,
    pub key: &'a str,
    pub part_size: u64,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> RemoteError {
    RemoteError::other(format!("{what} {}: {err}", path.display()))
}

/// Waits for parts still being sent, then aborts the upload they belong to.
async fn abandon<R: Remote>(remote: Arc<R>, key: String, stream: Stream) {
    for part in stream.parts {
        let _ = part.result().await;
    }
    if let Some((id, _)) = stream.upload {
        remote.abort_upload(&key, &id).await;
    }
}

impl StagedFile {
    /// A staged file in `dir`: empty (a new or truncated file, whose bytes are all
    /// here), or standing for an existing object of `size` bytes, fetched when needed.
    pub fn new(
        dir: &Path,
        existing_size: Option<u64>,
        attrs: StoredAttrs,
        staged_total: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let file = tempfile::Builder::new()
            .prefix("staged-")
            .tempfile_in(dir)?;
        Ok(Self {
            file,
            size: existing_size.unwrap_or(0),
            loaded: existing_size.is_none(),
            dirty: existing_size.is_none(),
            attrs,
            stream: existing_size.is_none().then(Stream::empty),
            staged_total,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Fetches the object's bytes (of the version `etag`) into the staged file.
    pub async fn load<R: Remote>(
        &mut self,
        target: &Target<'_, R>,
        etag: &str,
    ) -> Result<(), RemoteError> {
        if self.loaded {
            return Ok(());
        }
        if self.size > 0 {
            let file = self.file.as_file();
            let path = self.file.path().to_path_buf();
            let mut offset = 0;
            target
                .remote
                .get_range(target.key, etag, 0, self.size, &mut |piece| {
                    file.write_all_at(piece, offset)
                        .map_err(|err| io_error("writing", &path, err))?;
                    offset += piece.len() as u64;
                    Ok(())
                })
                .await?;
        }
        self.staged_total.fetch_add(self.size, Ordering::Relaxed);
        self.loaded = true;
        Ok(())
    }

    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, RemoteError> {
        let end = (offset + len).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0; (end - offset) as usize];
        self.file
            .as_file()
            .read_exact_at(&mut out, offset)
            .map_err(|err| io_error("reading", self.file.path(), err))?;
        Ok(out)
    }

    fn resized(&mut self, size: u64) {
        if size > self.size {
            self.staged_total
                .fetch_add(size - self.size, Ordering::Relaxed);
        } else {
            let shrink = (self.size - size).min(self.staged_total.load(Ordering::Relaxed));
            self.staged_total.fetch_sub(shrink, Ordering::Relaxed);
        }
        self.size = size;
        self.dirty = true;
        self.attrs.mtime = Some(SystemTime::now());
    }

    /// Writes `data` at `offset` (must be loaded). A write at the end of a file written
    /// sequentially from empty keeps the fast path going: full parts leave at once. Only
    /// the local write can fail it (a full disk: `ENOSPC`); a part that fails to leave
    /// early is sent again with the whole file at close.
    pub async fn write<R: Remote>(
        &mut self,
        target: &Target<'_, R>,
        offset: u64,
        data: &[u8],
    ) -> std::io::Result<()> {
        debug_assert!(self.loaded, "written before its bytes were fetched");
        // Page-cache writes: short enough to make on the runtime thread.
        self.file.as_file().write_all_at(data, offset)?;
        let appended = offset == self.size;
        let end = (offset + data.len() as u64).max(self.size);
        self.resized(end);
        if !appended {
            self.abandon_stream(target);
            return Ok(());
        }
        if self.size > target.part_size * MAX_PARTS {
            // Larger than parts of this size can carry: sent whole at close, in bigger parts.
            self.abandon_stream(target);
        }
        while self
            .stream
            .as_ref()
            .is_some_and(|s| self.size - s.sent >= target.part_size)
        {
            if let Err(err) = self.send_next_part(target).await {
                self.abandon_stream(target);
                tracing::debug!("{}: parts sent early failed: {}", target.key, err.message);
            }
        }
        Ok(())
    }

    /// Truncates or extends the staged file (loaded, unless truncated to zero: then the
    /// object's bytes are not needed at all).
    pub fn set_len<R: Remote>(&mut self, target: &Target<'_, R>, size: u64) -> std::io::Result<()> {
        if !self.loaded {
            debug_assert_eq!(size, 0, "resized before its bytes were fetched");
            self.loaded = true;
            self.size = 0;
        }
        self.file.as_file().set_len(size)?;
        if size != self.size {
            self.abandon_stream(target);
        }
        self.resized(size);
        if size == 0 && self.stream.is_none() {
            // Empty again: a sequential rewrite can take the fast path.
            self.stream = Some(Stream::empty());
        }
        Ok(())
    }

    /// Marks the attributes changed (mode, owner, times): they go up with the next upload.
    pub fn set_attrs(&mut self, attrs: StoredAttrs) {
        self.attrs = attrs;
        self.dirty = true;
    }

    fn abandon_stream<R: Remote>(&mut self, target: &Target<'_, R>) {
        if let Some(stream) = self.stream.take() {
            tokio::spawn(abandon(
                Arc::clone(target.remote),
                target.key.to_owned(),
                stream,
            ));
        }
    }

    fn read_part(&self, offset: u64, len: u64) -> Result<Vec<u8>, RemoteError> {
        self.read(offset, len)
    }

    async fn send_next_part<R: Remote>(
        &mut self,
        target: &Target<'_, R>,
    ) -> Result<(), RemoteError> {
        let stream = self.stream.as_mut().expect("called with a stream");
        if stream.upload.is_none() {
            let id = target.remote.create_upload(target.key, &self.attrs).await?;
            stream.upload = Some((id, self.attrs.clone()));
        }
        if stream.parts.iter().filter(|p| p.sending()).count() >= PARTS_IN_FLIGHT {
            if let Some(oldest) = stream.parts.iter_mut().find(|p| p.sending()) {
                // Waiting here bounds the memory of parts in flight, and slows a writer
                // that is faster than the network.
                let Part::Sending(task) = std::mem::replace(oldest, Part::Sent(Ok(String::new())))
                else {
                    unreachable!("found sending");
                };
                let result = Part::Sending(task).result().await;
                *oldest = Part::Sent(result);
            }
        }
        let (offset, len) = (stream.sent, target.part_size);
        let body = self.read_part(offset, len)?;
        let stream = self.stream.as_mut().expect("still there");
        let (id, _) = stream.upload.clone().expect("started above");
        let number = stream.parts.len() as i32 + 1;
        let (remote, key) = (Arc::clone(target.remote), target.key.to_owned());
        stream.parts.push(Part::Sending(tokio::spawn(async move {
            remote.upload_part(&key, &id, number, body).await
        })));
        stream.sent += len;
        Ok(())
    }

    /// Uploads the staged file if it has changes; returns the object's new ETag (None
    /// when there was nothing to upload). On failure the staged data stays as it was.
    pub async fn upload<R: Remote>(
        &mut self,
        target: &Target<'_, R>,
    ) -> Result<Option<String>, RemoteError> {
        if !self.dirty {
            return Ok(None);
        }
        debug_assert!(self.loaded, "dirty before its bytes were fetched");
        let stream = self.stream.take();
        let result = match stream {
            Some(stream) if stream.upload.is_some() => self.finish_stream(target, stream).await,
            _ if self.size <= target.part_size => {
                let body = self.read(0, self.size)?;
                target.remote.put(target.key, body, &self.attrs).await
            }
            _ => self.upload_in_parts(target).await,
        };
        if result.is_ok() {
            self.dirty = false;
        }
        result.map(Some)
    }

    async fn finish_stream<R: Remote>(
        &mut self,
        target: &Target<'_, R>,
        mut stream: Stream,
    ) -> Result<String, RemoteError> {
        let (id, attrs_sent) = stream.upload.clone().expect("checked by the caller");
        let tail = self.size - stream.sent;
        let result = async {
            if tail > 0 {
                let body = self.read_part(stream.sent, tail)?;
                let (remote, key, id, number) = (
                    Arc::clone(target.remote),
                    target.key.to_owned(),
                    id.clone(),
                    stream.parts.len() as i32 + 1,
                );
                stream.parts.push(Part::Sending(tokio::spawn(async move {
                    remote.upload_part(&key, &id, number, body).await
                })));
            }
            let mut etags = Vec::new();
            for part in std::mem::take(&mut stream.parts) {
                etags.push(part.result().await?);
            }
            target.remote.complete_upload(target.key, &id, etags).await
        }
        .await;
        let etag = match result {
            Ok(etag) => etag,
            Err(err) => {
                target.remote.abort_upload(target.key, &id).await;
                return Err(err);
            }
        };
        if attrs_sent != self.attrs {
            // Mode or times changed after the upload began (`cp -p` sets them last).
            target
                .remote
                .copy(target.key, target.key, self.size, Some(&self.attrs))
                .await?;
        }
        Ok(etag)
    }

    async fn upload_in_parts<R: Remote>(
        &mut self,
        target: &Target<'_, R>,
    ) -> Result<String, RemoteError> {
        let part_size = crate::storage::s3::part_size_for(self.size, target.part_size);
        let id = target.remote.create_upload(target.key, &self.attrs).await?;
        let result = async {
            let mut etags = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            let mut in_flight = futures::stream::FuturesOrdered::new();
            while offset < self.size || !in_flight.is_empty() {
                use futures::StreamExt;
                if offset < self.size && in_flight.len() < PARTS_IN_FLIGHT {
                    let len = part_size.min(self.size - offset);
                    let body = self.read_part(offset, len)?;
                    let (remote, key, id) = (Arc::clone(target.remote), target.key, &id);
                    in_flight
                        .push_back(async move { remote.upload_part(key, id, number, body).await });
                    offset += len;
                    number += 1;
                    continue;
                }
                let etag = in_flight.next().await.expect("not empty")?;
                etags.push(etag);
            }
            target.remote.complete_upload(target.key, &id, etags).await
        }
        .await;
        if result.is_err() {
            target.remote.abort_upload(target.key, &id).await;
        }
        result
    }

    /// Ends the staged state without an upload (the file was removed, or the mount
    /// stops); parts sent early are aborted.
    pub async fn discard<R: Remote>(&mut self, target: &Target<'_, R>) {
        if let Some(stream) = self.stream.take() {
            abandon(Arc::clone(target.remote), target.key.to_owned(), stream).await;
        }
        self.dirty = false;
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if self.loaded {
            let held = self.size.min(self.staged_total.load(Ordering::Relaxed));
            self.staged_total.fetch_sub(held, Ordering::Relaxed);
        }
    }
}

impl Stream {
    fn empty() -> Self {
        Self {
            upload: None,
            parts: Vec::new(),
            sent: 0,
        }
    }
}

/// The errno for a failed upload.
pub fn upload_errno(err: &RemoteError) -> Errno {
    match err.kind {
        ErrorKind::Denied => Errno::ACCESS,
        _ => Errno::IO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::remote::memory::MemoryRemote;

    fn target(remote: &Arc<MemoryRemote>, part_size: u64) -> Target<'_, MemoryRemote> {
        Target {
            remote,
            key: "k",
            part_size,
        }
    }

    fn staged(dir: &Path, existing: Option<u64>) -> StagedFile {
        StagedFile::new(dir, existing, StoredAttrs::default(), Arc::default()).unwrap()
    }

    #[tokio::test]
    async fn sequential_writes_send_parts_while_written() {
        let remote = Arc::new(MemoryRemote::default());
        let dir = tempfile::tempdir().unwrap();
        let target = target(&remote, 4);
        let mut file = staged(dir.path(), None);
        let data: Vec<u8> = (0..14u8).collect();
        for (i, chunk) in data.chunks(3).enumerate() {
            file.write(&target, i as u64 * 3, chunk).await.unwrap();
        }
        assert_eq!(remote.open_uploads(), 1, "parts left before close");
        assert!(remote.get("k").is_none());
        assert!(file.upload(&target).await.unwrap().is_some());
        assert_eq!(remote.get("k").unwrap(), data);
        assert_eq!(remote.open_uploads(), 0);
        assert_eq!(
            file.upload(&target).await.unwrap(),
            None,
            "nothing new to send"
        );
    }

    #[tokio::test]
    async fn random_writes_and_truncation_work_on_the_staged_copy() {
        let remote = Arc::new(MemoryRemote::default());
        let etag = remote.insert_with("k", b"0123456789", StoredAttrs::default());
        let dir = tempfile::tempdir().unwrap();
        let target = target(&remote, 4);
        let mut file = staged(dir.path(), Some(10));
        assert!(!file.is_dirty(), "opening changes nothing");
        file.load(&target, &etag).await.unwrap();
        file.write(&target, 2, b"ab").await.unwrap();
        file.write(&target, 10, b"!").await.unwrap();
        assert_eq!(file.read(0, 100).unwrap(), b"01ab456789!");
        file.set_len(&target, 4).unwrap();
        file.write(&target, 6, b"z").await.unwrap();
        assert_eq!(file.read(0, 100).unwrap(), b"01ab\0\0z");
        file.upload(&target).await.unwrap();
        assert_eq!(remote.get("k").unwrap(), b"01ab\0\0z");
        assert_eq!(remote.open_uploads(), 0);
    }

    #[tokio::test]
    async fn a_failed_upload_keeps_the_data_for_another_try() {
        let remote = Arc::new(MemoryRemote::default());
        let dir = tempfile::tempdir().unwrap();
        let target = target(&remote, 4);
        let mut file = staged(dir.path(), None);
        file.write(&target, 0, b"0123456789").await.unwrap();
        remote.fail_writes.store(true, Ordering::Relaxed);
        assert!(file.upload(&target).await.is_err());
        assert!(file.is_dirty());
        assert_eq!(file.read(0, 100).unwrap(), b"0123456789");
        remote.fail_writes.store(false, Ordering::Relaxed);
        file.upload(&target).await.unwrap();
        assert_eq!(remote.get("k").unwrap(), b"0123456789");
        assert_eq!(remote.open_uploads(), 0, "the abandoned parts were aborted");
    }

    #[tokio::test]
    async fn attributes_set_after_the_parts_left_still_reach_the_object() {
        let remote = Arc::new(MemoryRemote::default());
        let dir = tempfile::tempdir().unwrap();
        let target = target(&remote, 4);
        let mut file = staged(dir.path(), None);
        file.write(&target, 0, b"0123456789").await.unwrap();
        let mut attrs = file.attrs.clone();
        attrs.mode = Some(0o100755);
        file.set_attrs(attrs);
        file.upload(&target).await.unwrap();
        assert_eq!(remote.attrs("k").unwrap().mode, Some(0o100755));
    }

    #[tokio::test]
    async fn staged_bytes_are_counted_while_held() {
        let remote = Arc::new(MemoryRemote::default());
        let dir = tempfile::tempdir().unwrap();
        let target = target(&remote, 100);
        let total = Arc::new(AtomicU64::new(0));
        let mut file =
            StagedFile::new(dir.path(), None, StoredAttrs::default(), Arc::clone(&total)).unwrap();
        file.write(&target, 0, &[1; 30]).await.unwrap();
        file.set_len(&target, 10).unwrap();
        assert_eq!(total.load(Ordering::Relaxed), 10);
        drop(file);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }
}
