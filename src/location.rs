//! Where a mirror reads from or writes to: `s3://bucket[/prefix]` or a local directory.
//!
//! Invariant: an S3 prefix is either empty or ends with `/`, so keys below it are
//! relative names and `s3://b/dir` never matches `s3://b/dir2/...`.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?}: an S3 location needs a bucket name, as in s3://bucket/prefix")]
    MissingBucket(String),
    #[error("{input:?}: invalid bucket name {bucket:?}: {why}")]
    InvalidBucket {
        input: String,
        bucket: String,
        why: &'static str,
    },
    #[error("{0:?}: did you mean s3://...? (an S3 location starts with s3://)")]
    MalformedScheme(String),
    #[error("{0:?}: unsupported scheme; use s3://bucket[/prefix] or a local directory")]
    UnsupportedScheme(String),
    #[error("{0:?}: a prefix cannot contain an empty path segment (//)")]
    EmptySegment(String),
    #[error("the location is empty; use s3://bucket[/prefix] or a local directory")]
    Empty,
}

/// A bucket and a normalised key prefix (empty, or ending with `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    bucket: String,
    prefix: String,
}

impl S3Url {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix: empty, or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full object key for a key relative to this location.
    pub fn full_key(&self, relative: &str) -> String {
        format!("{}{}", self.prefix, relative)
    }

    fn parse(input: &str, rest: &str) -> Result<Self, LocationError> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(LocationError::MissingBucket(input.to_owned()));
        }
        validate_bucket(bucket).map_err(|why| LocationError::InvalidBucket {
            input: input.to_owned(),
            bucket: bucket.to_owned(),
            why,
        })?;
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.split('/').any(str::is_empty) && !trimmed.is_empty() {
            return Err(LocationError::EmptySegment(input.to_owned()));
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// An absolute path without `.` and `..`, through the links of the part that exists, so
/// that two spellings of one directory compare equal.
fn normalised(path: &std::path::Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    // The longest existing ancestor, resolved; the rest as written.
    let mut existing = out.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_owned()),
            None => break,
        }
        existing.pop();
    }
    let mut resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
    resolved.extend(rest.iter().rev());
    resolved
}

/// Bucket names as S3-compatible servers accept them. AWS is stricter (lowercase, no `_`),
/// but older buckets and other servers allow more, so only what can never work is refused.
fn validate_bucket(bucket: &str) -> Result<(), &'static str> {
    if bucket.len() < 3 || bucket.len() > 255 {
        return Err("a bucket name has 3 to 255 characters");
    }
    if !bucket
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("a bucket name has only letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

/// One side of a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3(S3Url),
    Local(PathBuf),
}

impl Location {
    /// Whether one location holds the other (or they are the same): the same bucket
    /// with one prefix starting the other, or one directory inside the other.
    pub fn overlaps(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::S3(a), Location::S3(b)) => {
                a.bucket() == b.bucket()
                    && (a.prefix().starts_with(b.prefix()) || b.prefix().starts_with(a.prefix()))
            }
            (Location::Local(a), Location::Local(b)) => {
                let (a, b) = (normalised(a), normalised(b));
                a.starts_with(&b) || b.starts_with(&a)
            }
            _ => false,
        }
    }

    pub fn parse(input: &str) -> Result<Self, LocationError> {
        if input.is_empty() {
            return Err(LocationError::Empty);
        }
        if let Some(rest) = strip_prefix_ignore_case(input, "s3://") {
            return S3Url::parse(input, rest).map(Location::S3);
        }
        if strip_prefix_ignore_case(input, "s3:").is_some() {
            return Err(LocationError::MalformedScheme(input.to_owned()));
        }
        if let Some((scheme, _)) = input.split_once("://") {
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(LocationError::UnsupportedScheme(input.to_owned()));
            }
        }
        Ok(Location::Local(PathBuf::from(input)))
    }

    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::S3(url) => url.fmt(f),
            Location::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

fn strip_prefix_ignore_case<'a>(input: &'a str, prefix: &str) -> Option<&'a str> {
    let head = input.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &input[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> Location {
        Location::S3(S3Url {
            bucket: bucket.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn locations_overlap_when_one_holds_the_other() {
        let parse = |s: &str| Location::parse(s).unwrap();
        let cases = [
            ("s3://bkt/current", "s3://bkt/changed/2026-12-01", false),
            ("s3://bkt/current", "s3://bkt/current-old", false),
            ("s3://bkt/current", "s3://bkt/current/old", true),
            ("s3://bkt", "s3://bkt/x", true),
            ("s3://bkt/x", "s3://cat/x", false),
            ("/srv/data", "/srv/data/../data/sub", true),
            ("/srv/data", "/srv/data-old", false),
            ("/srv/data", "s3://bkt/srv/data", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(parse(a).overlaps(&parse(b)), want, "{a} {b}");
            assert_eq!(parse(b).overlaps(&parse(a)), want, "{b} {a}");
        }
    }

    #[test]
    fn parses_s3_urls_and_normalises_the_prefix() {
        let cases = [
            ("s3://bucket", s3("bucket", "")),
            ("s3://bucket/", s3("bucket", "")),
            ("s3://bucket/dir", s3("bucket", "dir/")),
            ("s3://bucket/dir/", s3("bucket", "dir/")),
            ("s3://bucket/a/b c/ü", s3("bucket", "a/b c/ü/")),
            ("S3://bucket/x", s3("bucket", "x/")),
        ];
        for (input, want) in cases {
            assert_eq!(Location::parse(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn everything_else_is_a_local_path() {
        for input in [
            "dir",
            "./dir",
            "/abs/dir",
            "c:dir",
            "with space",
            "s3bucket",
        ] {
            assert_eq!(
                Location::parse(input).unwrap(),
                Location::Local(PathBuf::from(input))
            );
        }
    }

    #[test]
    fn rejects_malformed_input_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("s3://", "needs a bucket"),
            ("s3:///prefix", "needs a bucket"),
            ("s3:/bucket", "did you mean"),
            ("s3:bucket", "did you mean"),
            ("gs://bucket", "unsupported scheme"),
            ("https://host/bucket", "unsupported scheme"),
            ("s3://ab", "3 to 255"),
            ("s3://bad*name", "only letters"),
            ("s3://bucket/a//b", "empty path segment"),
        ];
        for (input, want) in cases {
            let err = Location::parse(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn full_key_joins_prefix_and_relative_key() {
        let Location::S3(url) = Location::parse("s3://b-1/p").unwrap() else {
            unreachable!()
        };
        assert_eq!(url.full_key("x/y"), "p/x/y");
        assert_eq!(url.to_string(), "s3://b-1/p/");
    }
}
