//! A depth-first walk of a directory tree that yields files in S3 key order.
//!
//! S3 lists keys in UTF-8 byte order of the whole key, so within one directory a
//! subdirectory `a` must sort as `a/`: after `a.b` and `a-b`, whose next byte is lower
//! than `/`. Each directory is read and sorted on its own; only the directories on
//! the current path are held, so memory grows with depth and directory width, never
//! with the size of the tree.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::links::{link_entry, LinkMode, LINK_SUFFIX};
use super::TEMP_PREFIX;
use crate::storage::{Entry, KeyRange, ListError, ListItem, Skip};

/// One name in a directory, with `/` appended for directories (the S3 sort key).
struct Child {
    component: String,
    is_dir: bool,
    is_link: bool,
}

struct Frame {
    dir: PathBuf,
    /// Key prefix of this directory: empty at the root, else ending with `/`.
    prefix: String,
    children: std::vec::IntoIter<Child>,
    /// (device, inode) of this directory, to stop at symlink loops.
    id: (u64, u64),
}

/// Names that cannot be keys, found while reading a directory.
type Unlistable = Vec<ListError>;

/// Walks `root` and sends every regular file as an entry; blocking, so run it on a
/// blocking thread. Stops early when the receiver goes away. Symbolic links are followed
/// (`LinkMode::Follow`), where a link that leads nowhere or back into the walk is sent as
/// an entry to pass over (`Skip`), never a failure; passed over every one
/// (`LinkMode::Skip`); or sent as themselves, `NAME.rclonelink` (`LinkMode::Store`).
pub fn walk(root: &Path, range: &KeyRange, links: LinkMode, tx: &mpsc::Sender<ListItem>) {
    let root_meta = match fs::metadata(root) {
        Ok(meta) => meta,
        // A destination that does not exist yet (as in a dry run) is empty.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(err) => {
            let _ = tx.blocking_send(Err(ListError::Fatal(format!("{}: {err}", root.display()))));
            return;
        }
    };
    let mut on_path: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = Vec::new();
    match open_frame(root.to_path_buf(), String::new(), &root_meta, links) {
        Ok((frame, unlistable)) => {
            on_path.insert(frame.id);
            stack.push(frame);
            if !unlistable.into_iter().all(|err| send(tx, Err(err))) {
                return;
            }
        }
        Err(err) => {
            let _ = tx.blocking_send(Err(ListError::Fatal(format!("{}: {err}", root.display()))));
            return;
        }
    }

    while let Some(frame) = stack.last_mut() {
        let Some(child) = frame.children.next() else {
            let done = stack.pop().expect("frame on the stack");
            on_path.remove(&done.id);
            continue;
        };
        let key = format!("{}{}", frame.prefix, child.component);
        if range.is_past(&key) {
            return;
        }
        if child.is_dir && !range.may_hold_prefix(&key) {
            continue;
        }
        let name = match child.is_link && links == LinkMode::Store {
            true => child
                .component
                .strip_suffix(LINK_SUFFIX)
                .unwrap_or(&child.component),
            false => child.component.trim_end_matches('/'),
        };
        let path = frame.dir.join(name);
        let listed = match links {
            _ if !child.is_link => None,
            LinkMode::Follow => None,
            LinkMode::Skip => Some(Ok(passed_over(key.clone(), &path, Skip::Link))),
            LinkMode::Store => {
                Some(link_entry(key.clone(), &path).map_err(|e| entry_error(&path, e)))
            }
        };
        if let Some(item) = listed {
            if !send(tx, item) {
                return;
            }
            continue;
        }
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(err) if child.is_link => {
                let why = match rustix::io::Errno::from_io_error(&err) {
                    Some(rustix::io::Errno::LOOP) => Skip::LinkLoop,
                    _ => Skip::DanglingLink,
                };
                if !send(tx, Ok(passed_over(key, &path, why))) {
                    return;
                }
                continue;
            }
            Err(err) => {
                if !send(tx, Err(entry_error(&path, err))) {
                    return;
                }
                continue;
            }
        };
        let item = if child.is_dir {
            if meta.is_dir() {
                match open_frame(path.clone(), key.clone(), &meta, links) {
                    Ok((next, _)) if on_path.contains(&next.id) => {
                        // Keyed with its `/`, where it sorts among its siblings.
                        if !send(tx, Ok(passed_over(key, &path, Skip::LinkLoop))) {
                            return;
                        }
                        continue;
                    }
                    // An empty directory is listed as its folder marker (`name/`), so
                    // that it round-trips through a bucket.
                    Ok((next, unlistable)) if next.children.len() == 0 && unlistable.is_empty() => {
                        Ok(Entry {
                            key,
                            size: 0,
                            mtime: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                            etag: None,
                            skip: None,
                            storage_class: None,
                            version: None,
                        })
                    }
                    Ok((next, unlistable)) => {
                        on_path.insert(next.id);
                        stack.push(next);
                        if !unlistable.into_iter().all(|err| send(tx, Err(err))) {
                            return;
                        }
                        continue;
                    }
                    Err(err) => Err(entry_error(&path, err)),
                }
            } else {
                continue;
            }
        } else if meta.is_file() {
            Ok(Entry {
                key,
                size: meta.len(),
                mtime: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                etag: None,
                skip: None,
                storage_class: None,
                version: None,
            })
        } else {
            tracing::warn!("{}: not a regular file, skipped", path.display());
            continue;
        };
        if !send(tx, item) {
            return;
        }
    }
}

/// An entry for a link that is passed over (the planner warns about it and counts it).
fn passed_over(key: String, path: &Path, why: Skip) -> Entry {
    tracing::debug!("{}: {}", path.display(), why.reason());
    Entry {
        key,
        size: 0,
        mtime: std::time::UNIX_EPOCH,
        etag: None,
        skip: Some(why),
        storage_class: None,
        version: None,
    }
}

fn send(tx: &mpsc::Sender<ListItem>, item: ListItem) -> bool {
    tx.blocking_send(item).is_ok()
}

fn entry_error(path: &Path, err: impl std::fmt::Display) -> ListError {
    ListError::Entry {
        path: path.display().to_string(),
        cause: err.to_string(),
    }
}

fn open_frame(
    dir: PathBuf,
    prefix: String,
    meta: &fs::Metadata,
    links: LinkMode,
) -> std::io::Result<(Frame, Unlistable)> {
    let (children, unlistable) = read_sorted(&dir, links)?;
    let frame = Frame {
        dir,
        prefix,
        children: children.into_iter(),
        id: (meta.dev(), meta.ino()),
    };
    Ok((frame, unlistable))
}

/// The names in one directory in S3 key order, directories with `/` appended; names
/// that cannot be keys are left out.
pub fn names_in(dir: &Path) -> std::io::Result<Vec<String>> {
    let (children, _) = read_sorted(dir, LinkMode::Follow)?;
    Ok(children.into_iter().map(|c| c.component).collect())
}

/// Reads one directory and sorts it by S3 key order. Names that are not UTF-8 cannot be
/// keys: they are returned as errors for the listing to report, never dropped silently.
/// A link kept as an object sorts by its key, `NAME.rclonelink`.
fn read_sorted(dir: &Path, links: LinkMode) -> std::io::Result<(Vec<Child>, Unlistable)> {
    let mut children = Vec::new();
    let mut unlistable = Vec::new();
    for dirent in fs::read_dir(dir)? {
        let dirent = dirent?;
        let Ok(name) = dirent.file_name().into_string() else {
            let cause = "the file name is not valid UTF-8, so it cannot be an S3 key";
            unlistable.push(entry_error(&dirent.path(), cause));
            continue;
        };
        if name.starts_with(TEMP_PREFIX) {
            // Ours; one left by a killed run is removed, so none piles up.
            if super::write::is_orphaned_temp(&name) {
                match fs::remove_file(dirent.path()) {
                    Ok(()) => {
                        tracing::info!("removed {}, left by a killed run", dirent.path().display())
                    }
                    Err(err) => tracing::warn!(
                        "removing {}, left by a killed run: {err}",
                        dirent.path().display()
                    ),
                }
            }
            continue;
        }
        let file_type = dirent.file_type()?;
        let is_dir = match file_type.is_symlink() {
            true if links == LinkMode::Store => false,
            true => fs::metadata(dirent.path()).is_ok_and(|m| m.is_dir()),
            false => file_type.is_dir(),
        };
        let component = match (is_dir, file_type.is_symlink() && links == LinkMode::Store) {
            (true, _) => format!("{name}/"),
            (false, true) => format!("{name}{LINK_SUFFIX}"),
            (false, false) => name,
        };
        children.push(Child {
            component,
            is_dir,
            is_link: file_type.is_symlink(),
        });
    }
    children.sort_unstable_by(|a, b| a.component.as_bytes().cmp(b.component.as_bytes()));
    Ok((children, unlistable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(root: &Path) -> Vec<String> {
        keys_in(root, &KeyRange::default())
    }

    fn keys_in(root: &Path, range: &KeyRange) -> Vec<String> {
        entries(root, range, LinkMode::Follow)
            .into_iter()
            .filter(|e| e.skip.is_none())
            .map(|e| e.key)
            .collect()
    }

    fn entries(root: &Path, range: &KeyRange, links: LinkMode) -> Vec<Entry> {
        let (tx, mut rx) = mpsc::channel(1024);
        walk(root, range, links, &tx);
        drop(tx);
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            out.push(item.unwrap());
        }
        out
    }

    #[test]
    fn yields_files_in_s3_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            "a/b", "a.b", "a-b", "a0", "b/c/d", "B", "ü", "u", "a/a/z", "e",
        ] {
            let full = dir.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, path).unwrap();
        }
        fs::create_dir(dir.path().join("empty")).unwrap();
        let got = keys(dir.path());
        let mut want = got.clone();
        want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(got, want);
        assert_eq!(
            got,
            ["B", "a-b", "a.b", "a/a/z", "a/b", "a0", "b/c/d", "e", "empty/", "u", "ü"],
            "an empty directory is listed as its folder marker"
        );
    }

    #[test]
    fn skips_temporary_files_and_passes_over_links_that_lead_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), "x").unwrap();
        fs::write(dir.path().join(format!("d/{TEMP_PREFIX}1")), "partial").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("d/loop")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("d/gone")).unwrap();
        std::os::unix::fs::symlink("f", dir.path().join("d/to-f")).unwrap();
        let walked: Vec<(String, Option<Skip>)> =
            entries(dir.path(), &KeyRange::default(), LinkMode::Follow)
                .into_iter()
                .map(|e| (e.key, e.skip))
                .collect();
        assert_eq!(
            walked,
            [
                ("d/f".to_owned(), None),
                ("d/gone".to_owned(), Some(Skip::DanglingLink)),
                ("d/loop/".to_owned(), Some(Skip::LinkLoop)),
                ("d/to-f".to_owned(), None),
            ]
        );
        let unfollowed: Vec<Option<Skip>> =
            entries(dir.path(), &KeyRange::default(), LinkMode::Skip)
                .into_iter()
                .map(|e| e.skip)
                .collect();
        assert_eq!(
            unfollowed,
            [None, Some(Skip::Link), Some(Skip::Link), Some(Skip::Link)]
        );
    }

    #[test]
    fn links_kept_as_objects_are_listed_as_themselves_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        fs::write(dir.path().join("d/f"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("d/loop")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("d/gone")).unwrap();
        // Sorts by its key: `d/e.rclonelink` after `d/e-`, before `d/e/`.
        std::os::unix::fs::symlink("f", dir.path().join("d/e")).unwrap();
        fs::write(dir.path().join("d/e-"), "y").unwrap();
        let walked: Vec<(String, u64, Option<Skip>)> =
            entries(dir.path(), &KeyRange::default(), LinkMode::Store)
                .into_iter()
                .map(|e| (e.key, e.size, e.skip))
                .collect();
        let root_len = dir.path().as_os_str().len() as u64;
        assert_eq!(
            walked,
            [
                ("d/e-".to_owned(), 1, None),
                ("d/e.rclonelink".to_owned(), 1, None),
                ("d/f".to_owned(), 1, None),
                ("d/gone.rclonelink".to_owned(), 7, None),
                ("d/loop.rclonelink".to_owned(), root_len, None),
            ]
        );
    }

    #[test]
    fn temporary_files_of_dead_processes_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Pid 0 on this host and boot: never a running s3mirror.
        let (host, boot) = crate::liveness::machine();
        let dead = dir
            .path()
            .join(format!("{TEMP_PREFIX}0-0@{host}_{boot}.1.ab"));
        let live = dir
            .path()
            .join(format!("{TEMP_PREFIX}{}.1.ab", crate::liveness::owner_id()));
        fs::write(&dead, "left by a killed run").unwrap();
        fs::write(&live, "being written").unwrap();
        assert!(keys(dir.path()).is_empty());
        assert!(!dead.exists(), "removed");
        assert!(live.exists(), "a running process's file stays");
    }

    #[test]
    fn a_missing_root_is_an_empty_listing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(keys(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn a_range_prunes_directories_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["a/1", "b/1", "b/2", "c", "d/1"] {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let range = KeyRange {
            start: Some("b/".into()),
            end: Some("c0".into()),
        };
        // The walk leaves out a/ and stops at d/; the listing filter trims the rest.
        assert_eq!(keys_in(dir.path(), &range), ["b/1", "b/2", "c"]);
    }
}
