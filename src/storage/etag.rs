//! S3 entity tags, parsed once so that comparisons never juggle quotes or case.
//!
//! Invariant: an `ETag` holds the unquoted, lowercase tag; `parts` is `Some(n)` only for
//! the multipart form `<md5 of part md5s>-<n>`.

use std::fmt;

use super::checksum::{HashKind, Hasher};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag {
    value: String,
    parts: Option<u32>,
}

impl ETag {
    /// Parses a tag as servers send it (`"abc"`, `W/"abc"` or bare).
    pub fn parse(raw: &str) -> Self {
        let unquoted = raw.trim().trim_start_matches("W/").trim_matches('"');
        let value = unquoted.to_ascii_lowercase();
        let parts = value
            .rsplit_once('-')
            .and_then(|(hash, n)| is_md5_hex(hash).then(|| n.parse().ok()).flatten());
        Self { value, parts }
    }

    /// The tag S3 gives a single-part object with this MD5.
    pub fn from_md5(digest: &[u8; 16]) -> Self {
        Self {
            value: hex::encode(digest),
            parts: None,
        }
    }

    /// The tag S3 gives a multipart upload with these part MD5s: the MD5 of their
    /// concatenation, then `-` and the part count.
    pub fn multipart(part_digests: &[impl AsRef<[u8]>]) -> Self {
        let mut hasher = Hasher::new(HashKind::Md5);
        for digest in part_digests {
            hasher.update(digest.as_ref());
        }
        let parts = part_digests.len() as u32;
        Self {
            value: format!("{}-{parts}", hex::encode(hasher.finalize_reset())),
            parts: Some(parts),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Number of parts for a multipart tag.
    pub fn parts(&self) -> Option<u32> {
        self.parts
    }

    /// True when the tag is the plain MD5 of the content (single-part upload without
    /// SSE-KMS/SSE-C); only then can it be checked against a local file's MD5.
    pub fn is_plain_md5(&self) -> bool {
        self.parts.is_none() && is_md5_hex(&self.value)
    }

    /// Whether two tags were computed the same way, so that equality means equal content
    /// and inequality means different content.
    pub fn comparable_with(&self, other: &ETag) -> bool {
        (self.is_plain_md5() && other.is_plain_md5())
            || (self.parts.is_some() && self.parts == other.parts)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MD5: &str = "9e107d9d372bb6826bd81d3542a419d6";

    #[test]
    fn parses_quoted_weak_and_multipart_tags() {
        let plain = ETag::parse(&format!("\"{}\"", MD5.to_uppercase()));
        assert_eq!(plain.as_str(), MD5);
        assert!(plain.is_plain_md5());
        assert_eq!(ETag::parse(&format!("W/\"{MD5}\"")), plain);

        let multi = ETag::parse(&format!("\"{MD5}-12\""));
        assert_eq!(multi.parts(), Some(12));
        assert!(!multi.is_plain_md5());
    }

    #[test]
    fn only_tags_of_the_same_kind_are_comparable() {
        let plain = ETag::parse(MD5);
        let multi3 = ETag::parse(&format!("{MD5}-3"));
        let multi4 = ETag::parse(&format!("{MD5}-4"));
        let opaque = ETag::parse("not-an-md5");
        assert!(plain.comparable_with(&ETag::parse("0123456789abcdef0123456789abcdef")));
        assert!(multi3.comparable_with(&ETag::parse(&format!("{MD5}-3"))));
        assert!(!plain.comparable_with(&multi3));
        assert!(!multi3.comparable_with(&multi4));
        assert!(!opaque.comparable_with(&opaque));
    }

    #[test]
    fn from_md5_matches_the_hex_form() {
        let digest: [u8; 16] = hex::decode(MD5).unwrap().try_into().unwrap();
        assert_eq!(ETag::from_md5(&digest), ETag::parse(MD5));
    }
}
