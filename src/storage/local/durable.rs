//! Makes written files durable before they are renamed into place, in groups where the
//! file system allows: one `syncfs` covers every file that was written when it started,
//! instead of one `fsync` (and one journal commit) per file.
//!
//! A file waiting for its group holds no thread and no transfer: it is queued, with
//! what follows its sync (its rename), for the one thread that runs the syncs of a root.
//!
//! Invariant: the step after a file's sync is told Ok only once a sync that began after
//! the file was handed over (so after every byte of it was written) has completed
//! without error, or the file's own `fsync` has. A failed group sync says nothing about
//! which file it was; each file of the group then takes its own `fsync`, which names the
//! one that failed.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc;
use std::sync::OnceLock;

/// File systems whose `syncfs` writes back every dirty file and commits their metadata
/// (by `statfs` magic). Elsewhere (FUSE, network file systems, overlays) `syncfs` may do
/// less than a file's `fsync`, so each file takes its own.
const GROUP_SYNCED: [(i64, &str); 4] = [
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
];

/// The least time from one round's start to the next's. Each `syncfs` commits the file
/// system's journal, which holds up every writer while it begins; rounds back to back
/// (a few milliseconds each under a restore of small files) commit for a handful of files
/// at a time. Files wait a little longer, holding no transfer meanwhile, and each round
/// takes more of them.
const ROUND_SPACING: std::time::Duration = std::time::Duration::from_millis(20);

/// What follows a file's sync, told whether the file is on disk.
pub(super) type Then = Box<dyn FnOnce(std::io::Result<()>) + Send>;

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

    /// Makes `file` durable (its bytes and metadata on disk), then calls `then` with the
    /// outcome: at once after its own `fsync`, or from the group's thread once a sync
    /// that began after this call has ended.
    pub(super) fn make_durable(&self, file: File, then: Then) {
        let waiting = Waiting { file, then };
        let waiting = match self.group.get().and_then(Option::as_ref) {
            Some(group) if group.covers(&waiting.file) => match group.queue(waiting) {
                Ok(()) => return,
                // The group's thread is gone: the file is synced here.
                Err(waiting) => waiting,
            },
            _ => waiting,
        };
        waiting.land(Err(()));
    }
}

/// A file waiting for its group's sync.
struct Waiting {
    file: File,
    then: Then,
}

impl Waiting {
    /// Calls what follows with the group's outcome, or after the file's own `fsync`
    /// when the group has none for it.
    fn land(self, group_synced: Result<(), ()>) {
        let synced = match group_synced {
            Ok(()) => Ok(()),
            Err(()) => self.file.sync_all(),
        };
        drop(self.file);
        (self.then)(synced);
    }
}

/// The files waiting for a `syncfs` of the root's file system, and the thread that runs
/// one after another while any wait: each takes every file queued when it begins.
struct GroupSync {
    /// The root's device; a file on another (a file system mounted below the root) is
    /// synced on its own.
    device: u64,
    queue: mpsc::Sender<Waiting>,
}

impl GroupSync {
    fn open(root: &Path) -> Option<Self> {
        if !syncfs_reports_errors(&rustix::system::uname().release().to_string_lossy()) {
            return None;
        }
        // Opened before any file was written: `syncfs` reports every write-back error on
        // the file system since the descriptor was opened.
        let root = File::open(root).ok()?;
        let kind = rustix::fs::fstatfs(&root).ok()?.f_type as i64;
        if !GROUP_SYNCED.iter().any(|&(magic, _)| magic == kind) {
            return None;
        }
        let device = rustix::fs::fstat(&root).ok()?.st_dev;
        let (queue, waiting) = mpsc::channel();
        std::thread::Builder::new()
            .name("s3mirror-sync".to_owned())
            .spawn(move || {
                sync_in_rounds(&waiting, ROUND_SPACING, || {
                    rustix::fs::syncfs(&root).is_ok()
                })
            })
            .ok()?;
        Some(Self { device, queue })
    }

    fn covers(&self, file: &File) -> bool {
        rustix::fs::fstat(file.as_fd()).is_ok_and(|stat| stat.st_dev == self.device)
    }

    /// Queues a file for the next round; gives it back if the thread is gone.
    fn queue(&self, waiting: Waiting) -> Result<(), Waiting> {
        self.queue.send(waiting).map_err(|returned| returned.0)
    }
}

/// Runs rounds while files wait, one beginning no sooner than `spacing` after the one
/// before: each takes every file queued before it begins, syncs the file system once
/// (`sync` says whether without error), and lands them. Ends when the store is dropped,
/// once every file queued has landed.
fn sync_in_rounds(
    waiting: &mpsc::Receiver<Waiting>,
    spacing: std::time::Duration,
    mut sync: impl FnMut() -> bool,
) {
    let mut last_began: Option<std::time::Instant> = None;
    while let Ok(first) = waiting.recv() {
        if let Some(early) = last_began.and_then(|began| spacing.checked_sub(began.elapsed())) {
            std::thread::sleep(early);
        }
        last_began = Some(std::time::Instant::now());
        let round: Vec<Waiting> = std::iter::once(first).chain(waiting.try_iter()).collect();
        let synced = if sync() { Ok(()) } else { Err(()) };
        for file in round {
            file.land(synced);
        }
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

    /// A file of `i` written below `root`, and a `then` that reports its outcome.
    fn written(
        root: &Path,
        i: u8,
        outcomes: &mpsc::Sender<(u8, std::io::Result<()>)>,
    ) -> (File, Then) {
        let mut file = File::create(root.join(format!("f{i}"))).unwrap();
        file.write_all(&[i; 4096]).unwrap();
        let outcomes = outcomes.clone();
        (
            file,
            Box::new(move |synced| outcomes.send((i, synced)).unwrap()),
        )
    }

    #[test]
    fn files_handed_over_at_once_all_land_durable() {
        let root = tempfile::tempdir().unwrap();
        let durability = std::sync::Arc::new(Durability::default());
        durability.prepare(root.path());
        let (outcomes, landed) = mpsc::channel();
        let writers: Vec<_> = (0..16)
            .map(|i| {
                let (durability, outcomes) = (durability.clone(), outcomes.clone());
                let root = root.path().to_path_buf();
                std::thread::spawn(move || {
                    let (file, then) = written(&root, i, &outcomes);
                    durability.make_durable(file, then);
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        drop(outcomes);
        let mut landed: Vec<u8> = landed
            .iter()
            .map(|(i, synced)| synced.map(|()| i).unwrap())
            .collect();
        landed.sort_unstable();
        assert_eq!(landed, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn a_round_takes_every_file_queued_and_a_failed_one_syncs_each_file() {
        let root = tempfile::tempdir().unwrap();
        let (outcomes, landed) = mpsc::channel();
        let (queue, waiting) = mpsc::channel();
        for i in 0..5 {
            let (file, then) = written(root.path(), i, &outcomes);
            queue.send(Waiting { file, then }).unwrap();
        }
        drop(queue);
        let mut rounds = 0;
        sync_in_rounds(&waiting, ROUND_SPACING, || {
            rounds += 1;
            false
        });
        assert_eq!(rounds, 1, "one round for the files queued before it");
        drop(outcomes);
        // Each file's own fsync succeeded where the round's sync did not.
        let landed: Vec<u8> = landed
            .iter()
            .map(|(i, synced)| synced.map(|()| i).unwrap())
            .collect();
        assert_eq!(landed, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn files_queued_while_a_round_is_spaced_share_the_next() {
        let root = tempfile::tempdir().unwrap();
        let (outcomes, landed) = mpsc::channel();
        let (queue, waiting) = mpsc::channel();
        let (began, round_began) = mpsc::channel();
        let spacing = std::time::Duration::from_millis(100);
        let rounds = std::thread::spawn(move || {
            let mut starts = Vec::new();
            sync_in_rounds(&waiting, spacing, || {
                starts.push(std::time::Instant::now());
                let _ = began.send(());
                true
            });
            starts
        });
        let (file, then) = written(root.path(), 0, &outcomes);
        queue.send(Waiting { file, then }).unwrap();
        round_began.recv().unwrap();
        for i in 1..3 {
            let (file, then) = written(root.path(), i, &outcomes);
            queue.send(Waiting { file, then }).unwrap();
        }
        drop(queue);
        let starts = rounds.join().unwrap();
        assert_eq!(
            starts.len(),
            2,
            "the two files queued later share one round"
        );
        assert!(starts[1] - starts[0] >= spacing);
        drop(outcomes);
        assert_eq!(
            landed.iter().filter(|(_, synced)| synced.is_ok()).count(),
            3
        );
    }

    #[test]
    fn each_file_asked_for_is_never_grouped() {
        let root = tempfile::tempdir().unwrap();
        let durability = Durability::each_file();
        durability.prepare(root.path());
        assert!(durability.group.get().unwrap().is_none());
        let (outcomes, landed) = mpsc::channel();
        let (file, then) = written(root.path(), 1, &outcomes);
        durability.make_durable(file, then);
        // Landed before make_durable returned.
        assert!(landed.try_recv().unwrap().1.is_ok());
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
