//! The two kinds of storage s3mirror reads and writes, behind one listing model.
//!
//! Invariant: every listing yields entries in ascending UTF-8 byte order of their key,
//! relative to the location's root, so two listings can be merge-joined as streams.

pub mod checksum;
pub mod etag;
mod expected;
pub mod local;
pub mod md5;
pub mod s3;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

pub use checksum::{Checksum, ChecksumAlgorithm};
pub use etag::ETag;
pub use expected::{Expected, RangeCheck, StreamCheck};
pub use local::LocalStore;
pub use s3::S3Store;

/// Entries buffered between a lister and the merge-join: about two S3 pages, so the next
/// page is fetched while the current one is compared, and memory stays bounded.
pub const LISTING_BUFFER: usize = 2_000;

/// One object or file as a listing reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Key relative to the location root, `/`-separated.
    pub key: String,
    pub size: u64,
    /// S3 LastModified, or the file's modification time.
    pub mtime: SystemTime,
    /// Present for S3 objects only.
    pub etag: Option<ETag>,
    /// Why this entry is not to be copied, when it is not: it exists, so its key on the
    /// other side is not deleted either.
    pub skip: Option<Skip>,
    /// The object's storage class, when its listing names one other than STANDARD.
    pub storage_class: Option<StorageClass>,
    /// The object version a copy reads: set by a listing of a point in time (`--as-of`),
    /// None everywhere else (the current version).
    pub version: Option<Box<str>>,
}

/// Why an entry that exists is passed over: a warning, counted, never a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A symbolic link whose target does not exist.
    DanglingLink,
    /// A symbolic link that leads back to itself or to a directory being walked.
    LinkLoop,
    /// A symbolic link, with `--no-follow-symlinks`.
    Link,
}

impl Skip {
    pub fn reason(self) -> &'static str {
        match self {
            Skip::DanglingLink => "a symbolic link to nothing (dangling)",
            Skip::LinkLoop => "a symbolic link loop",
            Skip::Link => "a symbolic link (--no-follow-symlinks)",
        }
    }
}

/// A storage class S3 names in listings, other than STANDARD (the default, left unset).
/// A copy keeps it; an archived one cannot be read until restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageClass(&'static str);

impl StorageClass {
    const KNOWN: [&'static str; 12] = [
        "DEEP_ARCHIVE",
        "EXPRESS_ONEZONE",
        "FSX_ONTAP",
        "FSX_OPENZFS",
        "GLACIER",
        "GLACIER_IR",
        "INTELLIGENT_TIERING",
        "ONEZONE_IA",
        "OUTPOSTS",
        "REDUCED_REDUNDANCY",
        "SNOW",
        "STANDARD_IA",
    ];

    /// The class a listing or HeadObject names; None for STANDARD and for names S3 does
    /// not define (other servers' own classes), which a copy could not ask for anyway.
    pub fn named(name: &str) -> Option<Self> {
        Self::KNOWN
            .iter()
            .find(|known| **known == name)
            .map(|known| StorageClass(known))
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// GLACIER (Flexible Retrieval) and DEEP_ARCHIVE keep no readable copy until a
    /// restore makes one; GLACIER_IR is read like any other class.
    pub fn is_archived(self) -> bool {
        matches!(self.0, "GLACIER" | "DEEP_ARCHIVE")
    }
}

impl Entry {
    /// A "folder" marker: an empty object whose key ends with `/` (the S3 console's
    /// "Create folder"), or an empty directory of a local tree. It stands for a directory.
    pub fn is_marker(&self) -> bool {
        // An empty key is the location's own marker (`prefix/` itself).
        (self.key.is_empty() || self.key.ends_with('/')) && self.size == 0
    }

    /// Modification time in whole seconds: S3 keeps LastModified to the second, so finer
    /// comparisons would call a just-uploaded file newer than its copy.
    pub fn mtime_secs(&self) -> i64 {
        epoch_secs(self.mtime)
    }
}

pub fn epoch_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs_f64().ceil() as i64),
    }
}

/// Why a listing produced no entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// One entry could not be listed (unreadable, a name that is not UTF-8): it is
    /// reported and the listing goes on.
    #[error("{path}: {cause}")]
    Entry { path: String, cause: String },
    /// The listing itself failed; what it would have yielded next is unknown.
    #[error("{0}")]
    Fatal(String),
}

pub type ListItem = Result<Entry, ListError>;

/// The receiving end of a listing task.
pub struct Listing {
    rx: mpsc::Receiver<ListItem>,
}

impl Listing {
    pub fn channel() -> (mpsc::Sender<ListItem>, Listing) {
        let (tx, rx) = mpsc::channel(LISTING_BUFFER);
        (tx, Listing { rx })
    }

    pub async fn next(&mut self) -> Option<ListItem> {
        self.rx.recv().await
    }

    /// Only the keys in `range`: the listing ends at the first key past it, which also
    /// stops the task behind it.
    pub fn within(mut self, range: KeyRange) -> Listing {
        if range.is_everything() {
            return self;
        }
        let (tx, listing) = Listing::channel();
        tokio::spawn(async move {
            while let Some(item) = self.next().await {
                match &item {
                    Ok(entry) if range.is_past(&entry.key) => return,
                    Ok(entry) if !range.contains(&entry.key) => continue,
                    _ => {}
                }
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        listing
    }
}

/// Relative keys from `start` (included) to `end` (excluded), in UTF-8 byte order; an
/// open end has no bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

impl KeyRange {
    pub fn is_everything(&self) -> bool {
        self.start.is_none() && self.end.is_none()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.start.as_deref().is_none_or(|start| key >= start) && !self.is_past(key)
    }

    /// Whether `key` and every key after it are beyond the end.
    pub fn is_past(&self, key: &str) -> bool {
        self.end.as_deref().is_some_and(|end| key >= end)
    }

    /// Whether a key starting with `prefix` can be in the range.
    pub fn may_hold_prefix(&self, prefix: &str) -> bool {
        if self.is_past(prefix) {
            return false;
        }
        // Every key with the prefix sorts before the start unless the start itself
        // begins with the prefix or comes before it.
        self.start
            .as_deref()
            .is_none_or(|start| start.starts_with(prefix) || prefix >= start)
    }
}

/// Either side of a mirror.
pub enum Store {
    S3(S3Store),
    Local(LocalStore),
}

impl Store {
    /// Starts listing the keys in `range` in the background and returns the stream of
    /// entries; each side starts as close to the range as it can.
    pub fn list(&self, range: &KeyRange) -> Listing {
        let listing = match self {
            Store::S3(s3) => s3.list(range),
            Store::Local(local) => local.list(range.clone()),
        };
        listing.within(range.clone())
    }

    /// The names right below relative prefix `below`, in key order (see `shard`).
    pub async fn level(&self, below: &str, limit: usize) -> Result<Vec<String>, String> {
        match self {
            Store::S3(s3) => s3.level(below, limit).await,
            Store::Local(local) => {
                let (local, below) = (
                    LocalStore::new(local.root().to_path_buf()),
                    below.to_owned(),
                );
                tokio::task::spawn_blocking(move || local.level(&below, limit))
                    .await
                    .map_err(|err| err.to_string())?
            }
        }
    }

    /// The full name of a key on this side, for messages.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Store::S3(s3) => s3.describe(key),
            Store::Local(local) => local.describe(key),
        }
    }
}

/// What one object operation failed with: the operation, the object, the cause.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_glacier_and_deep_archive_are_archived_and_standard_is_no_class() {
        assert_eq!(StorageClass::named("STANDARD"), None);
        assert_eq!(StorageClass::named("SOMETHING_ELSE"), None);
        let archived: Vec<&str> = StorageClass::KNOWN
            .iter()
            .filter(|name| StorageClass::named(name).unwrap().is_archived())
            .copied()
            .collect();
        assert_eq!(archived, ["DEEP_ARCHIVE", "GLACIER"]);
        assert_eq!(
            StorageClass::named("GLACIER_IR").unwrap().name(),
            "GLACIER_IR"
        );
    }

    #[test]
    fn ranges_hold_what_they_say() {
        let range = KeyRange {
            start: Some("b/".into()),
            end: Some("d/".into()),
        };
        for key in ["b/", "b/x", "c", "c/deep/key"] {
            assert!(range.contains(key), "{key}");
        }
        for key in ["a", "b", "b.", "d/", "d/x", "e"] {
            assert!(!range.contains(key), "{key}");
        }
        assert!(range.is_past("d/") && range.is_past("z") && !range.is_past("c"));
        for prefix in ["b/", "b", "", "c/", "b/x/"] {
            assert!(range.may_hold_prefix(prefix), "{prefix}");
        }
        for prefix in ["a/", "a", "d/", "e/"] {
            assert!(!range.may_hold_prefix(prefix), "{prefix}");
        }
        assert!(KeyRange::default().contains("anything"));
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} {target}: {cause}")]
pub struct ObjectError {
    pub op: &'static str,
    pub target: String,
    pub cause: String,
    /// Whether copying the whole object again may succeed: its bytes were cut short or
    /// did not match their checksum, or a file changed while it was read. Request-level
    /// failures are not: the S3 client has already retried those.
    pub transient: bool,
    /// The object is archived (GLACIER, DEEP_ARCHIVE) and has no restored copy to read.
    pub archived: bool,
}

impl ObjectError {
    pub fn new(op: &'static str, target: impl Into<String>, cause: impl fmt::Display) -> Self {
        Self {
            op,
            target: target.into(),
            cause: cause.to_string(),
            transient: false,
            archived: false,
        }
    }

    /// A failure that a fresh copy of the whole object may not meet again.
    pub fn transient(
        op: &'static str,
        target: impl Into<String>,
        cause: impl fmt::Display,
    ) -> Self {
        Self {
            transient: true,
            ..Self::new(op, target, cause)
        }
    }
}
