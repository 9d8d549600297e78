//! Content hashing of local files, run on blocking threads so it never stalls the
//! async workers or the listing.
//!
//! One pass over a file yields its whole MD5 and the part MD5s for any number of part
//! sizes, so a multipart ETag can be matched without reading the file once per guess.

use std::io::Read;
use std::path::PathBuf;

use md5::{Digest, Md5};

const READ_BUFFER: usize = 1024 * 1024;

pub type Md5Digest = [u8; 16];

/// What one pass over a file produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    pub whole: Md5Digest,
    /// For each requested part size, the MD5 of every part, in order.
    pub parts: Vec<Vec<Md5Digest>>,
    /// Bytes read; differs from the listed size when the file changed meanwhile.
    pub len: u64,
}

/// MD5s of consecutive `part_size` chunks of a stream.
struct PartHasher {
    part_size: u64,
    current: Md5,
    filled: u64,
    digests: Vec<Md5Digest>,
}

impl PartHasher {
    fn new(part_size: u64) -> Self {
        Self {
            part_size: part_size.max(1),
            current: Md5::new(),
            filled: 0,
            digests: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.part_size - self.filled) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.part_size {
                self.digests
                    .push(std::mem::take(&mut self.current).finalize().into());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<Md5Digest> {
        if self.filled > 0 || self.digests.is_empty() {
            self.digests.push(self.current.finalize().into());
        }
        self.digests
    }
}

/// Reads the file once, hashing it whole and in parts of each of `part_sizes`.
pub async fn file_digests(path: PathBuf, part_sizes: Vec<u64>) -> std::io::Result<FileDigests> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut whole = Md5::new();
        let mut hashers: Vec<PartHasher> = part_sizes.into_iter().map(PartHasher::new).collect();
        let mut buffer = vec![0; READ_BUFFER];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            len += n as u64;
            whole.update(&buffer[..n]);
            for hasher in &mut hashers {
                hasher.update(&buffer[..n]);
            }
        }
        Ok(FileDigests {
            whole: whole.finalize().into(),
            parts: hashers.into_iter().map(PartHasher::finish).collect(),
            len,
        })
    })
    .await
    .map_err(std::io::Error::other)?
}

/// MD5 of a whole file: the ETag S3 gives it when uploaded in one request.
pub async fn md5_file(path: PathBuf) -> std::io::Result<Md5Digest> {
    Ok(file_digests(path, Vec::new()).await?.whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ETag;

    #[tokio::test]
    async fn hashes_file_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "The quick brown fox jumps over the lazy dog").unwrap();
        let digest = md5_file(path).await.unwrap();
        assert_eq!(hex::encode(digest), "9e107d9d372bb6826bd81d3542a419d6");
    }

    #[tokio::test]
    async fn part_digests_match_hashing_each_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..2_500_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let got = file_digests(path, vec![1 << 20, 3_000_000]).await.unwrap();
        let by_hand: Vec<Md5Digest> = data
            .chunks(1 << 20)
            .map(|c| Md5::digest(c).into())
            .collect();
        assert_eq!(got.parts[0], by_hand);
        assert_eq!(got.parts[1], vec![<Md5Digest>::from(Md5::digest(&data))]);
        assert_eq!(got.whole, got.parts[1][0]);
        assert_eq!(got.len, data.len() as u64);
        assert_eq!(ETag::multipart(&got.parts[0]).parts(), Some(3));
    }

    #[tokio::test]
    async fn an_empty_file_is_one_empty_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"").unwrap();
        let got = file_digests(path, vec![5 << 20]).await.unwrap();
        assert_eq!(got.parts[0].len(), 1);
    }
}
