//! `s3mirror mount` through FUSE, as root, against the local server: every test mounts
//! in a temporary directory and unmounts in teardown, even when it fails.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::IntoRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use faultproxy::{Faults, Proxy};

use crate::garage::garage;
use crate::{bucket_contents, s3mirror, s3mirror_command, tree_contents, tricky_files, write_tree};

const MIB: usize = 1 << 20;

/// A mounted bucket; dropping it unmounts (SIGTERM, then a lazy unmount if need be).
pub struct Mounted {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Mounted {
    pub fn new(url: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap();
        let mut args = vec!["mount", url, path.to_str().unwrap(), "--foreground"];
        args.extend_from_slice(extra);
        let mut child = s3mirror_command(&args)
            .stdout(Stdio::null())
            // S3MIRROR_TEST_MOUNT_LOG=1 shows the mounts' messages (with -vv, debug logs).
            .stderr(match std::env::var_os("S3MIRROR_TEST_MOUNT_LOG") {
                Some(_) => Stdio::inherit(),
                None => Stdio::piped(),
            })
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s3mirror::mount::is_mounted(&path) {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                panic!("the mount exited with {status}:\n{stderr}");
            }
            assert!(Instant::now() < deadline, "not mounted within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mounted {
            child: Some(child),
            _dir: dir,
            path,
        }
    }

    /// Kills the mount with SIGKILL, as a crash would, and detaches what it leaves.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if s3mirror::mount::is_mounted(&self.path) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.path)
                .status();
        }
    }
}

fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_multipart_object_reads_whole_and_at_random_offsets() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-read"));
    let work = tempfile::tempdir().unwrap();
    let data = patterned(12 * MIB + 7);
    write_tree(work.path(), &[("dir/big.bin".into(), data.clone())]);
    let url = format!("s3://{bucket}/m");
    s3mirror(&[
        work.path().to_str().unwrap(),
        &url,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
    ])
    .assert_code(0);

    let mount = Mounted::new(&url, &[]);
    let path = mount.join("dir/big.bin");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), data.len() as u64);
    let cat = std::process::Command::new("cat")
        .arg(&path)
        .output()
        .unwrap();
    assert!(cat.stdout == data, "cat read different bytes");
    let file = std::fs::File::open(&path).unwrap();
    let mut seed = 7u64;
    for _ in 0..200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = (seed >> 16) as usize % data.len();
        let len = ((seed >> 40) as usize % 300_000).min(data.len() - offset);
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, offset as u64).unwrap();
        assert!(buf == data[offset..offset + len], "pread at {offset}+{len}");
    }
    let listed: Vec<String> = std::fs::read_dir(mount.join("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(listed, ["big.bin"]);
    drop(mount);

    // Written through a mount, a big file goes up in parts while it is written.
    let mount = Mounted::new(&url, &["--part-size", "5MiB"]);
    std::fs::write(mount.join("copy.bin"), &data).unwrap();
    let client = server.client();
    let head = rt
        .block_on(
            client
                .head_object()
                .bucket(&bucket)
                .key("m/copy.bin")
                .send(),
        )
        .unwrap();
    assert!(
        head.e_tag().unwrap().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );
    let stored = rt.block_on(bucket_contents(&client, &bucket, "m/"));
    assert!(stored["copy.bin"] == data);
}

#[test]
fn without_foreground_the_mount_runs_in_the_background_until_unmounted() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-bg"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    /// Unmounts even when an assertion fails.
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if s3mirror::mount::is_mounted(self.0) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.0)
                    .status();
            }
        }
    }
    let _guard = Unmount(&path);
    let run = s3mirror(&["mount", &format!("s3://{bucket}"), path.to_str().unwrap()]);
    run.assert_code(0);
    assert!(run.stderr.contains("unmount with"), "{}", run.stderr);
    assert!(s3mirror::mount::is_mounted(&path));
    std::fs::write(path.join("f"), b"x").unwrap();
    let status = std::process::Command::new("umount")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!s3mirror::mount::is_mounted(&path));
}

#[test]
fn a_tree_copied_in_with_cp_is_in_the_bucket_intact() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-cp"));
    let work = tempfile::tempdir().unwrap();
    let mut files = tricky_files();
    files.retain(|(name, _)| !name.contains("empty"));
    for i in 0..(500 - files.len()) {
        let name = format!("d{}/ü é 🎉 %20 {i:03}.txt", i % 10);
        files.push((name, format!("file {i}").repeat(i % 7 + 1).into_bytes()));
    }
    files.truncate(500);
    write_tree(&work.path().join("tree"), &files);
    let url = format!("s3://{bucket}/m");
    let mount = Mounted::new(&url, &[]);
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(work.path().join("tree"))
        .arg(mount.join(""))
        .output()
        .unwrap();
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
    let stored = rt.block_on(bucket_contents(&client, &bucket, "m/tree/"));
    let local = tree_contents(&work.path().join("tree"));
    // Directories made by cp are zero-byte markers; the files are all there, intact.
    let stored_files: std::collections::BTreeMap<_, _> = stored
        .into_iter()
        .filter(|(key, _)| !key.is_empty() && !key.ends_with('/'))
        .collect();
    assert_eq!(stored_files.len(), 500);
    assert!(stored_files == local, "the bucket holds what cp wrote");
    // And the mount reads them back.
    for (name, content) in files.iter().take(20) {
        assert_eq!(
            &std::fs::read(mount.join(&format!("tree/{name}"))).unwrap(),
            content
        );
    }
}

#[test]
fn a_file_written_through_one_mount_shows_in_another_within_the_ttl() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-two"));
    let url = format!("s3://{bucket}");
    let (a, b) = (
        Mounted::new(&url, &["--metadata-ttl", "1s"]),
        Mounted::new(&url, &["--metadata-ttl", "1s"]),
    );
    // B has looked and seen nothing.
    assert!(std::fs::read_dir(&b.path).unwrap().next().is_none());
    assert!(!b.join("news.txt").exists());
    std::fs::write(a.join("news.txt"), b"written on node A").unwrap();
    let written = Instant::now();
    while !b.join("news.txt").exists() {
        assert!(
            written.elapsed() < Duration::from_secs(3),
            "not visible within the TTL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        std::fs::read(b.join("news.txt")).unwrap(),
        b"written on node A"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_makes_close_fail_with_eio() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mount-fail").await;
    let upstream = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = Proxy::start(
        upstream,
        Faults {
            fail_writes: true,
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let endpoint = format!("http://{}", proxy.addr);
    let url = format!("s3://{bucket}");
    let result = tokio::task::spawn_blocking(move || {
        let mount = Mounted::new(&url, &["--endpoint-url", &endpoint, "--max-retries", "0"]);
        let mut file = std::fs::File::create(mount.join("lost.txt")).unwrap();
        file.write_all(b"this upload will fail").unwrap();
        let fd = file.into_raw_fd();
        let closed = unsafe { libc::close(fd) };
        let err = std::io::Error::last_os_error();
        (closed, err.raw_os_error())
    })
    .await
    .unwrap();
    assert_eq!(result, (-1, Some(libc::EIO)));
    assert!(bucket_contents(&client, &bucket, "").await.is_empty());
    assert!(Proxy::count(&proxy.counters.errors) > 0);
}

#[test]
fn sixteen_readers_and_writers_at_once() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-many"));
    let work = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| (format!("r{i}.bin"), patterned(2 * MIB + i * 1000)))
        .collect();
    write_tree(work.path(), &files);
    let url = format!("s3://{bucket}");
    s3mirror(&[work.path().to_str().unwrap(), &url]).assert_code(0);
    let mount = Mounted::new(&url, &[]);
    std::thread::scope(|scope| {
        for (name, content) in &files {
            let path = mount.join(name);
            scope.spawn(move || assert!(std::fs::read(path).unwrap() == *content));
        }
        for i in 0..8 {
            let path = mount.join(&format!("w{i}.bin"));
            scope.spawn(move || std::fs::write(path, patterned(MIB * (i % 3 + 1) + i)).unwrap());
        }
    });
    let stored = rt.block_on(bucket_contents(&client, &bucket, ""));
    for i in 0..8 {
        assert!(stored[&format!("w{i}.bin")] == patterned(MIB * (i % 3 + 1) + i));
    }
}

#[test]
fn shell_redirections_and_directories_work() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-ops"));
    let url = format!("s3://{bucket}");
    let mount = Mounted::new(&url, &[]);
    // A shell redirection closes a duplicate of the descriptor before writing.
    let target = mount.join("redirected.txt");
    let shell = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo hello > '{0}' && echo more >> '{0}'",
            target.display()
        ))
        .status()
        .unwrap();
    assert!(shell.success());
    assert_eq!(std::fs::read(&target).unwrap(), b"hello\nmore\n");
    std::fs::create_dir(mount.join("dir")).unwrap();
    assert!(mount.join("dir").is_dir());
    std::fs::remove_dir(mount.join("dir")).unwrap();
    assert!(!mount.join("dir").exists());
    std::fs::remove_file(&target).unwrap();
    assert!(rt
        .block_on(bucket_contents(&client, &bucket, ""))
        .is_empty());
    drop(mount);

    let read_only = Mounted::new(&url, &["-o", "ro"]);
    let errno = |result: std::io::Result<()>| result.unwrap_err().raw_os_error();
    assert_eq!(
        errno(std::fs::write(read_only.join("x"), b"x")),
        Some(libc::EROFS)
    );
}

#[test]
fn sigterm_unmounts() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-term"));
    let mut mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    let mut child = mount.child.take().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !s3mirror::mount::is_mounted(&mount.path),
        "unmounted by the process itself"
    );
}

#[test]
fn mount_refuses_what_cannot_work() {
    let run = s3mirror(&["mount", "./not-a-bucket", "/tmp"]);
    run.assert_code(2);
    assert!(run.stderr.contains("mount needs s3://"), "{}", run.stderr);
    let run = s3mirror(&["mount", "s3://bucket", "/nonexistent-mount-point"]);
    run.assert_code(2);
    assert!(run.stderr.contains("mount point"), "{}", run.stderr);
    let run = s3mirror(&["mount", "s3://bucket", "/tmp", "-o", "allow_other,bogus"]);
    run.assert_code(2);
    assert!(run.stderr.contains("-o bogus"), "{}", run.stderr);
    let run = s3mirror(&["mount", "s3://bucket", "/tmp", "--file-mode", "rw-r--r--"]);
    run.assert_code(2);
    let _ = Path::new("/");
}
