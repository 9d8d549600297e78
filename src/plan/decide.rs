//! What to do with one key, decided from the two listings alone (no request per key).
//!
//! `decide` is a pure function; the table test below is the specification, and
//! docs/architecture.md shows the same table for users.

use std::cmp::Ordering;
use std::fmt;

use crate::storage::Entry;

/// How to tell that a destination object already holds the source's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// `Etag` between buckets, `Mtime` whenever one side is a local directory.
    Auto,
    /// Equal sizes are enough.
    Size,
    /// Equal sizes, and the destination is not older than the source (to the second).
    Mtime,
    /// Equal sizes and equal content hashes (ETag, or a local file's MD5).
    Etag,
    /// Equal sizes and equal additional checksums (`x-amz-checksum-*`, read with a HEAD;
    /// computed for a local file).
    Checksum,
}

/// Which kinds of storage are on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    LocalToS3,
    S3ToLocal,
    S3ToS3,
    LocalToLocal,
}

impl Pairing {
    pub fn new(source_is_s3: bool, dest_is_s3: bool) -> Self {
        match (source_is_s3, dest_is_s3) {
            (false, true) => Pairing::LocalToS3,
            (true, false) => Pairing::S3ToLocal,
            (true, true) => Pairing::S3ToS3,
            (false, false) => Pairing::LocalToLocal,
        }
    }

    fn dest_is_local(self) -> bool {
        matches!(self, Pairing::S3ToLocal | Pairing::LocalToLocal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyReason {
    Missing,
    SizeDiffers,
    SourceNewer,
    /// A local file of another time than the version of a point in time (`--as-of`).
    OtherVersion,
    ContentDiffers,
    /// The destination object has no stored checksum to compare with.
    NoChecksum,
    /// The two sides' checksums were made differently (algorithm, or whole against parts).
    ChecksumKindDiffers,
}

impl fmt::Display for CopyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyReason::Missing => "new",
            CopyReason::SizeDiffers => "size differs",
            CopyReason::SourceNewer => "source is newer",
            CopyReason::OtherVersion => "another version",
            CopyReason::ContentDiffers => "content differs",
            CopyReason::NoChecksum => "no stored checksum",
            CopyReason::ChecksumKindDiffers => "checksums of different kinds",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Skip,
    Copy(CopyReason),
    /// Sizes match and one side is a local file: hash it and compare with the object's
    /// ETag (single-part or multipart) before deciding. Done by a worker, never by the
    /// planner.
    CompareContent,
    /// Sizes match under `--compare checksum`: a worker reads the stored checksums (and
    /// hashes a local side) before deciding.
    CompareChecksum,
}

pub fn decide(
    source: &Entry,
    dest: Option<&Entry>,
    mode: CompareMode,
    pairing: Pairing,
) -> Decision {
    if source.is_marker() {
        // A folder marker stands for a directory: the destination's own directory (the
        // marker of the location itself), or a marker or empty directory already there,
        // is all it asks for.
        let own = source.key.is_empty() && pairing.dest_is_local();
        if own || dest.is_some_and(Entry::is_marker) {
            return Decision::Skip;
        }
    }
    let Some(dest) = dest else {
        return Decision::Copy(CopyReason::Missing);
    };
    if source.size != dest.size {
        return Decision::Copy(CopyReason::SizeDiffers);
    }
    // A download has its version's LastModified as mtime. Read as of a point in time,
    // the source is one version among others: a newer file is another version, not a
    // fresher copy, and only the same second shows the same version.
    let one_version = source.version.is_some() && pairing == Pairing::S3ToLocal;
    let by_mtime = || match dest.mtime_secs().cmp(&source.mtime_secs()) {
        Ordering::Less => Decision::Copy(CopyReason::SourceNewer),
        Ordering::Greater if one_version => Decision::Copy(CopyReason::OtherVersion),
        _ => Decision::Skip,
    };
    match effective_mode(mode, pairing) {
        CompareMode::Size => Decision::Skip,
        CompareMode::Etag => match (&source.etag, &dest.etag) {
            (Some(s), Some(d)) if s.comparable_with(d) => {
                if s == d {
                    Decision::Skip
                } else {
                    Decision::Copy(CopyReason::ContentDiffers)
                }
            }
            (Some(tag), None) | (None, Some(tag))
                if tag.is_plain_md5() || tag.parts().is_some() =>
            {
                Decision::CompareContent
            }
            // Tags made differently (multipart against single-part, SSE-KMS) say nothing
            // about content; the copy's time is the remaining evidence.
            _ => by_mtime(),
        },
        CompareMode::Checksum => Decision::CompareChecksum,
        CompareMode::Mtime | CompareMode::Auto => by_mtime(),
    }
}

fn effective_mode(mode: CompareMode, pairing: Pairing) -> CompareMode {
    match (mode, pairing) {
        (CompareMode::Auto, Pairing::S3ToS3) => CompareMode::Etag,
        (CompareMode::Auto, _) => CompareMode::Mtime,
        (mode, _) => mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ETag;
    use std::time::{Duration, UNIX_EPOCH};
    use CompareMode::*;
    use CopyReason::*;
    use Decision::*;
    use Pairing::*;

    const T: u64 = 1_700_000_000;
    const MD5_A: &str = "0cc175b9c0f1b6a831c399e269772661";
    const MD5_B: &str = "92eb5ffee6ae2fec3ad71c777531578f";

    fn e(key: &str, size: u64, secs: u64, etag: Option<&str>) -> Entry {
        Entry {
            key: key.into(),
            size,
            mtime: UNIX_EPOCH + Duration::from_secs(secs),
            etag: etag.map(ETag::parse),
            skip: None,
            storage_class: None,
            version: None,
        }
    }

    /// An entry of a point-in-time listing.
    fn v(entry: Entry) -> Entry {
        Entry {
            version: Some("v1".into()),
            ..entry
        }
    }

    /// (case, source, destination, mode, pairing, expected decision)
    type Row = (
        &'static str,
        Entry,
        Option<Entry>,
        CompareMode,
        Pairing,
        Decision,
    );

    #[test]
    fn decision_table() {
        let multi = format!("{MD5_A}-2");
        let multi = Some(multi.as_str());
        let sub_second_older = Entry {
            mtime: UNIX_EPOCH + Duration::new(T, 900_000_000),
            ..e("k", 1, 0, None)
        };
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("missing is copied", e("k", 1, T, None), None, Auto, LocalToS3, Copy(Missing)),
            ("size differs", e("k", 1, T, None), Some(e("k", 2, T + 9, Some(MD5_A))), Auto, LocalToS3, Copy(SizeDiffers)),
            ("upload: object newer, same size", e("k", 1, T, None), Some(e("k", 1, T + 5, Some(MD5_A))), Auto, LocalToS3, Skip),
            ("upload: same second", e("k", 1, T, None), Some(e("k", 1, T, Some(MD5_A))), Auto, LocalToS3, Skip),
            ("upload: file newer", e("k", 1, T + 1, None), Some(e("k", 1, T, Some(MD5_A))), Auto, LocalToS3, Copy(SourceNewer)),
            ("upload: sub-second mtime vs whole-second LastModified", sub_second_older.clone(), Some(e("k", 1, T, Some(MD5_A))), Auto, LocalToS3, Skip),
            ("download: file has the object's time", e("k", 1, T, Some(MD5_A)), Some(e("k", 1, T, None)), Auto, S3ToLocal, Skip),
            ("download: object newer", e("k", 1, T + 3, Some(MD5_A)), Some(e("k", 1, T, None)), Auto, S3ToLocal, Copy(SourceNewer)),
            ("bucket: same etag, older copy", e("k", 1, T + 9, Some(MD5_A)), Some(e("k", 1, T, Some(MD5_A))), Auto, S3ToS3, Skip),
            ("bucket: etag differs, newer copy", e("k", 1, T, Some(MD5_A)), Some(e("k", 1, T + 9, Some(MD5_B))), Auto, S3ToS3, Copy(ContentDiffers)),
            ("bucket: multipart vs single falls back to time", e("k", 1, T, multi), Some(e("k", 1, T + 1, Some(MD5_B))), Auto, S3ToS3, Skip),
            ("bucket: multipart vs single, source newer", e("k", 1, T + 1, multi), Some(e("k", 1, T, Some(MD5_B))), Auto, S3ToS3, Copy(SourceNewer)),
            ("local: same time", e("k", 1, T, None), Some(e("k", 1, T, None)), Auto, LocalToLocal, Skip),
            ("local: source newer", e("k", 1, T + 1, None), Some(e("k", 1, T, None)), Auto, LocalToLocal, Copy(SourceNewer)),
            ("size mode ignores time", e("k", 1, T + 100, None), Some(e("k", 1, T, Some(MD5_A))), Size, LocalToS3, Skip),
            ("size mode still copies on size", e("k", 1, T, None), Some(e("k", 3, T, None)), Size, LocalToLocal, Copy(SizeDiffers)),
            ("mtime mode between buckets", e("k", 1, T + 1, Some(MD5_A)), Some(e("k", 1, T, Some(MD5_A))), Mtime, S3ToS3, Copy(SourceNewer)),
            ("etag mode: local file needs hashing", e("k", 1, T, None), Some(e("k", 1, T + 9, Some(MD5_A))), Etag, LocalToS3, CompareContent),
            ("etag mode: download needs hashing", e("k", 1, T + 9, Some(MD5_A)), Some(e("k", 1, T, None)), Etag, S3ToLocal, CompareContent),
            ("etag mode: multipart remote is hashed in parts", e("k", 1, T, None), Some(e("k", 1, T + 1, multi)), Etag, LocalToS3, CompareContent),
            ("etag mode: opaque remote tag falls back to time", e("k", 1, T, None), Some(e("k", 1, T + 1, Some("kms-opaque"))), Etag, LocalToS3, Skip),
            ("etag mode: two local files fall back to time", e("k", 1, T + 1, None), Some(e("k", 1, T, None)), Etag, LocalToLocal, Copy(SourceNewer)),
            ("checksum mode: equal sizes need the checksums", e("k", 1, T, Some(MD5_A)), Some(e("k", 1, T, Some(MD5_A))), Checksum, S3ToS3, CompareChecksum),
            ("checksum mode: size still decides first", e("k", 1, T, None), Some(e("k", 2, T, None)), Checksum, LocalToS3, Copy(SizeDiffers)),
            ("folder marker into a directory: the directory is made", e("d/", 0, T, Some(MD5_A)), None, Auto, S3ToLocal, Copy(Missing)),
            ("folder marker, the directory is there", e("d/", 0, T + 9, Some(MD5_A)), Some(e("d/", 0, T, None)), Etag, S3ToLocal, Skip),
            ("the location's own marker into a directory", e("", 0, T, Some(MD5_A)), None, Auto, S3ToLocal, Skip),
            ("an empty directory to a bucket that has its marker", e("d/", 0, T + 9, None), Some(e("d/", 0, T, Some(MD5_A))), Checksum, LocalToS3, Skip),
            ("directory marker between buckets", e("d/", 0, T, Some(MD5_A)), None, Auto, S3ToS3, Copy(Missing)),
            ("as of: the file has the version's time", v(e("k", 1, T, Some(MD5_A))), Some(e("k", 1, T, None)), Auto, S3ToLocal, Skip),
            ("as of: a newer file is another version", v(e("k", 1, T, Some(MD5_A))), Some(e("k", 1, T + 5, None)), Auto, S3ToLocal, Copy(OtherVersion)),
            ("as of: an older file", v(e("k", 1, T + 5, Some(MD5_A))), Some(e("k", 1, T, None)), Mtime, S3ToLocal, Copy(SourceNewer)),
            ("as of: hashing needs no time", v(e("k", 1, T, Some(MD5_A))), Some(e("k", 1, T + 5, None)), Etag, S3ToLocal, CompareContent),
            ("as of between buckets: a copy is newer than its version", v(e("k", 1, T, multi)), Some(e("k", 1, T + 9, Some(MD5_B))), Auto, S3ToS3, Skip),
            ("as of: a folder marker, the directory is there", v(e("d/", 0, T, Some(MD5_A))), Some(e("d/", 0, T + 9, None)), Auto, S3ToLocal, Skip),
        ];
        for (name, source, dest, mode, pairing, want) in table {
            assert_eq!(
                decide(&source, dest.as_ref(), mode, pairing),
                want,
                "{name}"
            );
        }
    }
}
