//! Listing a bucket prefix in key order, in parallel whatever the layout of its keys.
//!
//! With a width of 1 the listing is one sequential run of pages. Otherwise the key space
//! is cut into spans (`span`) listed at once by one task (`window`), at most `width`
//! requests in flight, their entries forwarded strictly in key order, so the output is
//! exactly the sequential listing, with memory bounded by the width.
//!
//! The first page is listed plainly, so a small listing costs one request. The rest is
//! listed with delimiter `/`: each common prefix ("directory") it returns is a span of its
//! own, and a span whose full page shows more keys at one level (a flat prefix) is cut
//! after that page on the next character (`split`), so the width is used whatever the
//! layout.

#[cfg(test)]
mod memory_pages;
mod pages;
mod span;
mod split;
mod window;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::{ListObjectsV2Error, ListObjectsV2Output};
use aws_sdk_s3::types::EncodingType;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::http::Response;
use tokio::sync::mpsc;

use super::describe_sdk_error;
use crate::location::S3Url;
use crate::storage::{KeyRange, ListError, ListItem};
pub(super) use pages::{decoded, whole_page};
use pages::{entry_from, S3Pages};

pub(super) struct Lister {
    pub client: Client,
    pub url: S3Url,
}

impl super::S3Store {
    /// The names right below relative prefix `below` (keys, and common prefixes ending in
    /// `/`), relative and in key order, at most `limit` of them: one delimiter listing.
    pub async fn level(&self, below: &str, limit: usize) -> Result<Vec<String>, String> {
        let url = self.url();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(url.bucket())
            .prefix(url.full_key(below))
            .delimiter("/")
            .encoding_type(EncodingType::Url)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| {
                format!("ListObjectsV2 {url}{below}: {}", describe_sdk_error(&err))
            })?;
            whole_page(&page).map_err(|why| format!("ListObjectsV2 {url}{below}: {why}"))?;
            let keys = page.contents().iter().filter_map(|o| o.key());
            let prefixes = page.common_prefixes().iter().filter_map(|p| p.prefix());
            names.extend(
                keys.chain(prefixes)
                    .map(decoded)
                    .filter_map(|full| full.strip_prefix(url.prefix()).map(str::to_owned)),
            );
            if names.len() >= limit {
                break;
            }
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        names.truncate(limit);
        Ok(names)
    }
}

/// A StartAfter that begins a listing just before relative key `start`: the full key
/// without its last character, which sorts before it (the few keys in between are
/// dropped by the range filter). None when that would not be after the prefix, since
/// some servers list nothing for a StartAfter before the prefix.
pub(super) fn start_after(url: &S3Url, start: &str) -> Option<String> {
    let full = url.full_key(start);
    let mut chars = full.chars();
    chars.next_back()?;
    let before = chars.as_str();
    (before.len() > url.prefix().len()).then(|| before.to_owned())
}

impl Lister {
    /// Lists the keys of `range` (relative to the location), in key order: with `width`
    /// of 1 as one sequential listing, otherwise with up to `width` requests at once.
    pub async fn run(self, width: usize, range: KeyRange, tx: mpsc::Sender<ListItem>) {
        if width <= 1 {
            let start = range.start.as_deref();
            let after = start.and_then(|start| start_after(&self.url, start));
            let prefix = self.url.prefix().to_owned();
            return self.list_into(prefix, after, tx).await;
        }
        let pages = S3Pages {
            client: self.client,
            url: self.url,
        };
        window::list_in_parallel(pages, width, range, tx).await;
    }

    /// Pages through ListObjectsV2 below `prefix` (after `start_after`) and forwards
    /// entries, keyed relative to the location's prefix; the bounded channel makes the
    /// paginator wait whenever the reader falls behind.
    async fn list_into(
        self,
        prefix: String,
        start_after: Option<String>,
        tx: mpsc::Sender<ListItem>,
    ) {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.url.bucket())
            .prefix(prefix)
            .set_start_after(start_after)
            .encoding_type(EncodingType::Url)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            if self.forward(page, &tx).await.is_none() {
                return;
            }
        }
    }

    /// Forwards the entries of one page, or its error. Returns the page, or `None` when
    /// the listing must stop (it failed, or nobody reads it any more).
    async fn forward(
        &self,
        page: Result<ListObjectsV2Output, SdkError<ListObjectsV2Error, Response>>,
        tx: &mpsc::Sender<ListItem>,
    ) -> Option<ListObjectsV2Output> {
        let page = match page {
            Ok(page) => page,
            Err(err) => {
                let _ = tx.send(Err(self.failed(&err))).await;
                return None;
            }
        };
        if let Err(why) = whole_page(&page) {
            let message = format!("ListObjectsV2 {}: {why}", self.url);
            let _ = tx.send(Err(ListError::Fatal(message))).await;
            return None;
        }
        for object in page.contents() {
            if tx.send(entry_from(&self.url, object)).await.is_err() {
                return None;
            }
        }
        Some(page)
    }

    fn failed<E>(&self, err: &SdkError<E, Response>) -> ListError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        ListError::Fatal(format!(
            "ListObjectsV2 {}: {}",
            self.url,
            describe_sdk_error(err)
        ))
    }
}
