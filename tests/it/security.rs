//! What s3mirror leaves on the local disk, as root: private modes for everything it makes
//! for itself while a mount and a download run, no file written through a link planted
//! in its place, nothing left behind by a clean unmount, and nothing another user can
//! read.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::garage::garage;
use crate::{s3mirror, s3mirror_command, state_dir, write_tree, Run};

/// Every directory and file below `root`, with its permission bits.
fn modes_below(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.path().symlink_metadata().unwrap();
            out.push((entry.path(), meta.is_dir(), meta.mode() & 0o7777));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out
}

fn assert_private(root: &Path) {
    let found = modes_below(root);
    assert!(!found.is_empty(), "nothing below {}", root.display());
    for (path, is_dir, mode) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} has mode {mode:o}", path.display());
    }
}

/// Runs `cat PATH` as user nobody; whether it could read the file.
fn nobody_can_read(path: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

#[test]
fn a_mount_keeps_its_cache_staging_state_and_log_private_and_leaves_nothing() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("private-mount"));
    let work = tempfile::tempdir().unwrap();
    let cached: Vec<u8> = (0..2 << 20).map(|i: u32| (i % 253) as u8).collect();
    write_tree(
        &work.path().join("src"),
        &[("cached.bin".into(), cached.clone())],
    );
    let url = format!("s3://{bucket}");
    s3mirror(&[work.path().join("src").to_str().unwrap(), &url]).assert_code(0);

    // A cache directory others may enter, and a temporary directory of its own.
    let cache_dir = work.path().join("cache");
    let tmp = work.path().join("tmp");
    for dir in [&cache_dir, &tmp] {
        std::fs::create_dir(dir).unwrap();
        std::fs::set_permissions(dir, PermissionsExt::from_mode(0o777)).unwrap();
    }
    let mountpoint = work.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let mountpoint = mountpoint.canonicalize().unwrap();
    let args = [
        "mount",
        &url,
        mountpoint.to_str().unwrap(),
        "--cache-dir",
        cache_dir.to_str().unwrap(),
        "--part-size",
        "5MiB",
    ];
    let started = Run::from(
        s3mirror_command(&args)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap(),
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mountpoint);
    started.assert_code(0);
    assert!(
        started.stderr.contains("open to other users"),
        "{}",
        started.stderr
    );
    let log = started
        .stderr
        .split("messages in ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no log named in {}", started.stderr));
    assert!(
        log.starts_with(state_dir()),
        "{} is in the state directory",
        log.display()
    );
    assert_eq!(log.symlink_metadata().unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        log.parent().unwrap().metadata().unwrap().mode() & 0o777,
        0o700
    );

    // Cached bytes, a file being staged, and a multipart upload in the journal.
    assert_eq!(
        std::fs::read(mountpoint.join("cached.bin")).unwrap(),
        cached
    );
    let mut staged = std::fs::File::create(mountpoint.join("staged.txt")).unwrap();
    staged.write_all(b"not yet in the bucket").unwrap();
    let mut big = std::fs::File::create(mountpoint.join("big.bin")).unwrap();
    big.write_all(&vec![1; 12 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let own: Vec<PathBuf> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(own.len(), 1, "one directory of the mount's own: {own:?}");
    assert_private(&own[0]);
    let files: Vec<PathBuf> = modes_below(&own[0])
        .into_iter()
        .filter(|(_, is_dir, _)| !is_dir)
        .map(|(path, _, _)| path)
        .collect();
    assert!(files.iter().any(|p| p.to_string_lossy().contains("/read/")));
    assert!(files
        .iter()
        .any(|p| p.to_string_lossy().contains("/staging/")));
    for file in &files {
        assert!(
            !nobody_can_read(file),
            "{} is readable by nobody",
            file.display()
        );
    }
    // Journals name buckets and keys.
    let journals = state_dir().join("uploads");
    assert_eq!(journals.metadata().unwrap().mode() & 0o777, 0o700);
    assert!(!modes_below(&journals).is_empty());
    assert_private(&journals);

    drop((staged, big));
    let status = Command::new("umount").arg(&mountpoint).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while log.exists() || std::fs::read_dir(&cache_dir).unwrap().next().is_some() {
        assert!(
            Instant::now() < deadline,
            "the log or the cache is left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "nothing in TMPDIR"
    );

    // Without --cache-dir the cache is a private directory in TMPDIR, gone at unmount.
    let args = ["mount", &url, mountpoint.to_str().unwrap()];
    let started = Run::from(
        s3mirror_command(&args)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap(),
    );
    started.assert_code(0);
    assert_eq!(
        std::fs::read(mountpoint.join("cached.bin")).unwrap(),
        cached
    );
    let own: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    assert_private(&own[0]);
    assert!(Command::new("umount")
        .arg(&mountpoint)
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&tmp).unwrap().next().is_some() {
        assert!(Instant::now() < deadline, "the cache is left in TMPDIR");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn downloads_are_private_until_checked_and_never_written_through_a_planted_link() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("private-download"));
    let work = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..6 << 20).map(|i: u32| (i % 241) as u8).collect();
    write_tree(
        &work.path().join("src"),
        &[
            ("planted.txt".into(), b"from the bucket".to_vec()),
            ("big.bin".into(), big.clone()),
        ],
    );
    let url = format!("s3://{bucket}");
    s3mirror(&[work.path().join("src").to_str().unwrap(), &url]).assert_code(0);

    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let victim = work.path().join("victim");
    std::fs::write(&victim, b"must stay").unwrap();
    std::os::unix::fs::symlink(&victim, dest.join("planted.txt")).unwrap();

    // Slowed down, so the temporary file can be seen while its bytes arrive.
    let mut child = s3mirror_command(&[&url, dest.to_str().unwrap(), "--max-bandwidth", "2MiB"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let temp_mode = loop {
        // The big object's, half-way: its bytes cannot have been checked yet (a finished
        // small one takes its final mode just before its rename).
        let temp = std::fs::read_dir(&dest).unwrap().flatten().find_map(|e| {
            let meta = e.path().symlink_metadata().ok()?;
            let partial = (1 << 20..big.len() as u64).contains(&meta.len());
            (e.file_name()
                .to_string_lossy()
                .starts_with(".s3mirror-tmp-")
                && partial)
                .then_some(meta)
        });
        if let Some(temp) = temp {
            break temp.mode() & 0o777;
        }
        assert!(Instant::now() < deadline, "no temporary file seen");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(temp_mode, 0o600, "unchecked bytes are private");
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"must stay");
    let planted = dest.join("planted.txt").symlink_metadata().unwrap();
    assert!(planted.is_file(), "the link was replaced, not followed");
    assert_eq!(
        std::fs::read(dest.join("planted.txt")).unwrap(),
        b"from the bucket"
    );
    // Final names get the mode any new file gets.
    let mode = std::fs::metadata(dest.join("big.bin")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o666 & !umask());
    assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), big);
}
