//! Merge-join of two sorted listings into one stream of per-key pairs.
//!
//! Invariant: each listing must be strictly ascending; a listing that is not is a fatal
//! error, because a wrong order would make the join report objects as missing.

use std::cmp::Ordering;

use crate::storage::{Entry, ListError, Listing};

/// A key and where it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pair {
    SourceOnly(Entry),
    DestOnly(Entry),
    Both {
        source: Entry,
        dest: Entry,
    },
    /// A folder marker on one side whose directory the other side holds (keys below it):
    /// the directory is there, so the marker is neither copied, nor extra, nor deleted.
    Covered {
        marker: Entry,
        side: Side,
    },
}

/// An item of the join: a pair, or an error from one listing, tagged with its side.
pub type JoinItem = Result<Pair, (Side, ListError)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Dest,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Dest => "destination",
        }
    }
}

struct Cursor {
    side: Side,
    listing: Listing,
    head: Option<Entry>,
    last_key: Option<String>,
    exhausted: bool,
}

impl Cursor {
    fn new(side: Side, listing: Listing) -> Self {
        Self {
            side,
            listing,
            head: None,
            last_key: None,
            exhausted: false,
        }
    }

    /// Makes `head` hold the next entry, unless the listing is at its end.
    async fn fill(&mut self) -> Result<(), (Side, ListError)> {
        if self.head.is_some() || self.exhausted {
            return Ok(());
        }
        match self.listing.next().await {
            None => self.exhausted = true,
            Some(Err(err)) => return Err((self.side, err)),
            Some(Ok(entry)) => {
                if let Some(last) = &self.last_key {
                    if entry.key.as_bytes() <= last.as_bytes() {
                        let err = ListError::Fatal(format!(
                            "the {} listing is not in ascending key order: {:?} came after {:?}",
                            self.side.name(),
                            entry.key,
                            last
                        ));
                        return Err((self.side, err));
                    }
                }
                self.last_key = Some(entry.key.clone());
                self.head = Some(entry);
            }
        }
        Ok(())
    }
}

pub struct MergeJoin {
    source: Cursor,
    dest: Cursor,
}

impl MergeJoin {
    pub fn new(source: Listing, dest: Listing) -> Self {
        Self {
            source: Cursor::new(Side::Source, source),
            dest: Cursor::new(Side::Dest, dest),
        }
    }

    /// The next pair in key order, `None` when both listings are done. After an error the
    /// join may be polled again: an entry error skips that entry, a fatal one should end it.
    pub async fn next(&mut self) -> Option<JoinItem> {
        if let Err(err) = self.source.fill().await {
            return Some(Err(err));
        }
        if let Err(err) = self.dest.fill().await {
            return Some(Err(err));
        }
        let order = match (&self.source.head, &self.dest.head) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(s), Some(d)) => s.key.as_bytes().cmp(d.key.as_bytes()),
        };
        // The other side's next key is the first that could be below a marker.
        let holds = |marker: &Option<Entry>, other: &Option<Entry>| match (marker, other) {
            (Some(m), Some(o)) => m.is_marker() && o.key.starts_with(&m.key),
            _ => false,
        };
        Some(Ok(match order {
            Ordering::Less if holds(&self.source.head, &self.dest.head) => Pair::Covered {
                marker: self.source.head.take()?,
                side: Side::Source,
            },
            Ordering::Greater if holds(&self.dest.head, &self.source.head) => Pair::Covered {
                marker: self.dest.head.take()?,
                side: Side::Dest,
            },
            Ordering::Less => Pair::SourceOnly(self.source.head.take()?),
            Ordering::Greater => Pair::DestOnly(self.dest.head.take()?),
            Ordering::Equal => Pair::Both {
                source: self.source.head.take()?,
                dest: self.dest.head.take()?,
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ListItem;
    use std::time::UNIX_EPOCH;

    fn entry(key: &str) -> Entry {
        Entry {
            key: key.into(),
            size: 1,
            mtime: UNIX_EPOCH,
            etag: None,
            skip: None,
            storage_class: None,
            version: None,
        }
    }

    fn listing(items: Vec<ListItem>) -> Listing {
        let (tx, listing) = Listing::channel();
        for item in items {
            tx.try_send(item).unwrap();
        }
        listing
    }

    fn keys(keys: &[&str]) -> Listing {
        listing(keys.iter().map(|k| Ok(entry(k))).collect())
    }

    async fn collect(mut join: MergeJoin) -> Vec<JoinItem> {
        let mut out = Vec::new();
        while let Some(item) = join.next().await {
            out.push(item);
        }
        out
    }

    #[tokio::test]
    async fn pairs_keys_by_byte_order() {
        let join = MergeJoin::new(keys(&["a", "a.b", "a/b", "c"]), keys(&["a/b", "b", "c"]));
        let got = collect(join).await;
        let want = vec![
            Ok(Pair::SourceOnly(entry("a"))),
            Ok(Pair::SourceOnly(entry("a.b"))),
            Ok(Pair::Both {
                source: entry("a/b"),
                dest: entry("a/b"),
            }),
            Ok(Pair::DestOnly(entry("b"))),
            Ok(Pair::Both {
                source: entry("c"),
                dest: entry("c"),
            }),
        ];
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn empty_listings_join_to_nothing() {
        assert!(collect(MergeJoin::new(keys(&[]), keys(&[])))
            .await
            .is_empty());
    }

    #[tokio::test]
    async fn out_of_order_listing_is_fatal() {
        let mut join = MergeJoin::new(keys(&["b", "a"]), keys(&[]));
        assert_eq!(join.next().await, Some(Ok(Pair::SourceOnly(entry("b")))));
        let Some(Err((Side::Source, ListError::Fatal(msg)))) = join.next().await else {
            panic!("expected a fatal source error");
        };
        assert!(msg.contains("not in ascending key order"), "{msg}");
    }

    #[tokio::test]
    async fn entry_errors_pass_through_and_the_join_goes_on() {
        let bad = ListError::Entry {
            path: "x".into(),
            cause: "denied".into(),
        };
        let join = MergeJoin::new(
            listing(vec![Err(bad.clone()), Ok(entry("a"))]),
            keys(&["a"]),
        );
        let got = collect(join).await;
        assert_eq!(got[0], Err((Side::Source, bad)));
        assert_eq!(
            got[1],
            Ok(Pair::Both {
                source: entry("a"),
                dest: entry("a")
            })
        );
    }
}
