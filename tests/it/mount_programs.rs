//! Ordinary programs on `s3mirror mount`, as root against the local server: rsync (both
//! modes), the temp-file-then-rename save, append, overwrite, reading a file another
//! descriptor is writing, mv of files and directories, rm -rf, SQLite, git, chmod, cp -p.
//! Each checks what the program sees and what the bucket holds after close.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::IntoRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use faultproxy::{Faults, Proxy};

use crate::bucket_contents;
use crate::garage::garage;
use crate::mount::Mounted;

/// Runs a program and insists that it succeeds.
fn run(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("{program}: {err}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn python(script: &str, dir: &Path) -> String {
    run("python3", &["-c", script], dir)
}

fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// A tree as a real one is: modes, an executable, a symlink, old mtimes, a file big
/// enough for a multipart upload, nesting, an empty file.
fn source_tree(root: &Path) {
    let files: [(&str, Vec<u8>); 5] = [
        ("README", b"read me\n".to_vec()),
        ("bin/run.sh", b"#!/bin/sh\necho run\n".to_vec()),
        (
            "data/big.bin",
            (0..12 << 20).map(|i: u32| (i % 251) as u8).collect(),
        ),
        ("deep/a/b/c.txt", b"deep".to_vec()),
        ("empty", Vec::new()),
    ];
    for (i, (name, content)) in files.iter().enumerate() {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        set_mtime(&path, 1_600_000_000 + i as u64 * 1000);
    }
    std::fs::set_permissions(root.join("bin/run.sh"), PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(root.join("README"), PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("../README", root.join("bin/readme-link")).unwrap();
}

#[test]
fn rsync_archives_a_tree_and_a_second_run_finds_nothing_to_do() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-rsync"));
    let src = tempfile::tempdir().unwrap();
    source_tree(src.path());
    let mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    let from = format!("{}/", src.path().display());
    let to = format!("{}/", mount.join("copy").display());
    run("rsync", &["-a", &from, &to], src.path());
    // Everything as it was: bytes, modes, times, the link.
    let again = run(
        "rsync",
        &["-a", "--itemize-changes", &from, &to],
        src.path(),
    );
    assert_eq!(again, "", "a second rsync -a changes nothing");
    run("diff", &["-r", "--no-dereference", &from, &to], src.path());
    let copied = mount.join("copy/bin/run.sh");
    assert_eq!(std::fs::metadata(&copied).unwrap().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(mount.join("copy/bin/readme-link")).unwrap(),
        Path::new("../README")
    );
    let stored = rt.block_on(bucket_contents(&client, &bucket, ""));
    let names: Vec<&str> = stored.keys().map(String::as_str).collect();
    for name in [
        "copy/README",
        "copy/bin/run.sh",
        "copy/data/big.bin",
        "copy/deep/a/b/c.txt",
        "copy/empty",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("/.") && !n.ends_with('/')),
        "no rsync temporary file is left: {names:?}"
    );
    assert_eq!(stored["copy/bin/readme-link"], b"../README");

    // --inplace rewrites changed files where they are (read-modify-write).
    let readme = src.path().join("README");
    std::fs::write(&readme, b"read me, changed in place\n").unwrap();
    set_mtime(&readme, 1_700_000_000);
    run("rsync", &["-a", "--inplace", &from, &to], src.path());
    assert_eq!(
        std::fs::read(mount.join("copy/README")).unwrap(),
        b"read me, changed in place\n"
    );
    let stored = rt.block_on(bucket_contents(&client, &bucket, "copy/"));
    assert_eq!(stored["README"], b"read me, changed in place\n");
    let again = run(
        "rsync",
        &["-a", "--inplace", "--itemize-changes", &from, &to],
        src.path(),
    );
    assert_eq!(again, "");
}

#[test]
fn saving_through_a_temporary_file_and_rename_replaces_the_old_file() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-replace"));
    let mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    std::fs::write(mount.join("state.json"), b"{\"v\": 1}").unwrap();
    python(
        r#"
import os
with open("state.json.tmp", "w") as f:
    f.write('{"v": 2}')
    f.flush()
    os.fsync(f.fileno())
os.replace("state.json.tmp", "state.json")
"#,
        &mount.path,
    );
    assert_eq!(
        std::fs::read(mount.join("state.json")).unwrap(),
        b"{\"v\": 2}"
    );
    assert!(!mount.join("state.json.tmp").exists());
    let stored = rt.block_on(bucket_contents(&client, &bucket, ""));
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["state.json"]);
    assert_eq!(stored["state.json"], b"{\"v\": 2}");
}

#[test]
fn append_overwrite_and_reading_while_writing() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-edit"));
    let mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    let shell = |script: &str| run("sh", &["-c", script], &mount.path);
    shell("echo one > log && echo two >> log && echo three >> log");
    assert_eq!(
        std::fs::read(mount.join("log")).unwrap(),
        b"one\ntwo\nthree\n"
    );
    shell("echo replaced > log");
    assert_eq!(std::fs::read(mount.join("log")).unwrap(), b"replaced\n");
    let seen = python(
        r#"
w = open("live", "w")
w.write("abc"); w.flush()
r = open("live")
first = r.read()
w.write("def"); w.flush()
r.seek(0)
print(first, r.read())
w.close(); r.close()
"#,
        &mount.path,
    );
    assert_eq!(seen, "abc abcdef\n");
    let stored = rt.block_on(bucket_contents(&client, &bucket, ""));
    assert_eq!(stored["log"], b"replaced\n");
    assert_eq!(stored["live"], b"abcdef");
}

#[test]
fn mv_of_files_and_directories_and_rm_rf() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-mv"));
    let mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    let shell = |script: &str| run("sh", &["-c", script], &mount.path);
    shell("mkdir -p tree/a/b && echo 1 > tree/a/one && echo 2 > tree/a/b/two && echo 3 > file");
    shell("mv file moved && mv tree renamed");
    assert_eq!(std::fs::read(mount.join("moved")).unwrap(), b"3\n");
    assert_eq!(
        std::fs::read(mount.join("renamed/a/b/two")).unwrap(),
        b"2\n"
    );
    assert!(!mount.join("tree").exists() && !mount.join("file").exists());
    let stored = rt.block_on(bucket_contents(&client, &bucket, ""));
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "moved",
            "renamed/",
            "renamed/a/",
            "renamed/a/b/",
            "renamed/a/b/two",
            "renamed/a/one"
        ]
    );
    shell("rm -rf renamed moved");
    assert!(std::fs::read_dir(&mount.path).unwrap().next().is_none());
    assert!(rt
        .block_on(bucket_contents(&client, &bucket, ""))
        .is_empty());
}

#[test]
fn a_sqlite_database_is_created_written_and_reopened() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-sqlite"));
    let url = format!("s3://{bucket}");
    let mount = Mounted::new(&url, &[]);
    python(
        r#"
import sqlite3
db = sqlite3.connect("app.db")
db.execute("create table t (id integer primary key, v text)")
db.executemany("insert into t (v) values (?)", [("row %d" % i,) for i in range(500)])
db.commit()
db.execute("update t set v = 'changed' where id % 7 = 0")
db.commit()
db.close()
"#,
        &mount.path,
    );
    drop(mount);
    // Another mount reads what the first one wrote.
    let mount = Mounted::new(&url, &[]);
    let seen = python(
        r#"
import sqlite3
db = sqlite3.connect("app.db")
print(db.execute("select count(*), sum(v = 'changed') from t").fetchone())
print(db.execute("pragma integrity_check").fetchone()[0])
"#,
        &mount.path,
    );
    assert_eq!(seen, "(500, 71)\nok\n");
    let stored = rt.block_on(bucket_contents(&client, &bucket, ""));
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["app.db"],
        "no journal is left"
    );
}

#[test]
fn git_init_and_commit() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-git"));
    let mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    let git = |args: &[&str]| {
        let mut all = vec!["-c", "user.name=T", "-c", "user.email=t@example.com"];
        all.extend_from_slice(args);
        run("git", &all, &mount.path)
    };
    git(&["init", "-q"]);
    std::fs::write(mount.join("hello.txt"), b"hello\n").unwrap();
    git(&["add", "hello.txt"]);
    git(&["commit", "-q", "-m", "first"]);
    std::fs::write(mount.join("hello.txt"), b"hello again\n").unwrap();
    git(&["commit", "-q", "-a", "-m", "second"]);
    assert_eq!(git(&["log", "--format=%s"]), "second\nfirst\n");
    assert_eq!(git(&["status", "--porcelain"]), "");
    git(&["fsck", "--strict"]);
}

#[test]
fn chmod_and_cp_p_are_kept_and_seen_from_another_mount() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = server.client();
    let bucket = rt.block_on(server.new_bucket("mount-modes"));
    let url = format!("s3://{bucket}");
    let local = tempfile::tempdir().unwrap();
    let original = local.path().join("old.txt");
    std::fs::write(&original, b"from long ago").unwrap();
    set_mtime(&original, 1_500_000_000);
    let a = Mounted::new(&url, &[]);
    std::fs::write(a.join("tool"), b"#!/bin/sh\necho tool\n").unwrap();
    run("chmod", &["+x", "tool"], &a.path);
    run(
        "cp",
        &["-p", original.to_str().unwrap(), "old.txt"],
        &a.path,
    );
    let b = Mounted::new(&url, &[]);
    assert_eq!(
        std::fs::metadata(b.join("tool")).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(
        run(b.join("tool").to_str().unwrap(), &[], &b.path),
        "tool\n"
    );
    let copied = std::fs::metadata(b.join("old.txt")).unwrap();
    assert_eq!(copied.mtime(), 1_500_000_000);
    // Kept the way s3fs keeps them: decimal st_mode and seconds in user metadata.
    let head = rt
        .block_on(client.head_object().bucket(&bucket).key("tool").send())
        .unwrap();
    let metadata = head.metadata().unwrap();
    assert_eq!(metadata["mode"], (0o100755).to_string());
    let head = rt
        .block_on(client.head_object().bucket(&bucket).key("old.txt").send())
        .unwrap();
    assert_eq!(head.metadata().unwrap()["mtime"], "1500000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_during_rename_or_overwrite_keeps_the_old_object() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mount-keep").await;
    for (key, body) in [("target.txt", "old target"), ("new.txt", "new")] {
        crate::put_object(&client, &bucket, key, body.as_bytes()).await;
    }
    let upstream = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let faults = Faults {
        fail_writes: true,
        ..Faults::default()
    };
    let proxy = Proxy::start(upstream, faults).await.unwrap();
    let endpoint = format!("http://{}", proxy.addr);
    let url = format!("s3://{bucket}");
    let errors = tokio::task::spawn_blocking(move || {
        let mount = Mounted::new(&url, &["--endpoint-url", &endpoint, "--max-retries", "0"]);
        let renamed = std::fs::rename(mount.join("new.txt"), mount.join("target.txt"));
        // Written and closed by hand: dropping a File ignores what close() says.
        let mut file = std::fs::File::create(mount.join("target.txt")).unwrap();
        file.write_all(b"overwritten").unwrap();
        let closed = unsafe { libc::close(file.into_raw_fd()) };
        let overwritten = std::io::Error::last_os_error();
        assert_eq!(closed, -1);
        (
            renamed.unwrap_err().raw_os_error(),
            overwritten.raw_os_error(),
        )
    })
    .await
    .unwrap();
    assert_eq!(errors, (Some(libc::EIO), Some(libc::EIO)));
    let stored = bucket_contents(&client, &bucket, "").await;
    assert_eq!(stored["target.txt"], b"old target");
    assert_eq!(stored["new.txt"], b"new");
}

/// A bucket mounted with s3fs-fuse, unmounted on drop.
struct S3fs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl S3fs {
    fn mount(bucket: &str) -> Self {
        let server = garage();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            format!(
                "{}:{}",
                crate::garage::ACCESS_KEY,
                crate::garage::SECRET_KEY
            ),
        )
        .unwrap();
        std::fs::set_permissions(&passwd, PermissionsExt::from_mode(0o600)).unwrap();
        let options = format!(
            "passwd_file={},url={},use_path_request_style,endpoint={},stat_cache_expire=1",
            passwd.display(),
            server.endpoint,
            crate::garage::REGION
        );
        run(
            "s3fs",
            &[bucket, path.to_str().unwrap(), "-o", &options],
            dir.path(),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !s3mirror::mount::is_mounted(&path) {
            assert!(std::time::Instant::now() < deadline, "s3fs did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { path, _dir: dir }
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s3mirror::mount::is_mounted(&self.path) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn mode_and_mtime(path: &Path) -> (u32, i64) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o7777, meta.mtime())
}

#[test]
fn modes_times_and_links_written_by_s3fs_show_the_same_here_and_back() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-s3fs"));
    let url = format!("s3://{bucket}");
    let shell = |dir: &Path, script: &str| run("sh", &["-c", script], dir);
    {
        let s3fs = S3fs::mount(&bucket);
        shell(
            &s3fs.path,
            "mkdir private && chmod 700 private && echo s3fs > private/file && \
             chmod 640 private/file && touch -d @1500000000 private/file && \
             ln -s private/file link",
        );
    }
    let ours = Mounted::new(&url, &[]);
    assert_eq!(
        mode_and_mtime(&ours.join("private/file")),
        (0o640, 1_500_000_000)
    );
    assert_eq!(mode_and_mtime(&ours.join("private")).0, 0o700);
    assert_eq!(
        std::fs::read_link(ours.join("link")).unwrap(),
        Path::new("private/file")
    );
    assert_eq!(std::fs::read(ours.join("link")).unwrap(), b"s3fs\n");
    // And the other way round.
    shell(
        &ours.path,
        "echo ours > mine && chmod 711 mine && touch -d @1400000000 mine && ln -s mine mylink",
    );
    drop(ours);
    let s3fs = S3fs::mount(&bucket);
    assert_eq!(
        mode_and_mtime(&s3fs.path.join("mine")),
        (0o711, 1_400_000_000)
    );
    assert_eq!(
        std::fs::read_link(s3fs.path.join("mylink")).unwrap(),
        Path::new("mine")
    );
    assert_eq!(std::fs::read(s3fs.path.join("mine")).unwrap(), b"ours\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploads_of_a_killed_mount_are_aborted_by_the_next_mount() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mount-kill").await;
    let url = format!("s3://{bucket}");
    let open_uploads = |client: aws_sdk_s3::Client, bucket: String| async move {
        let out = client
            .list_multipart_uploads()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        out.uploads().len()
    };
    let url_killed = url.clone();
    tokio::task::spawn_blocking(move || {
        let mut mount = Mounted::new(&url_killed, &["--part-size", "5MiB"]);
        let mut file = std::fs::File::create(mount.join("half-written.bin")).unwrap();
        file.write_all(&vec![7; 12 << 20]).unwrap();
        // Parts are on their way; the file is still open when the mount dies.
        std::thread::sleep(Duration::from_millis(500));
        mount.kill();
        drop(file);
    })
    .await
    .unwrap();
    assert_eq!(open_uploads(client.clone(), bucket.clone()).await, 1);
    let url_next = url.clone();
    tokio::task::spawn_blocking(move || drop(Mounted::new(&url_next, &[])))
        .await
        .unwrap();
    assert_eq!(open_uploads(client.clone(), bucket.clone()).await, 0);
    assert!(bucket_contents(&client, &bucket, "").await.is_empty());
}

#[test]
fn other_users_see_what_the_modes_allow_with_allow_other() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-other"));
    let mount = Mounted::new(&format!("s3://{bucket}"), &["--allow-other"]);
    std::fs::write(mount.join("public"), b"for everyone").unwrap();
    std::fs::write(mount.join("secret"), b"root only").unwrap();
    std::fs::set_permissions(mount.join("secret"), PermissionsExt::from_mode(0o600)).unwrap();
    let as_nobody = |path: &Path| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .unwrap()
    };
    let public = as_nobody(&mount.join("public"));
    assert!(public.status.success(), "{public:?}");
    assert_eq!(public.stdout, b"for everyone");
    let secret = as_nobody(&mount.join("secret"));
    assert!(!secret.status.success());
    assert!(String::from_utf8_lossy(&secret.stderr).contains("Permission denied"));
}

#[test]
fn locks_held_on_one_node_exclude_other_processes_there() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-locks"));
    let mount = Mounted::new(&format!("s3://{bucket}"), &[]);
    let seen = python(
        r#"
import fcntl, subprocess, sys
held = open("lockfile", "w")
fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
other = subprocess.run([sys.executable, "-c",
    "import fcntl\nf = open('lockfile', 'a')\ntry:\n fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n print('got it')\nexcept OSError as e:\n print('refused', e.errno)"],
    capture_output=True, text=True)
fcntl.flock(held, fcntl.LOCK_UN)
print(other.stdout.strip())
"#,
        &mount.path,
    );
    assert_eq!(seen, format!("refused {}\n", libc::EAGAIN));
}

#[test]
fn a_full_cache_disk_fails_the_write_with_enospc_and_the_mount_goes_on() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("mount-full"));
    let disk = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _disk = Unmount(disk.path());
    let mount = Mounted::new(
        &format!("s3://{bucket}"),
        &["--cache-dir", disk.path().to_str().unwrap()],
    );
    let mut file = std::fs::File::create(mount.join("too-big.bin")).unwrap();
    let written = file.write_all(&vec![1; 4 << 20]);
    assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    drop(file);
    std::fs::write(mount.join("small.txt"), b"still works").unwrap();
    assert_eq!(
        std::fs::read(mount.join("small.txt")).unwrap(),
        b"still works"
    );
}
