//! Content hashing of local files, run on blocking threads so it never stalls the
//! async workers or the listing.
//!
//! One pass over a file yields any number of digests (MD5 for ETags, the checksum
//! algorithms), each of the whole file and of its parts for several part sizes, so a
//! multipart ETag or a composite checksum is matched without reading the file per guess.

use std::io::Read;
use std::path::PathBuf;

use crate::storage::checksum::{digest, ChecksumAlgorithm, HashKind, Hasher, PartHasher};

const READ_BUFFER: usize = 1024 * 1024;

pub type Md5Digest = [u8; 16];

/// What to compute in a pass: one kind of hash, of the whole file, of its parts for each
/// part size, or both. Each costs a pass of the hash over every byte, so what is not
/// needed is not asked for: a multipart ETag or a composite checksum is made of its parts.
#[derive(Debug, Clone)]
pub struct DigestRequest {
    pub kind: HashKind,
    pub whole: bool,
    pub part_sizes: Vec<u64>,
}

impl DigestRequest {
    /// The digest of the whole file.
    pub fn whole(kind: HashKind) -> Self {
        Self::whole_and_parts(kind, Vec::new())
    }

    /// The digests of the parts for each part size, or of the whole file when there is
    /// no part size to try.
    pub fn parts(kind: HashKind, part_sizes: Vec<u64>) -> Self {
        Self {
            kind,
            whole: part_sizes.is_empty(),
            part_sizes,
        }
    }

    /// The digest of the whole file and those of its parts for each part size.
    pub fn whole_and_parts(kind: HashKind, part_sizes: Vec<u64>) -> Self {
        Self {
            kind,
            whole: true,
            part_sizes,
        }
    }
}

/// The answer to one `DigestRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Empty unless the request asked for it.
    pub whole: Vec<u8>,
    /// For each requested part size, the digest of every part, in order.
    pub parts: Vec<Vec<Vec<u8>>>,
}

/// What one pass over a file produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    /// In the order of the requests.
    pub digests: Vec<Digests>,
    /// Bytes read; differs from the listed size when the file changed meanwhile.
    pub len: u64,
}

struct RequestHasher {
    whole: Option<Hasher>,
    parts: Vec<PartHasher>,
}

/// Reads the file once and answers every request.
pub async fn file_digests(
    path: PathBuf,
    requests: Vec<DigestRequest>,
) -> std::io::Result<FileDigests> {
    tokio::task::spawn_blocking(move || read_digests(&mut std::fs::File::open(&path)?, &requests))
        .await
        .map_err(std::io::Error::other)?
}

/// `file_digests` of an open file, read from where it stands, on this thread.
fn read_digests(
    file: &mut std::fs::File,
    requests: &[DigestRequest],
) -> std::io::Result<FileDigests> {
    let mut hashers = RequestHashers::new(requests);
    let mut buffer = vec![0; READ_BUFFER];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hashers.update(&buffer[..n]);
    }
    Ok(hashers.finish())
}

/// `read_digests` of a file whose ranges are being written in any order: each written
/// range is announced on `written` as (offset, length), and the file is hashed in order as
/// far as its ranges reach, so that hashing goes on while the rest is still coming. None
/// when the announcements end before the file's `size` is reached (the write failed).
pub fn digests_as_written(
    file: &std::fs::File,
    size: u64,
    requests: &[DigestRequest],
    mut written: tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
) -> std::io::Result<Option<FileDigests>> {
    use std::os::unix::fs::FileExt;
    let mut hashers = RequestHashers::new(requests);
    let mut buffer = vec![0; READ_BUFFER];
    // Ranges written beyond the hashed prefix, by offset.
    let mut ahead = std::collections::BTreeMap::new();
    let (mut hashed, mut reach) = (0u64, 0u64);
    while hashed < size {
        while let Some(end) = ahead.remove(&reach) {
            reach = end;
        }
        if hashed == reach {
            let Some((offset, len)) = written.blocking_recv() else {
                return Ok(None);
            };
            ahead.insert(offset, offset + len);
            continue;
        }
        let n = (reach - hashed).min(READ_BUFFER as u64) as usize;
        file.read_exact_at(&mut buffer[..n], hashed)?;
        hashers.update(&buffer[..n]);
        hashed += n as u64;
    }
    Ok(Some(hashers.finish()))
}

/// Answers every request for bytes in memory (a link's target kept as an object).
pub fn bytes_digests(data: &[u8], requests: &[DigestRequest]) -> FileDigests {
    let mut hashers = RequestHashers::new(requests);
    hashers.update(data);
    hashers.finish()
}

/// One hasher per request, fed the same bytes.
struct RequestHashers {
    hashers: Vec<RequestHasher>,
    len: u64,
}

impl RequestHashers {
    fn new(requests: &[DigestRequest]) -> Self {
        let hashers = requests
            .iter()
            .map(|request| RequestHasher {
                whole: request.whole.then(|| Hasher::new(request.kind)),
                parts: request
                    .part_sizes
                    .iter()
                    .map(|&size| PartHasher::new(request.kind, size))
                    .collect(),
            })
            .collect();
        Self { hashers, len: 0 }
    }

    fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        for hasher in &mut self.hashers {
            if let Some(whole) = &mut hasher.whole {
                whole.update(data);
            }
            for part in &mut hasher.parts {
                part.update(data);
            }
        }
    }

    fn finish(self) -> FileDigests {
        let digests = self
            .hashers
            .into_iter()
            .map(|hasher| Digests {
                whole: hasher
                    .whole
                    .map_or_else(Vec::new, |mut h| h.finalize_reset()),
                parts: hasher.parts.into_iter().map(PartHasher::finish).collect(),
            })
            .collect();
        FileDigests {
            digests,
            len: self.len,
        }
    }
}

/// A small file read whole, with the digests its upload sends.
pub struct SmallFile {
    pub data: Vec<u8>,
    pub md5: Vec<u8>,
    pub checksum: Option<Vec<u8>>,
}

/// Reads a small file whole and hashes it. When its bytes are in the page cache (as after
/// the walk that listed it, usually) this happens right here, without a thread hop;
/// otherwise in one blocking call, so the runtime never waits for a disk.
pub async fn read_small(
    path: PathBuf,
    algorithm: Option<ChecksumAlgorithm>,
) -> std::io::Result<SmallFile> {
    let hash = move |data: Vec<u8>| {
        let md5 = digest(HashKind::Md5, &data);
        let checksum = algorithm.map(|a| digest(HashKind::Checksum(a), &data));
        SmallFile {
            data,
            md5,
            checksum,
        }
    };
    if let Some(data) = read_if_cached(&path)? {
        return Ok(hash(data));
    }
    tokio::task::spawn_blocking(move || std::fs::read(&path).map(hash))
        .await
        .map_err(std::io::Error::other)?
}

/// The whole file if every byte is in the page cache (`preadv2` with `RWF_NOWAIT`), else
/// `None`.
#[cfg(target_os = "linux")]
fn read_if_cached(path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
    use rustix::io::{preadv2, Errno, ReadWriteFlags};
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len() as usize;
    // One spare byte, to see the end of the file.
    let mut data = vec![0u8; len + 1];
    let mut filled = 0;
    loop {
        let rest = &mut data[filled..];
        if rest.is_empty() {
            // The file grew since the stat: the blocking read takes it as it is.
            return Ok(None);
        }
        let mut iov = [std::io::IoSliceMut::new(rest)];
        let n = match preadv2(&file, &mut iov, filled as u64, ReadWriteFlags::NOWAIT) {
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INTR) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        if n == 0 {
            data.truncate(filled);
            return Ok(Some(data));
        }
        filled += n;
    }
}

#[cfg(not(target_os = "linux"))]
fn read_if_cached(_path: &std::path::Path) -> std::io::Result<Option<Vec<u8>>> {
    Ok(None)
}

/// An MD5 digest as the fixed-size array ETags are built from.
pub fn as_md5(digest: &[u8]) -> Md5Digest {
    digest.try_into().expect("an MD5 digest is 16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ETag;

    /// MD5 of the whole file and of its parts for each part size: what ETags are made of.
    async fn md5_digests(path: PathBuf, part_sizes: Vec<u64>) -> std::io::Result<(Digests, u64)> {
        let request = DigestRequest::whole_and_parts(HashKind::Md5, part_sizes);
        let mut out = file_digests(path, vec![request]).await?;
        Ok((out.digests.remove(0), out.len))
    }

    #[tokio::test]
    async fn small_files_are_read_whole_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = b"hello world".repeat(1000);
        std::fs::write(&path, &data).unwrap();
        // Just written, so in the page cache: read without a thread hop.
        assert_eq!(read_if_cached(&path).unwrap(), Some(data.clone()));
        let algorithm = Some(ChecksumAlgorithm::Crc32c);
        let file = read_small(path.clone(), algorithm).await.unwrap();
        assert_eq!(file.data, data);
        assert_eq!(file.md5, digest(HashKind::Md5, &data));
        assert_eq!(
            crate::storage::checksum::b64(&file.checksum.unwrap()),
            "ROPt5Q=="
        );
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read_small(path, None).await.unwrap().data, b"");
    }

    #[tokio::test]
    async fn one_pass_answers_several_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = b"hello world".repeat(1000);
        std::fs::write(&path, &data).unwrap();
        let crc = HashKind::Checksum(ChecksumAlgorithm::Crc32c);
        let requests = vec![
            DigestRequest::whole(HashKind::Md5),
            DigestRequest::whole_and_parts(crc, vec![4096]),
        ];
        let got = file_digests(path, requests).await.unwrap();
        assert_eq!(got.digests[0].whole, digest(HashKind::Md5, &data));
        assert_eq!(got.digests[1].whole, digest(crc, &data));
        assert_eq!(got.digests[1].parts[0][2], digest(crc, &data[8192..]));
    }

    #[tokio::test]
    async fn hashes_file_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "The quick brown fox jumps over the lazy dog").unwrap();
        let (digests, _) = md5_digests(path, Vec::new()).await.unwrap();
        assert_eq!(
            hex::encode(as_md5(&digests.whole)),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }

    #[test]
    fn ranges_written_out_of_order_are_hashed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * READ_BUFFER as u32 / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let request = DigestRequest::whole(HashKind::Md5);
        let third = data.len() as u64 / 3;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for range in [
            (2 * third, data.len() as u64 - 2 * third),
            (0, third),
            (third, third),
        ] {
            tx.send(range).unwrap();
        }
        drop(tx);
        let read = digests_as_written(&file, data.len() as u64, std::slice::from_ref(&request), rx)
            .unwrap()
            .unwrap();
        assert_eq!(read.digests[0].whole, digest(HashKind::Md5, &data));
        // Announcements that end short of the file give no verdict.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send((third, third)).unwrap();
        drop(tx);
        let short = digests_as_written(&file, data.len() as u64, &[request], rx).unwrap();
        assert!(short.is_none());
    }

    #[tokio::test]
    async fn part_digests_match_hashing_each_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let (got, len) = md5_digests(path, vec![1 << 20, 3_000_000]).await.unwrap();
        let by_hand: Vec<Vec<u8>> = data
            .chunks(1 << 20)
            .map(|c| digest(HashKind::Md5, c))
            .collect();
        assert_eq!(got.parts[0], by_hand);
        assert_eq!(got.parts[1], vec![digest(HashKind::Md5, &data)]);
        assert_eq!(got.whole, got.parts[1][0]);
        assert_eq!(len, data.len() as u64);
        assert_eq!(ETag::multipart(&got.parts[0]).parts(), Some(3));
    }

    #[tokio::test]
    async fn an_empty_file_is_one_empty_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let (got, _) = md5_digests(path, vec![5 << 20]).await.unwrap();
        assert_eq!(got.parts[0].len(), 1);
    }
}
