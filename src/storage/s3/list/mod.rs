//! Listing a bucket prefix in key order, in parallel where the key space allows.
//!
//! The first page is listed plainly, so a small listing costs one request. If there is
//! more, one ListObjectsV2 with delimiter `/` (after the first page's last key) splits the
//! rest into keys at the top level and common prefixes ("directories"). Up to `width` common prefixes are then listed at once,
//! each into its own bounded buffer, while their results are forwarded strictly in key
//! order: a common prefix's keys all sort between the top-level items around it, so the
//! output is exactly the sequential listing. Memory is bounded by `width` buffers.
//!
//! A prefix whose keys sit at one level (no `/` below it) gains nothing: the delimiter
//! listing is then the whole listing.

use std::collections::VecDeque;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_objects_v2::{ListObjectsV2Error, ListObjectsV2Output};
use aws_sdk_s3::types::EncodingType;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::http::Response;
use tokio::sync::mpsc;

mod pages;

use super::describe_sdk_error;
use crate::location::S3Url;
use crate::storage::{ListError, ListItem};
use pages::entry_from;
pub(super) use pages::{decoded, whole_page};

/// Entries buffered ahead for each common prefix listed in parallel.
const SEGMENT_BUFFER: usize = 5_000;
/// Items (top-level keys and prefixes being listed) held ahead of the output.
const WINDOW_LIMIT: usize = 2_000;

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

/// One item of the delimiter listing, in key order.
enum Segment {
    Entry(ListItem),
    Prefix(String),
}

/// An item of the output being prepared: an entry, or a common prefix being listed.
enum Pending {
    Entry(ListItem),
    Prefix(mpsc::Receiver<ListItem>),
}

impl Lister {
    /// Lists after `start_after` (a full key), if given.
    pub async fn run(self, width: usize, start_after: Option<String>, tx: mpsc::Sender<ListItem>) {
        let prefix = self.url.prefix().to_owned();
        if width <= 1 {
            return self.list_into(prefix, start_after, tx).await;
        }
        // The first page is listed plainly: a listing that fits in one page costs one
        // request. Only the rest of a longer one is split over common prefixes.
        let first = self
            .client
            .list_objects_v2()
            .bucket(self.url.bucket())
            .prefix(&prefix)
            .set_start_after(start_after)
            .encoding_type(EncodingType::Url)
            .send()
            .await;
        let Some(page) = self.forward(first, &tx).await else {
            return;
        };
        let last_key = page.contents().last().and_then(|o| o.key()).map(decoded);
        let (Some(true), Some(start_after)) = (page.is_truncated(), last_key) else {
            return;
        };
        let (segment_tx, mut segments) = mpsc::channel(1_000);
        let top = Lister {
            client: self.client.clone(),
            url: self.url.clone(),
        };
        tokio::spawn(top.delimited(start_after.clone(), segment_tx));
        let mut window: VecDeque<Pending> = VecDeque::new();
        let mut listing = 0;
        let mut segments_done = false;
        loop {
            // Start common-prefix listings until `width` run ahead of the output; top-level
            // keys wait in the window too, up to a bound, so a flat prefix stays bounded.
            while !segments_done && listing < width && window.len() < WINDOW_LIMIT {
                let next = if window.is_empty() {
                    segments.recv().await
                } else {
                    match segments.try_recv() {
                        Ok(segment) => Some(segment),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    }
                };
                match next {
                    None => segments_done = true,
                    Some(Segment::Entry(item)) => window.push_back(Pending::Entry(item)),
                    Some(Segment::Prefix(prefix)) => {
                        let (sub_tx, sub_rx) = mpsc::channel(SEGMENT_BUFFER);
                        let sub = Lister {
                            client: self.client.clone(),
                            url: self.url.clone(),
                        };
                        // Only the prefix the first page ended in needs a start (and
                        // Garage returns nothing for a start before the prefix).
                        let after = start_after
                            .starts_with(&prefix)
                            .then(|| start_after.clone());
                        tokio::spawn(sub.list_into(prefix, after, sub_tx));
                        window.push_back(Pending::Prefix(sub_rx));
                        listing += 1;
                    }
                }
            }
            let Some(pending) = window.pop_front() else {
                return;
            };
            match pending {
                Pending::Entry(item) => {
                    let fatal = matches!(item, Err(ListError::Fatal(_)));
                    if tx.send(item).await.is_err() || fatal {
                        return;
                    }
                }
                Pending::Prefix(mut rx) => {
                    listing -= 1;
                    while let Some(item) = rx.recv().await {
                        let fatal = matches!(item, Err(ListError::Fatal(_)));
                        if tx.send(item).await.is_err() || fatal {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The delimiter listing after `start_after`: top-level keys and common prefixes,
    /// merged in key order.
    async fn delimited(self, start_after: String, tx: mpsc::Sender<Segment>) {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(self.url.bucket())
            .prefix(self.url.prefix())
            .delimiter("/")
            .start_after(start_after)
            .encoding_type(EncodingType::Url)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page.map_err(|err| self.failed(&err)).and_then(|page| {
                whole_page(&page)
                    .map(|()| page)
                    .map_err(|why| ListError::Fatal(format!("ListObjectsV2 {}: {why}", self.url)))
            }) {
                Ok(page) => page,
                Err(err) => {
                    let _ = tx.send(Segment::Entry(Err(err))).await;
                    return;
                }
            };
            let mut entries = page.contents().iter().peekable();
            let prefixes: Vec<String> = page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(decoded))
                .collect();
            let mut prefixes = prefixes.into_iter().peekable();
            loop {
                let take_entry = match (entries.peek(), prefixes.peek()) {
                    (None, None) => break,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(e), Some(p)) => {
                        decoded(e.key().unwrap_or_default()).as_bytes() < p.as_bytes()
                    }
                };
                let segment = if take_entry {
                    Segment::Entry(entry_from(&self.url, entries.next().expect("peeked")))
                } else {
                    Segment::Prefix(prefixes.next().expect("peeked"))
                };
                if tx.send(segment).await.is_err() {
                    return;
                }
            }
        }
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
