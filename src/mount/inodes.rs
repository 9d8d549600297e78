//! The inode table: a node for each path the kernel holds (by lookup count) or that is
//! open or staged, and the directory listings taken within the TTL.
//!
//! Invariants: a node lives while the kernel references it (`lookups` > 0), while a
//! handle has it open, or while it holds staged data; a `forget` that leaves none of
//! these removes it, so memory follows what the kernel keeps, not what was ever seen.
//! `by_path` holds only nodes with a name (an unlinked file still open keeps its inode
//! but no name). Listings are dropped once older than the TTL.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::remote::{ObjectMeta, StoredAttrs};
use super::staging::Staged;

pub const ROOT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

pub struct Node {
    /// Relative path without a trailing `/`; empty for the root.
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    /// The object's LastModified (for a directory: when the mount started).
    pub last_modified: SystemTime,
    pub etag: String,
    /// What the object's metadata says, once asked (HeadObject); a listing does not tell.
    pub attrs: StoredAttrs,
    pub attrs_known: bool,
    /// When the server last confirmed the metadata.
    pub checked: Option<Instant>,
    /// Written here and not yet in the bucket, or being changed: the bytes that count.
    pub staged: Option<Arc<Staged>>,
    /// Removed from the namespace while still open: never uploaded again.
    pub unlinked: bool,
    pub opens: u32,
    lookups: u64,
}

impl Node {
    fn new(path: &str, kind: Kind, now: SystemTime) -> Self {
        Self {
            path: path.to_owned(),
            kind,
            size: 0,
            last_modified: now,
            etag: String::new(),
            attrs: StoredAttrs::default(),
            attrs_known: false,
            checked: None,
            staged: None,
            unlinked: false,
            opens: 0,
            lookups: 0,
        }
    }

    /// Takes what the server says about the object (a listing, or HeadObject).
    pub fn set_meta(&mut self, meta: &ObjectMeta) {
        // Whole seconds: listings may state milliseconds where HeadObject states none.
        let secs = |t: SystemTime| crate::storage::epoch_secs(t);
        let same_version =
            self.etag == meta.etag && secs(self.last_modified) == secs(meta.last_modified);
        self.size = meta.size;
        self.etag = meta.etag.clone();
        self.last_modified = meta.last_modified;
        match &meta.attrs {
            Some(attrs) => {
                self.attrs = attrs.clone();
                self.attrs_known = true;
            }
            // The metadata known still holds while the version is the same.
            None => self.attrs_known &= same_version,
        }
        if self.attrs_known && self.attrs.is_symlink() {
            self.kind = Kind::Symlink;
        }
    }

    pub fn is_fresh(&self, ttl: Duration) -> bool {
        self.staged.is_some() || self.checked.is_some_and(|at| at.elapsed() < ttl)
    }
}

/// One name of a directory listing.
#[derive(Debug, Clone)]
pub struct Listed {
    pub kind: Kind,
    /// For objects, what the listing said.
    pub meta: Option<ObjectMeta>,
    /// The inode number readdir gave the name.
    pub ino: u64,
}

pub struct Listing {
    pub at: Instant,
    pub entries: HashMap<String, Listed>,
}

pub struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_path: BTreeMap<String, u64>,
    /// Paths of files created here and not yet in the bucket: what a listing misses.
    pending: BTreeSet<String>,
    listings: HashMap<String, Listing>,
    next: u64,
    started: SystemTime,
    /// Nodes released since `released_many` last said so.
    released: u64,
}

/// The path of `name` in the directory `parent`.
pub fn join(parent: &str, name: &str) -> String {
    match parent {
        "" => name.to_owned(),
        parent => format!("{parent}/{name}"),
    }
}

/// The parent directory's path and the name.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Inodes {
    pub fn new() -> Self {
        let started = SystemTime::now();
        let mut inodes = Self {
            by_ino: HashMap::new(),
            by_path: BTreeMap::new(),
            pending: BTreeSet::new(),
            listings: HashMap::new(),
            next: ROOT,
            started,
            released: 0,
        };
        let root = inodes.node_for("", Kind::Dir);
        inodes.by_ino.get_mut(&root).expect("root").lookups = 1;
        inodes
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.by_ino.get(&ino)
    }

    pub fn get_mut(&mut self, ino: u64) -> Option<&mut Node> {
        self.by_ino.get_mut(&ino)
    }

    pub fn ino_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    pub fn node_at(&self, path: &str) -> Option<&Node> {
        self.by_path.get(path).and_then(|ino| self.by_ino.get(ino))
    }

    pub fn len(&self) -> usize {
        self.by_ino.len()
    }

    /// Whether 16,384 nodes or more were released since it last said so; if so, the
    /// table gives back the room it no longer needs.
    pub fn released_many(&mut self) -> bool {
        let many = self.released >= 16_384;
        if many {
            self.released = 0;
            if self.by_ino.len() < self.by_ino.capacity() / 4 {
                self.by_ino.shrink_to_fit();
            }
        }
        many
    }

    fn allocate(&mut self) -> u64 {
        let ino = self.next;
        self.next += 1;
        ino
    }

    /// The inode of `path`, made (unconfirmed) if there is none.
    pub fn node_for(&mut self, path: &str, kind: Kind) -> u64 {
        if let Some(ino) = self.ino_of(path) {
            return ino;
        }
        let ino = match self.listed_ino(path) {
            Some(ino) if !self.by_ino.contains_key(&ino) => ino,
            _ => self.allocate(),
        };
        self.by_path.insert(path.to_owned(), ino);
        self.by_ino.insert(ino, Node::new(path, kind, self.started));
        ino
    }

    /// The kernel got this inode in a reply (lookup, create, mkdir, symlink).
    pub fn looked_up(&mut self, ino: u64) {
        if let Some(node) = self.by_ino.get_mut(&ino) {
            node.lookups += 1;
        }
    }

    /// The kernel dropped `count` references.
    pub fn forget(&mut self, ino: u64, count: u64) {
        if let Some(node) = self.by_ino.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
        }
        self.release_if_idle(ino);
    }

    /// Removes a node nothing refers to any more.
    pub fn release_if_idle(&mut self, ino: u64) {
        let idle = self
            .by_ino
            .get(&ino)
            .is_some_and(|n| ino != ROOT && n.lookups == 0 && n.opens == 0 && n.staged.is_none());
        if idle {
            self.released += 1;
            let node = self.by_ino.remove(&ino).expect("checked");
            if self.by_path.get(&node.path) == Some(&ino) {
                self.by_path.remove(&node.path);
            }
        }
    }

    /// Takes a name out of the namespace (unlink, rmdir, or a name replaced by rename).
    pub fn unlink(&mut self, path: &str) {
        self.pending.remove(path);
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(node) = self.by_ino.get_mut(&ino) {
                node.unlinked = true;
            }
            self.release_if_idle(ino);
        }
        let (parent, name) = split(path);
        if let Some(listing) = self.listings.get_mut(parent) {
            listing.entries.remove(name);
        }
    }

    /// Gives `from` and everything below it the paths under `to` (a rename), replacing
    /// whatever held those names.
    pub fn rename(&mut self, from: &str, to: &str) {
        self.unlink(to);
        let below = format!("{from}/");
        let paths: Vec<String> = std::iter::once(from.to_owned())
            .chain(
                self.by_path
                    .range(below.clone()..)
                    .take_while(|(path, _)| path.starts_with(&below))
                    .map(|(path, _)| path.clone()),
            )
            .collect();
        let moved: Vec<(String, u64)> = paths
            .into_iter()
            .filter_map(|path| self.by_path.remove(&path).map(|ino| (path, ino)))
            .collect();
        for (path, ino) in moved {
            let new_path = format!("{to}{}", &path[from.len()..]);
            if self.pending.remove(&path) {
                self.pending.insert(new_path.clone());
            }
            if let Some(node) = self.by_ino.get_mut(&ino) {
                node.path = new_path.clone();
                // A copy may have another ETag (a multipart source becomes one part);
                // its metadata came along.
                node.checked = None;
            }
            self.by_path.insert(new_path, ino);
        }
        let (parent, name) = split(from);
        if let Some(listing) = self.listings.get_mut(parent) {
            listing.entries.remove(name);
        }
        self.listings
            .retain(|dir, _| dir != from && !dir.starts_with(&below));
        // The new name is there; what it holds is asked for at its next lookup.
        if let Some(kind) = self.node_at(to).map(|n| n.kind) {
            self.note_written(to, kind, None);
        }
    }

    pub fn set_pending(&mut self, path: &str, pending: bool) {
        if pending {
            self.pending.insert(path.to_owned());
        } else {
            self.pending.remove(path);
        }
    }

    /// Names right below `dir` of files created here and not yet in the bucket.
    pub fn pending_in(&self, dir: &str) -> Vec<(String, u64, Kind)> {
        let below = match dir {
            "" => String::new(),
            dir => format!("{dir}/"),
        };
        self.pending
            .range(below.clone()..)
            .take_while(|path| path.starts_with(&below))
            .filter(|path| !path[below.len()..].contains('/'))
            .filter_map(|path| {
                let ino = self.ino_of(path)?;
                let kind = self.by_ino.get(&ino)?.kind;
                Some((path[below.len()..].to_owned(), ino, kind))
            })
            .collect()
    }

    /// Paths at or below `path` that hold staged data (to upload before a rename).
    pub fn staged_below(&self, path: &str) -> Vec<u64> {
        let below = match path {
            "" => String::new(),
            path => format!("{path}/"),
        };
        self.by_path
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .map(|(_, ino)| *ino)
            .chain(self.ino_of(path))
            .filter(|ino| self.by_ino.get(ino).is_some_and(|n| n.staged.is_some()))
            .collect()
    }

    /// The fresh listing of `dir`, if it was listed within the TTL.
    pub fn listing(&self, dir: &str, ttl: Duration) -> Option<&Listing> {
        self.listings.get(dir).filter(|l| l.at.elapsed() < ttl)
    }

    fn listed_ino(&self, path: &str) -> Option<u64> {
        let (parent, name) = split(path);
        self.listings.get(parent)?.entries.get(name).map(|l| l.ino)
    }

    /// The inode number for a listed name: its node's, else a new one.
    pub fn ino_for_listed(&mut self, path: &str) -> u64 {
        self.ino_of(path)
            .or_else(|| self.listed_ino(path))
            .unwrap_or_else(|| self.allocate())
    }

    /// Keeps a directory's listing for lookups within the TTL, dropping stale ones.
    pub fn store_listing(&mut self, dir: &str, listing: Listing, ttl: Duration) {
        self.drop_stale_listings(ttl);
        self.listings.insert(dir.to_owned(), listing);
    }

    /// Drops the listings older than the TTL: they answer nothing any more.
    pub fn drop_stale_listings(&mut self, ttl: Duration) {
        self.listings.retain(|_, l| l.at.elapsed() < ttl);
        if self.listings.is_empty() {
            self.listings.shrink_to_fit();
        }
    }

    /// Adds a name this mount just wrote to its directory's listing, if one is kept, so
    /// that the listing stays the truth for the rest of its TTL.
    pub fn note_written(&mut self, path: &str, kind: Kind, meta: Option<ObjectMeta>) {
        let Some(ino) = self.ino_of(path) else {
            return;
        };
        let (parent, name) = split(path);
        if let Some(listing) = self.listings.get_mut(parent) {
            listing
                .entries
                .insert(name.to_owned(), Listed { kind, meta, ino });
        }
    }

    /// A directory this mount just made holds nothing yet: lookups in it need not ask.
    pub fn note_new_dir(&mut self, path: &str) {
        let listing = Listing {
            at: Instant::now(),
            entries: HashMap::new(),
        };
        self.listings.insert(path.to_owned(), listing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_nodes_are_released_unless_open() {
        let mut inodes = Inodes::new();
        let a = inodes.node_for("a", Kind::File);
        let b = inodes.node_for("d/b", Kind::File);
        inodes.looked_up(a);
        inodes.looked_up(a);
        inodes.looked_up(b);
        inodes.get_mut(b).unwrap().opens = 1;
        inodes.forget(a, 1);
        assert!(inodes.get(a).is_some(), "one reference is left");
        inodes.forget(a, 1);
        assert!(inodes.get(a).is_none() && inodes.ino_of("a").is_none());
        inodes.forget(b, 1);
        assert!(inodes.get(b).is_some(), "open files stay");
        inodes.get_mut(b).unwrap().opens = 0;
        inodes.release_if_idle(b);
        assert_eq!(inodes.len(), 1, "only the root is left");
        inodes.forget(ROOT, 5);
        assert!(inodes.get(ROOT).is_some(), "the root is never released");
    }

    #[test]
    fn renames_move_everything_below_and_replace_the_target() {
        let mut inodes = Inodes::new();
        let dir = inodes.node_for("x", Kind::Dir);
        let file = inodes.node_for("x/y/z", Kind::File);
        let replaced = inodes.node_for("w", Kind::Dir);
        inodes.looked_up(replaced);
        inodes.set_pending("x/new", true);
        let new = inodes.node_for("x/new", Kind::File);
        inodes.rename("x", "w");
        assert_eq!(inodes.ino_of("w"), Some(dir));
        assert_eq!(inodes.get(file).unwrap().path, "w/y/z");
        assert_eq!(inodes.ino_of("x/y/z"), None);
        assert!(inodes.get(replaced).unwrap().unlinked);
        assert_eq!(
            inodes.pending_in("w"),
            [("new".to_owned(), new, Kind::File)]
        );
        assert!(inodes.pending_in("x").is_empty());
        // A sibling whose name starts the same is not below.
        let sibling = inodes.node_for("w2", Kind::File);
        inodes.rename("w", "v");
        assert_eq!(inodes.get(sibling).unwrap().path, "w2");
    }
}
