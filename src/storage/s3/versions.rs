//! Listing a bucket prefix as it was at a point in time (`--as-of`), with
//! ListObjectVersions: for each key, the version or delete marker that was current then,
//! the newest one whose LastModified is not after the time. A key whose candidate is a
//! delete marker, or that has no version that old, is absent.
//!
//! Invariants: entries come in key order (UTF-8 byte order, as ListObjectsV2's), each
//! with the id of its version. The versions of one key arrive together, newest first,
//! so only the key being read and its candidate are held: memory does not grow with the
//! number of keys or versions.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::types::{DeleteMarkerEntry, EncodingType, ObjectVersion};
use aws_sdk_s3::Client;
use tokio::sync::mpsc;

use super::list::decoded;
use super::{describe_sdk_error, S3Store};
use crate::location::S3Url;
use crate::storage::{ETag, Entry, ListError, ListItem, StorageClass};

/// One version or delete marker of a key, as a page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    /// The full key, decoded.
    key: String,
    id: Box<str>,
    last_modified: SystemTime,
    is_latest: bool,
    /// None for a delete marker.
    object: Option<Object>,
}

/// What a version that is an object (not a delete marker) holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Object {
    size: u64,
    etag: Option<ETag>,
    storage_class: Option<StorageClass>,
}

/// The object version of one key that was current at the time asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Current {
    key: String,
    id: Box<str>,
    last_modified: SystemTime,
    object: Object,
}

impl Version {
    fn into_current(self) -> Option<Current> {
        Some(Current {
            object: self.object?,
            key: self.key,
            id: self.id,
            last_modified: self.last_modified,
        })
    }
}

/// Picks, from versions in listing order (by key, newest first; pages one after
/// another), the one current at `at` for each key.
struct Candidates {
    at: SystemTime,
    /// The newest version not after `at` of the key being read, if it has one so far.
    candidate: Option<Version>,
}

impl Candidates {
    fn new(at: SystemTime) -> Self {
        Self {
            at,
            candidate: None,
        }
    }

    /// Takes the next version. When it begins another key, returns the key that ended,
    /// if what was current for it at `at` is an object.
    fn push(&mut self, version: Version) -> Option<Current> {
        let ended = match &self.candidate {
            Some(candidate) if candidate.key != version.key => self.candidate.take(),
            _ => None,
        };
        // Only a strictly newer version replaces the candidate, so a server listing a
        // key's versions in another order is still read right, and of two with the same
        // LastModified the one listed first stays.
        let newer = |candidate: &Version| version.last_modified > candidate.last_modified;
        if version.last_modified <= self.at && self.candidate.as_ref().is_none_or(newer) {
            self.candidate = Some(version);
        }
        ended.and_then(Version::into_current)
    }

    /// The last key's current version, once the listing has ended.
    fn finish(self) -> Option<Current> {
        self.candidate.and_then(Version::into_current)
    }
}

/// One page's versions and delete markers in listing order: by key, newest first. The
/// SDK hands them over as two lists, each in that order, and they are merged here.
fn page_versions(page: &ListObjectVersionsOutput) -> Vec<Version> {
    let versions = page.versions().iter().map(listed_object);
    let markers = page.delete_markers().iter().map(listed_marker);
    merged(versions, markers)
}

fn merged(
    versions: impl Iterator<Item = Version>,
    markers: impl Iterator<Item = Version>,
) -> Vec<Version> {
    let (mut versions, mut markers) = (versions.peekable(), markers.peekable());
    let mut merged = Vec::new();
    loop {
        let take_version = match (versions.peek(), markers.peek()) {
            (None, None) => return merged,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(version), Some(marker)) => listed_before(version, marker),
        };
        let next = if take_version {
            versions.next()
        } else {
            markers.next()
        };
        merged.extend(next);
    }
}

/// Whether an object version comes before a delete marker in listing order. Of one key,
/// the newer comes first; with the same LastModified (S3 states whole seconds) the latest
/// one, and otherwise the marker, since a deletion normally follows the write it hides.
fn listed_before(version: &Version, marker: &Version) -> bool {
    match version.key.as_bytes().cmp(marker.key.as_bytes()) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => match version.last_modified.cmp(&marker.last_modified) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => version.is_latest,
        },
    }
}

fn listed_object(version: &ObjectVersion) -> Version {
    Version {
        key: decoded(version.key().unwrap_or_default()),
        id: version.version_id().unwrap_or("null").into(),
        last_modified: time_of(version.last_modified()),
        is_latest: version.is_latest().unwrap_or(false),
        object: Some(Object {
            size: version.size().unwrap_or(0).max(0) as u64,
            etag: version.e_tag().map(ETag::parse),
            storage_class: version
                .storage_class()
                .and_then(|class| StorageClass::named(class.as_str())),
        }),
    }
}

fn listed_marker(marker: &DeleteMarkerEntry) -> Version {
    Version {
        key: decoded(marker.key().unwrap_or_default()),
        id: marker.version_id().unwrap_or("null").into(),
        last_modified: time_of(marker.last_modified()),
        is_latest: marker.is_latest().unwrap_or(false),
        object: None,
    }
}

fn time_of(time: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(UNIX_EPOCH)
}

pub(super) struct VersionLister {
    pub client: Client,
    pub url: S3Url,
    /// The point in time listed.
    pub at: SystemTime,
}

impl VersionLister {
    /// Pages through ListObjectVersions below the prefix, after `key_marker` (a full
    /// key) if given, and forwards the version current at `at` of each key; the bounded
    /// channel makes the listing wait whenever the reader falls behind.
    pub async fn run(self, key_marker: Option<String>, tx: mpsc::Sender<ListItem>) {
        let mut candidates = Candidates::new(self.at);
        let mut markers = (key_marker, None::<String>);
        loop {
            let sent = self
                .client
                .list_object_versions()
                .bucket(self.url.bucket())
                .prefix(self.url.prefix())
                .set_key_marker(markers.0.clone())
                .set_version_id_marker(markers.1.clone())
                .encoding_type(EncodingType::Url)
                .send()
                .await;
            let page = match sent {
                Ok(page) => page,
                Err(err) => {
                    let _ = tx.send(Err(self.failed(&describe_sdk_error(&err)))).await;
                    return;
                }
            };
            for version in page_versions(&page) {
                if let Some(current) = candidates.push(version) {
                    if tx.send(self.entry(current)).await.is_err() {
                        return;
                    }
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            // With url encoding, the key marker comes encoded like the keys.
            let next = (
                page.next_key_marker().map(decoded),
                page.next_version_id_marker().map(str::to_owned),
            );
            if next.0.is_none() || next == markers {
                let why = "the server answered a truncated page without a marker past it";
                let _ = tx.send(Err(self.failed(why))).await;
                return;
            }
            markers = next;
        }
        if let Some(current) = candidates.finish() {
            let _ = tx.send(self.entry(current)).await;
        }
    }

    fn failed(&self, why: &str) -> ListError {
        ListError::Fatal(format!("ListObjectVersions {}: {why}", self.url))
    }

    fn entry(&self, current: Current) -> ListItem {
        let Some(key) = current.key.strip_prefix(self.url.prefix()) else {
            let why = format!(
                "the server returned key {:?} outside the prefix",
                current.key
            );
            return Err(self.failed(&why));
        };
        Ok(Entry {
            key: key.to_owned(),
            size: current.object.size,
            mtime: current.last_modified,
            etag: current.object.etag,
            skip: None,
            storage_class: current.object.storage_class,
            version: Some(current.id),
        })
    }
}

impl S3Store {
    /// Refuses a bucket whose versioning was never enabled: it keeps no earlier versions
    /// to list a point in time from. A bucket with versioning suspended still holds the
    /// versions made while it was enabled.
    pub async fn check_versioned(&self) -> Result<(), String> {
        let bucket = self.url.bucket();
        match self.versioning_status().await?.as_deref() {
            Some("Enabled" | "Suspended") => Ok(()),
            Some(other) => Err(format!(
                "--as-of needs a versioned bucket, and s3://{bucket} states versioning {other:?}"
            )),
            None => Err(format!(
                "--as-of needs a versioned bucket: versioning was never enabled on \
                 s3://{bucket}, so it keeps no earlier versions of its objects"
            )),
        }
    }

    /// GetBucketVersioning's Status; None when versioning was never enabled.
    async fn versioning_status(&self) -> Result<Option<String>, String> {
        let bucket = self.url.bucket();
        let err = match self
            .client
            .get_bucket_versioning()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => return Ok(out.status().map(|s| s.as_str().to_owned())),
            Err(err) => err,
        };
        // Some servers (moto) name the answer's root element otherwise, which the SDK
        // refuses as a whole; the Status is then read from the answer itself.
        if let SdkError::ServiceError(service) = &err {
            if service.raw().status().is_success() && service.err().code().is_none() {
                let body = service.raw().body().bytes().unwrap_or_default();
                return Ok(status_in(&String::from_utf8_lossy(body)));
            }
        }
        Err(format!(
            "GetBucketVersioning s3://{bucket}: {}",
            describe_sdk_error(&err)
        ))
    }
}

/// The `<Status>` of a GetBucketVersioning answer, whatever its root element.
fn status_in(answer: &str) -> Option<String> {
    let start = answer.find("<Status>")? + "<Status>".len();
    let end = start + answer[start..].find("</Status>")?;
    Some(answer[start..end].trim().to_owned()).filter(|status| !status.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::DateTime;
    use std::time::Duration;

    const T: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(T + secs)
    }

    fn object(key: &str, id: &str, secs: u64, latest: bool) -> Version {
        Version {
            key: key.to_owned(),
            id: id.into(),
            last_modified: at(secs),
            is_latest: latest,
            object: Some(Object {
                size: id.len() as u64,
                etag: None,
                storage_class: None,
            }),
        }
    }

    fn marker(key: &str, id: &str, secs: u64, latest: bool) -> Version {
        Version {
            object: None,
            ..object(key, id, secs, latest)
        }
    }

    /// (key, version id) of what was current at `secs`, from pages of (versions, markers).
    fn current_at(secs: u64, pages: &[(Vec<Version>, Vec<Version>)]) -> Vec<(String, String)> {
        let mut candidates = Candidates::new(at(secs));
        let mut out = Vec::new();
        for (versions, markers) in pages {
            let page = merged(versions.iter().cloned(), markers.iter().cloned());
            out.extend(page.into_iter().filter_map(|v| candidates.push(v)));
        }
        out.extend(candidates.finish());
        out.into_iter()
            .map(|c| (c.key, c.id.into_string()))
            .collect()
    }

    fn pairs(want: &[(&str, &str)]) -> Vec<(String, String)> {
        want.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_version_current_then_is_the_newest_not_after_the_time() {
        let page = (
            vec![
                object("a", "a3", 30, true),
                object("a", "a2", 20, false),
                object("a", "a1", 10, false),
                object("b", "b1", 25, true),
            ],
            vec![],
        );
        let pages = [page];
        assert_eq!(current_at(5, &pages), [], "nothing existed yet");
        assert_eq!(current_at(10, &pages), pairs(&[("a", "a1")]));
        assert_eq!(current_at(19, &pages), pairs(&[("a", "a1")]));
        assert_eq!(current_at(20, &pages), pairs(&[("a", "a2")]));
        assert_eq!(current_at(25, &pages), pairs(&[("a", "a2"), ("b", "b1")]));
        assert_eq!(
            current_at(1_000_000, &pages),
            pairs(&[("a", "a3"), ("b", "b1")]),
            "a time in the future is the current state"
        );
    }

    #[test]
    fn a_key_deleted_then_is_absent_and_present_before_and_after_it_came_back() {
        let pages = [(
            vec![
                object("a", "a1", 5, true),
                object("gone", "g2", 30, true),
                object("gone", "g1", 10, false),
                object("z", "z1", 5, true),
            ],
            vec![marker("gone", "gm", 20, false)],
        )];
        let all = |id: &'static str| pairs(&[("a", "a1"), ("gone", id), ("z", "z1")]);
        assert_eq!(current_at(15, &pages), all("g1"));
        assert_eq!(current_at(20, &pages), pairs(&[("a", "a1"), ("z", "z1")]));
        assert_eq!(current_at(29, &pages), pairs(&[("a", "a1"), ("z", "z1")]));
        assert_eq!(current_at(30, &pages), all("g2"));
    }

    #[test]
    fn a_key_whose_versions_span_pages_is_listed_once() {
        let pages = [
            (
                vec![object("a", "a1", 5, true), object("k", "k4", 40, false)],
                vec![marker("k", "km", 50, true)],
            ),
            (vec![object("k", "k3", 30, false)], vec![]),
            (
                vec![object("k", "k1", 10, false), object("m", "m1", 10, true)],
                vec![marker("k", "kn", 20, false)],
            ),
        ];
        assert_eq!(
            current_at(45, &pages),
            pairs(&[("a", "a1"), ("k", "k4"), ("m", "m1")])
        );
        assert_eq!(
            current_at(35, &pages),
            pairs(&[("a", "a1"), ("k", "k3"), ("m", "m1")])
        );
        assert_eq!(current_at(25, &pages), pairs(&[("a", "a1"), ("m", "m1")]));
        assert_eq!(
            current_at(15, &pages),
            pairs(&[("a", "a1"), ("k", "k1"), ("m", "m1")])
        );
        assert_eq!(current_at(55, &pages), pairs(&[("a", "a1"), ("m", "m1")]));
    }

    #[test]
    fn of_a_version_and_a_marker_written_in_the_same_second_the_latest_or_the_marker_wins() {
        let deleted = [(
            vec![object("k", "put", 10, false)],
            vec![marker("k", "del", 10, true)],
        )];
        assert_eq!(current_at(10, &deleted), []);
        let put_again = [(
            vec![object("k", "put", 10, true)],
            vec![marker("k", "del", 10, false)],
        )];
        assert_eq!(current_at(10, &put_again), pairs(&[("k", "put")]));
        // Deeper in the history neither is the latest: the deletion is taken as the later.
        let older = [(
            vec![object("k", "new", 20, true), object("k", "put", 10, false)],
            vec![marker("k", "del", 10, false)],
        )];
        assert_eq!(current_at(15, &older), []);
        assert_eq!(current_at(20, &older), pairs(&[("k", "new")]));
        // Two versions of one second: the first listed (the newer) stays.
        let twice = [(
            vec![
                object("k", "second", 10, true),
                object("k", "first", 10, false),
            ],
            vec![],
        )];
        assert_eq!(current_at(10, &twice), pairs(&[("k", "second")]));
    }

    #[test]
    fn versions_and_markers_of_a_page_merge_by_key_then_newest_first() {
        let merged = merged(
            [object("a", "a2", 20, false), object("c", "c1", 10, true)].into_iter(),
            [marker("a", "am", 30, true), marker("b", "bm", 5, true)].into_iter(),
        );
        let ids: Vec<&str> = merged.iter().map(|v| &*v.id).collect();
        assert_eq!(ids, ["am", "a2", "bm", "c1"]);
    }

    #[test]
    fn the_versioning_status_is_read_whatever_the_root_element() {
        let ours = r#"<?xml version="1.0"?><VersioningConfiguration xmlns="x"><Status>Suspended</Status></VersioningConfiguration>"#;
        assert_eq!(status_in(ours).as_deref(), Some("Suspended"));
        let moto = r#"<GetBucketVersioningResponse xmlns="x"><Status>Enabled</Status></GetBucketVersioningResponse>"#;
        assert_eq!(status_in(moto).as_deref(), Some("Enabled"));
        assert_eq!(
            status_in(r#"<GetBucketVersioningResponse xmlns="x"/>"#),
            None
        );
        assert_eq!(
            status_in("<VersioningConfiguration><Status></Status></VersioningConfiguration>"),
            None
        );
    }

    #[test]
    fn a_page_from_the_sdk_is_decoded_and_merged() {
        let time = |secs: u64| DateTime::from_secs((T + secs) as i64);
        let page = ListObjectVersionsOutput::builder()
            .versions(
                ObjectVersion::builder()
                    .key("dir%01/a%20b")
                    .version_id("v1")
                    .last_modified(time(10))
                    .size(3)
                    .e_tag("\"0cc175b9c0f1b6a831c399e269772661\"")
                    .build(),
            )
            .delete_markers(
                DeleteMarkerEntry::builder()
                    .key("dir%01/a%20b")
                    .version_id("m1")
                    .is_latest(true)
                    .last_modified(time(20))
                    .build(),
            )
            .build();
        let listed = page_versions(&page);
        assert_eq!(listed.len(), 2);
        assert_eq!(
            (listed[0].key.as_str(), &*listed[0].id),
            ("dir\u{1}/a b", "m1")
        );
        assert_eq!(listed[0].object, None);
        assert_eq!(listed[1].last_modified, at(10));
        assert_eq!(listed[1].object.as_ref().map(|o| o.size), Some(3));
    }
}
