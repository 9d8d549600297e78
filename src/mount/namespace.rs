//! Names: lookup and attributes (trusted for the TTL), directory listings, mkdir and
//! rmdir, unlink and symbolic links. Rename is in `rename`, attribute changes in `attrs`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::cache::SMALL_OBJECT;
use super::fs::{errno, Attr, Caller, DirEntry, Errno, Fs, Kind, ROOT};
use super::inodes::{join, split, Listed, Listing};
use super::remote::{ObjectMeta, Remote, StoredAttrs};

impl<R: Remote> Fs<R> {
    /// Records what the server says about a path, and returns its attributes.
    fn record(&self, path: &str, kind: Kind, meta: Option<&ObjectMeta>) -> Attr {
        let mut inodes = self.inodes();
        let ino = inodes.node_for(path, kind);
        let node = inodes.get_mut(ino).expect("just made");
        if node.staged.is_none() {
            node.kind = kind;
            match meta {
                Some(meta) => node.set_meta(meta),
                None if kind == Kind::Dir => {}
                None => node.size = 0,
            }
            node.checked = Some(Instant::now());
        }
        self.attr_of(node, ino)
    }

    /// Records a directory, with what its marker object (if any) says of its mode and
    /// owner.
    fn record_dir(&self, path: &str, marker: Option<ObjectMeta>) -> Attr {
        let attr = self.record(path, Kind::Dir, None);
        let mut inodes = self.inodes();
        let Some(node) = inodes.get_mut(attr.ino) else {
            return attr;
        };
        node.attrs = marker.and_then(|m| m.attrs).unwrap_or_default();
        node.attrs_known = true;
        self.attr_of(node, attr.ino)
    }

    /// Asks the server what `path` is now: a directory (any key below it) or an object.
    async fn stat_path(&self, path: &str) -> Result<Attr, Errno> {
        let (dir_key, key) = (self.dir_key(path), self.key(path));
        let (dir, file) = futures::join!(self.remote.first_key(&dir_key), self.remote.head(&key));
        if let Some(first) = dir.map_err(errno)? {
            let marker = match first == dir_key {
                true => self.remote.head(&dir_key).await.map_err(errno)?,
                false => None,
            };
            return Ok(self.record_dir(path, marker));
        }
        match file.map_err(errno)? {
            Some(meta) => {
                let kind = match meta.attrs.as_ref().is_some_and(StoredAttrs::is_symlink) {
                    true => Kind::Symlink,
                    false => Kind::File,
                };
                Ok(self.record(path, kind, Some(&meta)))
            }
            None => Err(Errno::NOENT),
        }
    }

    /// What `path` is, from what is fresh enough, asking the server otherwise.
    async fn resolve(&self, parent_path: &str, path: &str) -> Result<Attr, Errno> {
        let ttl = self.settings.ttl;
        let listed = {
            let inodes = self.inodes();
            if let Some(ino) = inodes.ino_of(path) {
                let node = inodes.get(ino).expect("named nodes exist");
                if node.is_fresh(ttl) && node.attrs_known {
                    return Ok(self.attr_of(node, ino));
                }
            }
            let (_, name) = split(path);
            match inodes.listing(parent_path, ttl) {
                Some(listing) => match listing.entries.get(name) {
                    None => return Err(Errno::NOENT),
                    Some(listed) => Some((listed.clone(), listing.at)),
                },
                None => None,
            }
        };
        match listed {
            Some((listed, _)) if listed.kind == Kind::Dir => {
                let known = self.inodes().node_at(path).is_some_and(|n| n.attrs_known);
                match known {
                    true => Ok(self.record(path, Kind::Dir, None)),
                    // A marker keeps the directory's mode and owner (s3fs writes them).
                    false => {
                        let marker = self.remote.head(&self.dir_key(path)).await.map_err(errno)?;
                        Ok(self.record_dir(path, marker))
                    }
                }
            }
            Some((
                Listed {
                    meta: Some(meta), ..
                },
                at,
            )) => {
                // The listing gave size and ETag; the metadata is known if this version
                // was asked about before.
                let known = {
                    let mut inodes = self.inodes();
                    let ino = inodes.node_for(path, Kind::File);
                    let node = inodes.get_mut(ino).expect("just made");
                    node.set_meta(&meta);
                    node.attrs_known.then(|| {
                        node.checked = Some(at);
                        self.attr_of(node, ino)
                    })
                };
                match known {
                    Some(attr) => Ok(attr),
                    None => self.fetch_listed(path, &meta).await,
                }
            }
            _ => self.stat_path(path).await,
        }
    }

    /// Asks about a listed object whose metadata is not known yet. A small one is
    /// fetched whole: the answer carries the metadata, and its bytes go to the cache, so
    /// a cold read of a small file costs this one request.
    async fn fetch_listed(&self, path: &str, listed: &ObjectMeta) -> Result<Attr, Errno> {
        let key = self.key(path);
        let (meta, body) = if listed.size <= SMALL_OBJECT {
            match self.remote.get_whole(&key).await.map_err(errno)? {
                Some((meta, body)) => (meta, Some(body)),
                None => return Err(Errno::NOENT),
            }
        } else {
            match self.remote.head(&key).await.map_err(errno)? {
                Some(meta) => (meta, None),
                None => return Err(Errno::NOENT),
            }
        };
        if let Some(body) = body {
            self.cache.insert_whole(&key, &meta.etag, body);
        }
        let kind = match meta.attrs.as_ref().is_some_and(StoredAttrs::is_symlink) {
            true => Kind::Symlink,
            false => Kind::File,
        };
        Ok(self.record(path, kind, Some(&meta)))
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, Errno> {
        let attr = self.peek(parent, name).await?;
        self.inodes().looked_up(attr.ino);
        Ok(attr)
    }

    /// A lookup that gives the kernel no reference (for checks inside operations).
    pub(super) async fn peek(&self, parent: u64, name: &str) -> Result<Attr, Errno> {
        let path = self.child_path(parent, name)?;
        let (parent_path, _) = self.path_of(parent)?;
        self.resolve(&parent_path, &path).await
    }

    /// What the server says now, whatever is cached (for O_EXCL).
    pub(super) async fn exists_now(&self, path: &str) -> Result<bool, Errno> {
        match self.stat_path(path).await {
            Ok(_) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(err) => Err(err),
        }
    }

    pub fn forget(&self, ino: u64, count: u64) {
        let mut inodes = self.inodes();
        let before = inodes.len();
        inodes.forget(ino, count);
        if inodes.len() < before && inodes.released_many() {
            tracing::debug!("{} inodes held after the kernel's forgets", inodes.len());
            inodes.drop_stale_listings(self.settings.ttl);
            drop(inodes);
            give_back_memory();
        }
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        let (path, fresh) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(Errno::NOENT)?;
            if ino == ROOT || node.unlinked || node.is_fresh(self.settings.ttl) {
                return Ok(self.attr_of(node, ino));
            }
            (node.path.clone(), false)
        };
        debug_assert!(!fresh);
        self.stat_path(&path).await
    }

    /// Every entry of a directory, `.` and `..` first, as the server lists it now (plus
    /// files created here and not yet uploaded). The listing answers lookups for the TTL.
    pub async fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, Errno> {
        let (path, kind) = self.path_of(ino)?;
        if kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        let listing = self
            .remote
            .list(&self.dir_key(&path))
            .await
            .map_err(errno)?;
        let usable = |name: &str| !name.is_empty() && name != "." && name != "..";
        let mut entries = vec![
            DirEntry {
                ino,
                name: ".".into(),
                kind: Kind::Dir,
            },
            DirEntry {
                ino,
                name: "..".into(),
                kind: Kind::Dir,
            },
        ];
        let mut inodes = self.inodes();
        let mut listed = std::collections::HashMap::new();
        for name in listing.dirs.into_iter().filter(|n| usable(n)) {
            let ino = inodes.ino_for_listed(&join(&path, &name));
            let entry = Listed {
                kind: Kind::Dir,
                meta: None,
                ino,
            };
            listed.insert(name, entry);
        }
        for (name, meta) in listing.files.into_iter().filter(|(n, _)| usable(n)) {
            if listed.contains_key(&name) {
                continue; // A directory shadows a file of the same name.
            }
            let child = join(&path, &name);
            let ino = inodes.ino_for_listed(&child);
            let mut kind = Kind::File;
            if let Some(node) = inodes.get_mut(ino).filter(|n| n.staged.is_none()) {
                node.set_meta(&meta);
                kind = node.kind;
            }
            listed.insert(
                name,
                Listed {
                    kind,
                    meta: Some(meta),
                    ino,
                },
            );
        }
        for (name, ino, kind) in inodes.pending_in(&path) {
            listed.entry(name).or_insert(Listed {
                kind,
                meta: None,
                ino,
            });
        }
        entries.extend(listed.iter().map(|(name, l)| DirEntry {
            ino: l.ino,
            name: name.clone(),
            kind: l.kind,
        }));
        let listing = Listing {
            at: Instant::now(),
            entries: listed,
        };
        inodes.store_listing(&path, listing, self.settings.ttl);
        Ok(entries)
    }

    /// Lists a directory once for a reader, who then takes the entries in pieces.
    pub async fn opendir(&self, ino: u64) -> Result<u64, Errno> {
        let entries = self.readdir(ino).await?;
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dirs
            .lock()
            .expect("dirs lock")
            .insert(fh, Arc::new(entries));
        Ok(fh)
    }

    pub fn dir_entries(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        self.dirs
            .lock()
            .expect("dirs lock")
            .get(&fh)
            .cloned()
            .ok_or(Errno::BADF)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().expect("dirs lock").remove(&fh);
    }

    /// The path of a name about to be made: refused on a read-only mount, or when the
    /// name is taken.
    pub(super) async fn new_name(&self, parent: u64, name: &str) -> Result<String, Errno> {
        self.refuse_if_read_only()?;
        let path = self.child_path(parent, name)?;
        match self.peek(parent, name).await {
            Ok(_) => Err(Errno::EXIST),
            Err(Errno::NOENT) => Ok(path),
            Err(err) => Err(err),
        }
    }

    /// Records an object just written by this mount (the server said yes to these
    /// bytes and attributes), and returns its attributes.
    fn record_written(
        &self,
        path: &str,
        kind: Kind,
        size: u64,
        etag: String,
        attrs: StoredAttrs,
    ) -> Attr {
        let meta = ObjectMeta {
            size,
            last_modified: SystemTime::now(),
            etag,
            attrs: Some(attrs),
        };
        let attr = self.record(path, kind, Some(&meta));
        let mut inodes = self.inodes();
        inodes.looked_up(attr.ino);
        inodes.note_written(path, kind, Some(meta));
        if kind == Kind::Dir {
            inodes.note_new_dir(path);
        }
        attr
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> Result<Attr, Errno> {
        let path = self.new_name(parent, name).await?;
        let attrs = self.new_attrs(Kind::Dir, mode, caller);
        let etag = self
            .remote
            .put(&self.dir_key(&path), Vec::new(), &attrs)
            .await
            .map_err(errno)?;
        Ok(self.record_written(&path, Kind::Dir, 0, etag, attrs))
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> Result<Attr, Errno> {
        let path = self.new_name(parent, name).await?;
        let attrs = self.new_attrs(Kind::Symlink, 0o777, caller);
        let body = target.as_bytes().to_vec();
        let size = body.len() as u64;
        let etag = self
            .remote
            .put(&self.key(&path), body, &attrs)
            .await
            .map_err(errno)?;
        Ok(self.record_written(&path, Kind::Symlink, size, etag, attrs))
    }

    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, Errno> {
        let attr = self.getattr(ino).await?;
        if attr.kind != Kind::Symlink {
            return Err(Errno::INVAL);
        }
        let (key, etag) = {
            let inodes = self.inodes();
            let node = inodes.get(ino).ok_or(Errno::NOENT)?;
            (self.key(&node.path), node.etag.clone())
        };
        let mut target = Vec::new();
        if attr.size > 0 {
            self.remote
                .get_range(&key, &etag, 0, attr.size, &mut |piece| {
                    target.extend_from_slice(piece);
                    Ok(())
                })
                .await
                .map_err(errno)?;
        }
        Ok(target)
    }

    /// Removes an empty directory (its marker object, if any).
    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<(), Errno> {
        self.refuse_if_read_only()?;
        let path = self.child_path(parent, name)?;
        let attr = self.peek(parent, name).await?;
        if attr.kind != Kind::Dir {
            return Err(Errno::NOTDIR);
        }
        let marker = self.dir_key(&path);
        if !self.is_empty_dir(&path).await? {
            return Err(Errno::NOTEMPTY);
        }
        self.remote.delete(&marker).await.map_err(errno)?;
        self.inodes().unlink(&path);
        Ok(())
    }

    pub(super) async fn is_empty_dir(&self, path: &str) -> Result<bool, Errno> {
        if !self.inodes().pending_in(path).is_empty() {
            return Ok(false);
        }
        let listing = self.remote.list(&self.dir_key(path)).await.map_err(errno)?;
        Ok(listing.dirs.is_empty() && listing.files.iter().all(|(name, _)| name.is_empty()))
    }

    /// Deletes a file's object. A file still open stays readable and writable through
    /// its descriptors, and is not uploaded again.
    pub async fn unlink(&self, parent: u64, name: &str) -> Result<(), Errno> {
        self.refuse_if_read_only()?;
        let path = self.child_path(parent, name)?;
        let attr = self.peek(parent, name).await?;
        if attr.kind == Kind::Dir {
            return Err(Errno::ISDIR);
        }
        let pending = self
            .inodes()
            .node_at(&path)
            .is_some_and(|n| n.staged.is_some());
        match self.remote.delete(&self.key(&path)).await {
            Ok(()) => {}
            Err(err) if pending && err.kind == super::remote::ErrorKind::NotFound => {}
            Err(err) => return Err(errno(err)),
        }
        self.inodes().unlink(&path);
        Ok(())
    }
}

/// Returns freed heap to the system after many nodes went: the allocator keeps it
/// otherwise, and the mount's RSS would stay at its peak after the kernel forgot a walk.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // libc, not rustix: malloc_trim is glibc's allocator, not a system call.
    // SAFETY: malloc_trim only releases free memory at the heap's top and in its bins.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::mount::fs::testing::{fs, names, read_file, write_file, ME};
    use crate::mount::remote::memory::MemoryRemote;

    #[tokio::test]
    async fn prefixes_are_directories_and_names_are_kept_as_they_are() {
        let remote = Arc::new(MemoryRemote::default());
        for key in [
            "m/a",
            "m/a/b",
            "m/d/ü é 🎉.txt",
            "m/empty/",
            "m/x%20y",
            "other/z",
        ] {
            remote.insert(key, b"data");
        }
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        assert_eq!(
            names(&fs, ROOT).await,
            [
                ("a".to_owned(), Kind::Dir),
                ("d".to_owned(), Kind::Dir),
                ("empty".to_owned(), Kind::Dir),
                ("x%20y".to_owned(), Kind::File)
            ]
        );
        let d = fs.lookup(ROOT, "d").await.unwrap();
        assert_eq!(read_file(&fs, d.ino, "ü é 🎉.txt").await, b"data");
        let empty = fs.lookup(ROOT, "empty").await.unwrap();
        assert!(
            names(&fs, empty.ino).await.is_empty(),
            "the marker is not a file"
        );
        assert_eq!(fs.lookup(ROOT, "nope").await, Err(Errno::NOENT));
    }

    #[tokio::test]
    async fn symlinks_are_objects_holding_their_target() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let link = fs.symlink(ROOT, "link", "../target", ME).await.unwrap();
        assert_eq!(link.kind, Kind::Symlink);
        assert_eq!(remote.get("m/link").unwrap(), b"../target");
        assert!(remote.attrs("m/link").unwrap().is_symlink());
        assert_eq!(fs.readlink(link.ino).await.unwrap(), b"../target");
        // Another mount sees it as a link too.
        let (other, _dir) = super::super::fs::testing::fs(&remote, Duration::from_secs(1));
        let seen = other.lookup(ROOT, "link").await.unwrap();
        assert_eq!(seen.kind, Kind::Symlink);
        assert_eq!(other.readlink(seen.ino).await.unwrap(), b"../target");
    }

    #[tokio::test]
    async fn changes_by_others_show_after_the_ttl() {
        let remote = Arc::new(MemoryRemote::default());
        let (fs, _dir) = fs(&remote, Duration::from_millis(200));
        assert!(names(&fs, ROOT).await.is_empty());
        remote.insert("m/new", b"from elsewhere");
        // Within the TTL the fresh listing answers; after it, the server does.
        assert_eq!(fs.lookup(ROOT, "new").await, Err(Errno::NOENT));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(fs.lookup(ROOT, "new").await.unwrap().size, 14);
        remote.insert("m/new", b"changed");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(read_file(&fs, ROOT, "new").await, b"changed");

        fs.unlink(ROOT, "new").await.unwrap();
        assert!(remote.get("m/new").is_none());
        let dir = fs.mkdir(ROOT, "dir", 0o755, ME).await.unwrap();
        assert_eq!(remote.get("m/dir/").unwrap(), b"");
        write_file(&fs, dir.ino, "inside", b"").await;
        assert_eq!(fs.rmdir(ROOT, "dir").await, Err(Errno::NOTEMPTY));
        fs.unlink(dir.ino, "inside").await.unwrap();
        fs.rmdir(ROOT, "dir").await.unwrap();
        assert!(remote.keys().is_empty());
    }

    #[tokio::test]
    async fn a_listed_object_whose_metadata_is_known_needs_no_request() {
        let remote = Arc::new(MemoryRemote::default());
        remote.insert("m/f", b"x");
        let (fs, _dir) = fs(&remote, Duration::from_secs(60));
        fs.lookup(ROOT, "f").await.unwrap();
        names(&fs, ROOT).await;
        let before = remote.request_count();
        fs.lookup(ROOT, "f").await.unwrap();
        assert_eq!(fs.lookup(ROOT, "g").await, Err(Errno::NOENT));
        assert_eq!(remote.request_count(), before);
    }

    #[tokio::test]
    async fn a_cold_read_of_a_small_listed_file_costs_one_request() {
        let remote = Arc::new(MemoryRemote::default());
        remote.insert("m/small", b"tiny");
        remote.insert("m/big", &[7; 100 << 10]);
        let (fs, _dir) = fs(&remote, Duration::from_secs(60));
        names(&fs, ROOT).await;
        let before = remote.request_count();
        assert_eq!(read_file(&fs, ROOT, "small").await, b"tiny");
        assert_eq!(
            remote.request_count() - before,
            1,
            "one GetObject, no HeadObject"
        );
        let before = remote.request_count();
        assert_eq!(read_file(&fs, ROOT, "big").await.len(), 100 << 10);
        assert_eq!(
            remote.request_count() - before,
            2,
            "a HeadObject and a GetObject"
        );
    }

    #[tokio::test]
    async fn forgotten_inodes_are_released() {
        let remote = Arc::new(MemoryRemote::default());
        for i in 0..50 {
            remote.insert(&format!("m/d/f{i}"), b"x");
        }
        let (fs, _dir) = fs(&remote, Duration::from_secs(1));
        let d = fs.lookup(ROOT, "d").await.unwrap();
        let mut inos = Vec::new();
        for i in 0..50 {
            inos.push(fs.lookup(d.ino, &format!("f{i}")).await.unwrap().ino);
        }
        assert_eq!(fs.node_count(), 52);
        for ino in inos {
            fs.forget(ino, 1);
        }
        fs.forget(d.ino, 1);
        assert_eq!(fs.node_count(), 1);
    }
}
