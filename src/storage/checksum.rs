//! S3 additional checksums (`x-amz-checksum-*`): the algorithms, the values as S3 states
//! them, and how to compute the same values from local bytes.
//!
//! Invariant: a `Checksum` holds the base64 value S3 returns, without the `-N` suffix of a
//! composite checksum; `parts` is `Some(n)` only for a composite (checksum of the part
//! checksums of an n-part upload).

use std::fmt;

use base64::Engine;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use super::md5::Md5;

/// The algorithms S3 offers for additional checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    pub fn sdk(self) -> aws_sdk_s3::types::ChecksumAlgorithm {
        use aws_sdk_s3::types::ChecksumAlgorithm as Sdk;
        match self {
            ChecksumAlgorithm::Crc32 => Sdk::Crc32,
            ChecksumAlgorithm::Crc32c => Sdk::Crc32C,
            ChecksumAlgorithm::Crc64nvme => Sdk::Crc64Nvme,
            ChecksumAlgorithm::Sha1 => Sdk::Sha1,
            ChecksumAlgorithm::Sha256 => Sdk::Sha256,
        }
    }

    /// CRCs combine across parts, so a multipart upload can carry a checksum of the
    /// whole object (`FULL_OBJECT`); SHA checksums of multipart objects are composite.
    pub fn is_crc(self) -> bool {
        matches!(
            self,
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c | ChecksumAlgorithm::Crc64nvme
        )
    }

    pub fn checksum_type(self) -> aws_sdk_s3::types::ChecksumType {
        if self.is_crc() {
            aws_sdk_s3::types::ChecksumType::FullObject
        } else {
            aws_sdk_s3::types::ChecksumType::Composite
        }
    }
}

/// A hash of bytes: the MD5 behind ETags, or one of the checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Md5,
    Checksum(ChecksumAlgorithm),
}

/// Incremental state of one `HashKind`.
pub enum Hasher {
    Md5(Md5),
    Crc(crc_fast::Digest, usize),
    Sha1(Sha1),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(kind: HashKind) -> Self {
        use crc_fast::CrcAlgorithm;
        let crc = |algorithm, width| Hasher::Crc(crc_fast::Digest::new(algorithm), width);
        match kind {
            HashKind::Md5 => Hasher::Md5(Md5::new()),
            HashKind::Checksum(ChecksumAlgorithm::Crc32) => crc(CrcAlgorithm::Crc32IsoHdlc, 4),
            HashKind::Checksum(ChecksumAlgorithm::Crc32c) => crc(CrcAlgorithm::Crc32Iscsi, 4),
            HashKind::Checksum(ChecksumAlgorithm::Crc64nvme) => crc(CrcAlgorithm::Crc64Nvme, 8),
            HashKind::Checksum(ChecksumAlgorithm::Sha1) => Hasher::Sha1(Sha1::new()),
            HashKind::Checksum(ChecksumAlgorithm::Sha256) => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Crc(h, _) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// Appends `next`, the state of the bytes that follow these, as if one hasher had
    /// seen them all; CRCs alone can, so for the others this is false and nothing changes.
    pub fn combine(&mut self, next: &Hasher) -> bool {
        match (self, next) {
            (Hasher::Crc(state, _), Hasher::Crc(after, _)) => {
                state.combine(after);
                true
            }
            _ => false,
        }
    }

    /// The digest in the byte order S3 encodes (CRCs big-endian), and a fresh state.
    pub fn finalize_reset(&mut self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize_reset().to_vec(),
            Hasher::Crc(h, width) => h.finalize_reset().to_be_bytes()[8 - *width..].to_vec(),
            Hasher::Sha1(h) => h.finalize_reset().to_vec(),
            Hasher::Sha256(h) => h.finalize_reset().to_vec(),
        }
    }
}

/// Digests of consecutive `part_size` chunks of a stream.
pub struct PartHasher {
    part_size: u64,
    current: Hasher,
    filled: u64,
    digests: Vec<Vec<u8>>,
}

impl PartHasher {
    pub fn new(kind: HashKind, part_size: u64) -> Self {
        Self {
            part_size: part_size.max(1),
            current: Hasher::new(kind),
            filled: 0,
            digests: Vec::new(),
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (self.part_size - self.filled) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.filled += take as u64;
            data = &data[take..];
            if self.filled == self.part_size {
                self.digests.push(self.current.finalize_reset());
                self.filled = 0;
            }
        }
    }

    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if self.filled > 0 || self.digests.is_empty() {
            self.digests.push(self.current.finalize_reset());
        }
        self.digests
    }
}

pub fn digest(kind: HashKind, data: &[u8]) -> Vec<u8> {
    let mut hasher = Hasher::new(kind);
    hasher.update(data);
    hasher.finalize_reset()
}

pub fn b64(digest: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub value: String,
    pub parts: Option<u32>,
}

impl Checksum {
    /// A checksum as S3 returns it: `value` or, for a composite, `value-N`.
    pub fn parse(algorithm: ChecksumAlgorithm, raw: &str) -> Self {
        let (value, parts) = match raw.rsplit_once('-') {
            Some((value, n)) => match n.parse() {
                Ok(n) => (value, Some(n)),
                Err(_) => (raw, None),
            },
            None => (raw, None),
        };
        Self {
            algorithm,
            value: value.to_owned(),
            parts,
        }
    }

    /// The checksum of a whole object.
    pub fn full(algorithm: ChecksumAlgorithm, digest: &[u8]) -> Self {
        Self {
            algorithm,
            value: b64(digest),
            parts: None,
        }
    }

    /// The composite checksum S3 gives a multipart upload: the checksum of the
    /// concatenated part checksums.
    pub fn composite(algorithm: ChecksumAlgorithm, part_digests: &[Vec<u8>]) -> Self {
        let mut hasher = Hasher::new(HashKind::Checksum(algorithm));
        for part in part_digests {
            hasher.update(part);
        }
        Self {
            algorithm,
            value: b64(&hasher.finalize_reset()),
            parts: Some(part_digests.len() as u32),
        }
    }

    /// Whether two checksums were computed the same way, so their values can be compared.
    pub fn comparable_with(&self, other: &Checksum) -> bool {
        self.algorithm == other.algorithm && self.parts == other.parts
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm.name(), self.value)?;
        match self.parts {
            Some(n) => write!(f, "-{n}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(algorithm: ChecksumAlgorithm, data: &[u8]) -> String {
        b64(&digest(HashKind::Checksum(algorithm), data))
    }

    #[test]
    fn values_match_what_s3_servers_return() {
        let data = b"hello world".repeat(1000);
        assert_eq!(full(ChecksumAlgorithm::Crc32c, &data), "ROPt5Q==");
        assert_eq!(
            full(ChecksumAlgorithm::Sha256, &data),
            "NMeTyb60RAz8O63Wl3YHEhUvy+CJBaaiE3s4lf13Gd8="
        );
        // Check values of the CRC catalogue for "123456789".
        let check = |algorithm| hex::encode(digest(HashKind::Checksum(algorithm), b"123456789"));
        assert_eq!(check(ChecksumAlgorithm::Crc32), "cbf43926");
        assert_eq!(check(ChecksumAlgorithm::Crc32c), "e3069283");
        assert_eq!(check(ChecksumAlgorithm::Crc64nvme), "ae8b14860a799888");
    }

    #[test]
    fn composite_matches_a_server_computed_one() {
        // Two 5 MiB parts of 'x', uploaded with SHA256 part checksums.
        let part = vec![b'x'; 5 << 20];
        let part_digest = digest(HashKind::Checksum(ChecksumAlgorithm::Sha256), &part);
        let got = Checksum::composite(
            ChecksumAlgorithm::Sha256,
            &[part_digest.clone(), part_digest],
        );
        let stated = Checksum::parse(
            ChecksumAlgorithm::Sha256,
            "2qXW+F4KwLkYFPGnckLOh/NdC0Xlb0SDCCwI2sDVPqE=-2",
        );
        assert_eq!(got, stated);
        assert_eq!(
            stated.to_string(),
            "SHA256 2qXW+F4KwLkYFPGnckLOh/NdC0Xlb0SDCCwI2sDVPqE=-2"
        );
    }

    #[test]
    fn full_and_composite_are_not_comparable() {
        let a = Checksum::parse(ChecksumAlgorithm::Crc32c, "ROPt5Q==");
        let b = Checksum::parse(ChecksumAlgorithm::Crc32c, "ROPt5Q==-2");
        let c = Checksum::parse(ChecksumAlgorithm::Crc32, "ROPt5Q==");
        assert!(!a.comparable_with(&b));
        assert!(!a.comparable_with(&c));
        assert!(a.comparable_with(&a.clone()));
    }
}
