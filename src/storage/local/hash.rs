//! Content hashing of local files, run on blocking threads so it never stalls the
//! async workers or the listing.

use std::io::Read;
use std::path::PathBuf;

use md5::{Digest, Md5};

const READ_BUFFER: usize = 1024 * 1024;

/// MD5 of a whole file: the ETag S3 gives it when uploaded in one request.
pub async fn md5_file(path: PathBuf) -> std::io::Result<[u8; 16]> {
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = Md5::new();
        let mut buffer = vec![0; READ_BUFFER];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(hasher.finalize().into())
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_file_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "The quick brown fox jumps over the lazy dog").unwrap();
        let digest = md5_file(path).await.unwrap();
        assert_eq!(hex::encode(digest), "9e107d9d372bb6826bd81d3542a419d6");
    }
}
