//! A span of a parallel listing: the keys below a prefix from a lower bound on, up to an
//! optional upper one, and what one ListObjectsV2 page means for it.
//!
//! Spans partition the key space: each key belongs to exactly one, and all the keys of a
//! span sort between those of the spans before and after it. Bounds are exact for any
//! string, so the listing stays the sequential one however spans are chosen; the choice
//! decides only how many requests it takes. Keys are relative to the location's prefix and
//! compared as Rust strings compare, in UTF-8 byte order, as S3 orders them.

use crate::storage::{Entry, KeyRange};

/// S3 accepts keys, and so StartAfter values, of at most this many bytes.
const KEY_LIMIT: usize = 1024;

/// Where a span's keys start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lower {
    /// This key and the keys after it.
    From(String),
    /// The keys after this one: where the span's listing has got to.
    After(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Span {
    /// Every key of the span starts with it; the prefix its requests ask for.
    pub prefix: String,
    pub lower: Lower,
    /// The first key past the span (the spans after it hold it); none: the end of the prefix.
    pub upper: Option<String>,
    /// Whether its listing rolls keys below a `/` up into common prefixes.
    pub delimited: bool,
    /// Likely empty: the first request asks for one key, so an empty span costs a small answer.
    pub probe: bool,
}

/// One ListObjectsV2 request, keys relative to the location's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PageRequest {
    pub prefix: String,
    pub start_after: Option<String>,
    pub delimited: bool,
    pub max_keys: Option<i32>,
}

/// An item of a page: an object, or a common prefix (ending with `/`) of a delimited one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    Entry(Entry),
    Prefix(String),
}

impl Item {
    pub fn key(&self) -> &str {
        match self {
            Item::Entry(entry) => &entry.key,
            Item::Prefix(prefix) => prefix,
        }
    }
}

/// One answer: its items in key order, and whether the server holds more after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Page {
    pub items: Vec<Item>,
    pub truncated: bool,
}

/// A page cut to its span: the items that belong to it, and where the span goes on
/// (none: it is complete).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Admitted {
    pub items: Vec<Item>,
    pub next: Option<Lower>,
}

impl Span {
    /// The whole of `range`, listed plainly.
    pub fn of_range(range: &KeyRange) -> Self {
        Self {
            prefix: String::new(),
            lower: Lower::From(range.start.clone().unwrap_or_default()),
            upper: range.end.clone(),
            delimited: false,
            probe: false,
        }
    }

    /// The span of the keys below `common_prefix`, a common prefix this (delimited) span's
    /// page returned: within this span's bounds, listed plainly.
    pub fn below(&self, common_prefix: String) -> Self {
        Self {
            prefix: common_prefix,
            lower: self.lower.clone(),
            upper: self.upper.clone(),
            delimited: false,
            probe: false,
        }
    }

    /// The next request: it starts just before the lower bound, and never before the
    /// prefix, since some servers (Garage) answer such a StartAfter with nothing.
    pub fn request(&self) -> PageRequest {
        let start_after = match &self.lower {
            Lower::After(key) => Some(key.clone()),
            Lower::From(key) => just_before(key),
        };
        PageRequest {
            prefix: self.prefix.clone(),
            start_after: start_after.filter(|after| after.as_str() >= self.prefix.as_str()),
            delimited: self.delimited,
            max_keys: self.probe.then_some(1),
        }
    }

    /// Whether `key` belongs to this span.
    #[cfg(test)]
    pub fn holds(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && !self.key_is_below(key)
            && self.upper.as_deref().is_none_or(|upper| key < upper)
    }

    /// The smallest key the span may hold.
    pub fn lowest(&self) -> &str {
        match &self.lower {
            Lower::From(key) | Lower::After(key) => key.as_str().max(self.prefix.as_str()),
        }
    }

    /// What `page`, the answer to this span's request, holds for it. Items below the lower
    /// bound are passed over (a StartAfter may begin a little early); the span ends at the
    /// first item past its upper bound or outside its prefix (an answer to a request made
    /// before the span was narrowed).
    pub fn admit(&self, page: Page) -> Admitted {
        let next = page.items.last().and_then(|last| match last {
            Item::Entry(entry) => Some(Lower::After(entry.key.clone())),
            Item::Prefix(prefix) => after_all(prefix).map(Lower::From),
        });
        let mut items = Vec::with_capacity(page.items.len());
        for item in page.items {
            let key = item.key();
            if !key.starts_with(&self.prefix) || self.upper.as_deref().is_some_and(|u| key >= u) {
                return Admitted { items, next: None };
            }
            let below = match &item {
                Item::Entry(entry) => self.key_is_below(&entry.key),
                Item::Prefix(prefix) => self.prefix_is_below(prefix),
            };
            if !below {
                items.push(item);
            }
        }
        Admitted {
            items,
            next: next.filter(|_| page.truncated),
        }
    }

    fn key_is_below(&self, key: &str) -> bool {
        match &self.lower {
            Lower::From(from) => key < from.as_str(),
            Lower::After(after) => key <= after.as_str(),
        }
    }

    /// Whether every key below common prefix `prefix` sorts below the lower bound.
    fn prefix_is_below(&self, prefix: &str) -> bool {
        let (Lower::From(bound) | Lower::After(bound)) = &self.lower;
        after_all(prefix).is_some_and(|end| end.as_str() <= bound.as_str())
    }
}

/// A StartAfter for a listing that must include `key`: a string below it with only keys
/// that start with it in between (which the span's lower bound then passes over). None
/// when nothing sorts below `key`.
pub(super) fn just_before(key: &str) -> Option<String> {
    let mut chars = key.chars();
    let last = chars.next_back()?;
    let stem = chars.as_str();
    // Nothing sorts between "x" and "x\0".
    let Some(previous) = previous_char(last) else {
        return Some(stem.to_owned());
    };
    let before = format!("{stem}{previous}{}", char::MAX);
    if before.len() > KEY_LIMIT {
        return Some(stem.to_owned()).filter(|stem| !stem.is_empty());
    }
    Some(before)
}

/// The smallest string that sorts after every string starting with `prefix`; none if
/// there is no such string (the prefix is empty, or all U+10FFFF).
pub(super) fn after_all(prefix: &str) -> Option<String> {
    let mut stem = prefix.trim_end_matches(char::MAX).to_owned();
    let last = stem.pop()?;
    stem.push(next_char(last)?);
    Some(stem)
}

/// The char right after `c` in code point (and so UTF-8 byte) order.
pub(super) fn next_char(c: char) -> Option<char> {
    match c {
        '\u{D7FF}' => Some('\u{E000}'),
        _ => char::from_u32(u32::from(c) + 1),
    }
}

fn previous_char(c: char) -> Option<char> {
    match c {
        '\0' => None,
        '\u{E000}' => Some('\u{D7FF}'),
        _ => char::from_u32(u32::from(c) - 1),
    }
}

#[cfg(test)]
pub(super) fn entry(key: &str) -> Entry {
    Entry {
        key: key.to_owned(),
        size: 0,
        mtime: std::time::UNIX_EPOCH,
        etag: None,
        skip: None,
        storage_class: None,
        version: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(prefix: &str, lower: Lower, upper: Option<&str>) -> Span {
        Span {
            prefix: prefix.to_owned(),
            lower,
            upper: upper.map(str::to_owned),
            delimited: false,
            probe: false,
        }
    }

    fn keys(items: &[Item]) -> Vec<&str> {
        items.iter().map(Item::key).collect()
    }

    #[test]
    fn neighbours_of_strings_in_byte_order() {
        assert_eq!(after_all("ab").as_deref(), Some("ac"));
        assert_eq!(after_all("d/").as_deref(), Some("d0"));
        assert_eq!(after_all("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(after_all("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(after_all(""), None);
        assert_eq!(after_all("\u{10FFFF}"), None);
        assert_eq!(just_before("ab").as_deref(), Some("aa\u{10FFFF}"));
        assert_eq!(just_before("a\0").as_deref(), Some("a"));
        assert_eq!(
            just_before("\u{E000}").as_deref(),
            Some("\u{D7FF}\u{10FFFF}")
        );
        assert_eq!(just_before("é").as_deref(), Some("è\u{10FFFF}"));
        assert_eq!(just_before(""), None);
        assert_eq!(just_before("\0"), Some(String::new()));
        let long = "k".repeat(KEY_LIMIT);
        assert_eq!(just_before(&long).unwrap(), "k".repeat(KEY_LIMIT - 1));
        for key in ["ab", "a\0", "\u{E000}", "é", "a\u{1}b"] {
            let before = just_before(key).unwrap();
            assert!(before.as_str() < key, "{key:?}");
        }
    }

    #[test]
    fn requests_start_just_before_the_span_and_never_before_its_prefix() {
        let from = span("f0", Lower::From("f01".into()), None);
        assert_eq!(from.request().start_after.as_deref(), Some("f00\u{10FFFF}"));
        let after = span("", Lower::After("a\u{1}".into()), None);
        assert_eq!(after.request().start_after.as_deref(), Some("a\u{1}"));
        // A start below the prefix is no start: Garage would list nothing.
        let below = span("d/", Lower::After("c".into()), None);
        assert_eq!(below.request().start_after, None);
        assert_eq!(
            span("", Lower::From(String::new()), None)
                .request()
                .start_after,
            None
        );
        let probe = Span {
            probe: true,
            ..span("", Lower::From("b".into()), Some("c"))
        };
        assert_eq!(probe.request().max_keys, Some(1));
    }

    #[test]
    fn a_page_is_cut_to_its_span() {
        let page = |names: &[&str], truncated| Page {
            items: names
                .iter()
                .map(|name| match name.strip_prefix('=') {
                    Some(prefix) => Item::Prefix(prefix.to_owned()),
                    None => Item::Entry(entry(name)),
                })
                .collect(),
            truncated,
        };
        // From a start inside the page: keys a StartAfter let in early are passed over.
        let from = span("", Lower::From("b".into()), None);
        let admitted = from.admit(page(&["a\u{10FFFF}x", "b", "c"], true));
        assert_eq!(keys(&admitted.items), ["b", "c"]);
        assert_eq!(admitted.next, Some(Lower::After("c".into())));
        // The upper bound ends the span, whatever the server holds after it.
        let upper = span("", Lower::After("a".into()), Some("c"));
        let admitted = upper.admit(page(&["b", "c", "d"], true));
        assert_eq!((keys(&admitted.items), admitted.next), (vec!["b"], None));
        // So does the first key outside a prefix the span was narrowed to.
        let narrowed = span("f0", Lower::After("f01".into()), None);
        let admitted = narrowed.admit(page(&["f02", "f1"], true));
        assert_eq!((keys(&admitted.items), admitted.next), (vec!["f02"], None));
        // The end of the server's listing ends the span.
        let admitted = from.admit(page(&["b"], false));
        assert_eq!(admitted.next, None);
        // A common prefix stays while some of its keys may be in the span; the span goes
        // on after all of them.
        let after = span("", Lower::After("d/x".into()), None);
        let admitted = after.admit(page(&["=c/", "=d/", "=e/"], true));
        assert_eq!(keys(&admitted.items), ["d/", "e/"]);
        assert_eq!(admitted.next, Some(Lower::From("e0".into())));
    }

    #[test]
    fn spans_hold_their_keys() {
        let gap = span("f", Lower::From("f:".into()), Some("fa"));
        for key in ["f:", "f;x", "f`\u{10FFFF}"] {
            assert!(gap.holds(key), "{key:?}");
        }
        for key in ["f9", "f9\u{10FFFF}", "fa", "g", "f"] {
            assert!(!gap.holds(key), "{key:?}");
        }
        assert_eq!(gap.lowest(), "f:");
        assert_eq!(span("d/", Lower::From("a".into()), None).lowest(), "d/");
    }
}
