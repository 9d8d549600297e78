//! Makes written files durable before they are renamed into place, in groups where the
//! file system allows: one `syncfs` covers every file that was written when it started,
//! instead of one `fsync` (and one journal commit) per file.
//!
//! Invariant: `make_durable` returns Ok only once a sync that began after the call
//! (so after every byte of the file was written) has completed without error, or the
//! file's own `fsync` has. A failed group sync says nothing about which file it was; each
//! file of the group then takes its own `fsync`, which names the one that failed.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// File systems whose `syncfs` writes back every dirty file and commits their metadata
/// (by `statfs` magic). Elsewhere (FUSE, network file systems, overlays) `syncfs` may do
/// less than a file's `fsync`, so each file takes its own.
const GROUP_SYNCED: [(i64, &str); 4] = [
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
];

/// How the files written below one root are made durable.
#[derive(Default)]
pub(super) struct Durability {
    /// Found at the first file (the root may not exist before): the group sync, or None
    /// when every file takes its own `fsync`.
    group: OnceLock<Option<GroupSync>>,
}

impl Durability {
    /// Every file takes its own `fsync`.
    pub(super) fn each_file() -> Self {
        Self {
            group: OnceLock::from(None),
        }
    }

    /// Gets ready to make files below `root` durable. Called before the first byte of any
    /// file is written, so that the group sync's descriptor sees every later write error.
    pub(super) fn prepare(&self, root: &Path) {
        self.group.get_or_init(|| GroupSync::open(root));
    }

    /// Returns once `file`'s bytes and metadata are on disk.
    pub(super) fn make_durable(&self, file: &File) -> std::io::Result<()> {
        match self.group.get().and_then(Option::as_ref) {
            Some(group) if group.covers(file) => match group.sync() {
                Ok(()) => Ok(()),
                // The group's sync failed somewhere; this file's own fsync says whether here.
                Err(_) => file.sync_all(),
            },
            _ => file.sync_all(),
        }
    }
}

/// One `syncfs` at a time on the root's file system; a file written while one runs waits
/// for the next, which every file waiting by then shares.
struct GroupSync {
    /// Opened before any file was written: `syncfs` reports every write-back error on the
    /// file system since a descriptor was opened.
    root: File,
    /// The root's device; a file on another (a file system mounted below the root) is
    /// synced on its own.
    device: u64,
    state: Mutex<Rounds>,
    /// Signalled when a round ends.
    ended: Condvar,
}

#[derive(Default)]
struct Rounds {
    /// Rounds begun, and ended; one runs while `ended < begun`.
    begun: u64,
    ended: u64,
    /// The last round whose `syncfs` failed.
    last_failed: Option<u64>,
}

impl GroupSync {
    fn open(root: &Path) -> Option<Self> {
        if !syncfs_reports_errors(&rustix::system::uname().release().to_string_lossy()) {
            return None;
        }
        let root = File::open(root).ok()?;
        let kind = rustix::fs::fstatfs(&root).ok()?.f_type as i64;
        if !GROUP_SYNCED.iter().any(|&(magic, _)| magic == kind) {
            return None;
        }
        let device = rustix::fs::fstat(&root).ok()?.st_dev;
        Some(Self {
            root,
            device,
            state: Mutex::default(),
            ended: Condvar::new(),
        })
    }

    fn covers(&self, file: &File) -> bool {
        rustix::fs::fstat(file.as_fd()).is_ok_and(|stat| stat.st_dev == self.device)
    }

    /// Waits for a round that begins after this call, starting it if none runs; Err if
    /// any round from that one on failed.
    fn sync(&self) -> Result<(), ()> {
        let mut rounds = self.rounds();
        // A round running now may have begun before this file's last write.
        let needed = rounds.begun + 1;
        while rounds.ended < needed {
            if rounds.ended < rounds.begun {
                rounds = self
                    .ended
                    .wait(rounds)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            rounds.begun += 1;
            let round = rounds.begun;
            drop(rounds);
            let synced = rustix::fs::syncfs(&self.root);
            rounds = self.rounds();
            rounds.ended = round;
            if synced.is_err() {
                rounds.last_failed = Some(round);
            }
            self.ended.notify_all();
        }
        match rounds.last_failed {
            Some(failed) if failed >= needed => Err(()),
            _ => Ok(()),
        }
    }

    fn rounds(&self) -> MutexGuard<'_, Rounds> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether the kernel (by its release, `6.1.0-13-amd64`) is 5.8 or later: before it,
/// `syncfs` did not report write-back errors, which only a file's `fsync` would catch.
fn syncfs_reports_errors(release: &str) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (5, 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn files_written_at_once_share_rounds_and_end_durable() {
        let root = tempfile::tempdir().unwrap();
        let durability = std::sync::Arc::new(Durability::default());
        durability.prepare(root.path());
        let writers: Vec<_> = (0..16)
            .map(|i| {
                let (durability, path) = (durability.clone(), root.path().join(format!("f{i}")));
                std::thread::spawn(move || {
                    let mut file = File::create(path).unwrap();
                    file.write_all(&[i as u8; 4096]).unwrap();
                    durability.make_durable(&file).unwrap();
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let Some(group) = durability.group.get().unwrap() else {
            eprintln!("skipped: the temporary directory's file system is not synced in groups");
            return;
        };
        let rounds = group.rounds();
        assert_eq!(rounds.ended, rounds.begun);
        assert!((1..=16).contains(&rounds.ended), "{} rounds", rounds.ended);
        assert_eq!(rounds.last_failed, None);
    }

    #[test]
    fn each_file_asked_for_is_never_grouped() {
        let root = tempfile::tempdir().unwrap();
        let durability = Durability::each_file();
        durability.prepare(root.path());
        assert!(durability.group.get().unwrap().is_none());
        let file = File::create(root.path().join("f")).unwrap();
        durability.make_durable(&file).unwrap();
    }

    #[test]
    fn kernels_before_5_8_sync_each_file() {
        assert!(syncfs_reports_errors("6.1.0-13-amd64"));
        assert!(syncfs_reports_errors("5.8.0"));
        assert!(!syncfs_reports_errors("5.4.0-150-generic"));
        assert!(!syncfs_reports_errors("4.19.0"));
        assert!(!syncfs_reports_errors("unknown"));
    }

    #[test]
    fn a_root_on_an_unknown_file_system_syncs_each_file() {
        // /proc is no file system whose syncfs writes files back.
        assert!(GroupSync::open(Path::new("/proc")).is_none());
    }
}
