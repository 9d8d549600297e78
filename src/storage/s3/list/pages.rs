//! ListObjectsV2 pages as the listers read them: checked against their own KeyCount, keys
//! url-decoded, objects turned into entries and common prefixes into items, keyed relative
//! to the location's prefix. `Pages` is what the parallel listing asks; `S3Pages` answers
//! it from the server (tests answer it from memory).

use std::future::Future;

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::EncodingType;
use aws_sdk_s3::Client;

use super::span::{Item, Page, PageRequest};
use crate::location::S3Url;
use crate::storage::s3::describe_sdk_error;
use crate::storage::{ETag, Entry, ListError, ListItem, StorageClass};

/// Where the parallel listing gets its pages.
pub(super) trait Pages: Send + Sync + 'static {
    fn page(&self, request: PageRequest) -> impl Future<Output = Result<Page, ListError>> + Send;
}

/// Pages of one bucket prefix, asked with url-encoded keys.
pub(super) struct S3Pages {
    pub client: Client,
    pub url: S3Url,
}

impl Pages for S3Pages {
    async fn page(&self, request: PageRequest) -> Result<Page, ListError> {
        let url = &self.url;
        let failed = |why: String| ListError::Fatal(format!("ListObjectsV2 {url}: {why}"));
        let page = self
            .client
            .list_objects_v2()
            .bucket(url.bucket())
            .prefix(url.full_key(&request.prefix))
            .set_start_after(request.start_after.map(|key| url.full_key(&key)))
            .set_delimiter(request.delimited.then(|| "/".to_owned()))
            .set_max_keys(request.max_keys)
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|err| failed(describe_sdk_error(&err)))?;
        whole_page(&page).map_err(failed)?;
        let entries = page
            .contents()
            .iter()
            .map(|object| entry_from(url, object))
            .collect::<Result<Vec<_>, _>>()?;
        let prefixes = page
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix())
            .map(|prefix| {
                let full = decoded(prefix);
                full.strip_prefix(url.prefix())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        failed(format!(
                            "the server returned prefix {full:?} outside the prefix"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items: in_key_order(entries, prefixes),
            truncated: page.is_truncated() == Some(true),
        })
    }
}

/// A page's objects and common prefixes, each in key order, merged.
fn in_key_order(entries: Vec<Entry>, prefixes: Vec<String>) -> Vec<Item> {
    let mut items = Vec::with_capacity(entries.len() + prefixes.len());
    let mut prefixes = prefixes.into_iter().peekable();
    for entry in entries {
        while let Some(prefix) = prefixes.next_if(|prefix| prefix.as_str() < entry.key.as_str()) {
            items.push(Item::Prefix(prefix));
        }
        items.push(Item::Entry(entry));
    }
    items.extend(prefixes.map(Item::Prefix));
    items
}

/// Checks a page against its own KeyCount: an answer that lost entries on the way (cut
/// short, or garbled so the parser stopped early) must never pass for a complete one,
/// since a missing key would be copied again, or deleted on the other side.
pub(in crate::storage::s3) fn whole_page(page: &ListObjectsV2Output) -> Result<(), String> {
    let (objects, prefixes) = (page.contents().len(), page.common_prefixes().len());
    let arrived = objects + prefixes;
    match page.key_count().and_then(|c| usize::try_from(c).ok()) {
        // S3 counts common prefixes as keys; some servers count objects only.
        Some(count) if count != arrived && count != objects => Err(format!(
            "the page says it holds {count} keys, but {arrived} arrived; the answer was damaged on the way"
        )),
        _ => Ok(()),
    }
}

/// A key or prefix of a listing asked for with `encoding-type=url`: keys may hold
/// characters XML cannot carry (U+0001), which would break the whole page otherwise.
pub(in crate::storage::s3) fn decoded(value: &str) -> String {
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

/// An object of a page as an entry, keyed relative to the location's prefix.
pub(super) fn entry_from(url: &S3Url, object: &aws_sdk_s3::types::Object) -> ListItem {
    let full_key = decoded(object.key().unwrap_or_default());
    let full_key = full_key.as_str();
    let Some(key) = full_key.strip_prefix(url.prefix()) else {
        return Err(ListError::Fatal(format!(
            "ListObjectsV2 {}: the server returned key {full_key:?} outside the prefix",
            url
        )));
    };
    let mtime = object
        .last_modified()
        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .unwrap_or(std::time::UNIX_EPOCH);
    Ok(Entry {
        key: key.to_owned(),
        size: object.size().unwrap_or(0).max(0) as u64,
        mtime,
        etag: object.e_tag().map(ETag::parse),
        skip: None,
        storage_class: object
            .storage_class()
            .and_then(|class| StorageClass::named(class.as_str())),
        version: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::types::{CommonPrefix, Object};

    fn page(key_count: Option<i32>, objects: usize, prefixes: usize) -> ListObjectsV2Output {
        ListObjectsV2Output::builder()
            .set_key_count(key_count)
            .set_contents(Some(
                (0..objects)
                    .map(|i| Object::builder().key(format!("k{i}")).build())
                    .collect(),
            ))
            .set_common_prefixes(Some(
                (0..prefixes)
                    .map(|i| CommonPrefix::builder().prefix(format!("p{i}/")).build())
                    .collect(),
            ))
            .build()
    }

    #[test]
    fn a_page_that_lost_entries_is_refused() {
        assert!(whole_page(&page(Some(3), 2, 1)).is_ok());
        assert!(
            whole_page(&page(Some(2), 2, 1)).is_ok(),
            "prefixes not counted"
        );
        assert!(
            whole_page(&page(None, 2, 0)).is_ok(),
            "a server that states no count"
        );
        let err = whole_page(&page(Some(122), 61, 0)).unwrap_err();
        assert!(err.contains("122 keys, but 61 arrived"), "{err}");
    }

    #[test]
    fn objects_and_common_prefixes_merge_in_key_order() {
        let entries = ["a", "a0", "c"].map(super::super::span::entry).to_vec();
        let prefixes = ["a/", "b/", "d/"].map(String::from).to_vec();
        let keys: Vec<String> = in_key_order(entries, prefixes)
            .iter()
            .map(|item| item.key().to_owned())
            .collect();
        assert_eq!(keys, ["a", "a/", "a0", "b/", "c", "d/"]);
    }

    #[test]
    fn url_encoded_keys_are_decoded() {
        assert_eq!(decoded("dir%01/a%20b%25"), "dir\u{1}/a b%");
    }
}
