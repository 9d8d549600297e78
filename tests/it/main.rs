//! Integration tests: the s3mirror binary against a real S3 server (Garage) on loopback.

mod backups;
mod budgets;
mod checksum;
mod delete;
mod errors;
mod garage;
mod listing;
mod metrics;
mod moto;
mod mount;
mod mount_programs;
mod multipart;
mod point_in_time;
mod real_buckets;
mod reliability;
mod security;
mod shard;
mod slurm;
mod storage_classes;
mod sync;
mod unattended;
mod verify;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use aws_sdk_s3::Client;

use garage::{garage, ACCESS_KEY, REGION, SECRET_KEY};

/// What one run of the binary printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The number after `label` in the summary, e.g. `copied     3 (...)`.
    pub fn count(&self, label: &str) -> u64 {
        let line = self
            .stderr
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", self.stderr));
        line.trim_start()[label.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}"))
    }

    /// The number of requests of one S3 operation, from the summary.
    pub fn requests(&self, operation: &str) -> u64 {
        let prefix = format!("{operation}=");
        self.stderr
            .lines()
            .find(|l| l.trim_start().starts_with("requests"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix(&prefix)))
            .map_or(0, |n| n.parse().unwrap())
    }

    pub fn assert_code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs s3mirror with credentials for the test server and an environment isolated from
/// the machine's AWS configuration.
pub fn s3mirror(args: &[&str]) -> Run {
    s3mirror_with(args, &[])
}

pub fn s3mirror_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = s3mirror_command(args);
    for (key, value) in env {
        command.env(key, value);
    }
    Run::from(command.output().expect("run s3mirror"))
}

/// Where the runs of this test process record their uploads in progress.
pub fn state_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("s3mirror-it-state-{}", std::process::id()))
}

/// The command `s3mirror` runs, for tests that start it and act while it runs.
pub fn s3mirror_command(args: &[&str]) -> Command {
    let server = garage();
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3mirror"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("S3MIRROR_STATE_DIR", state_dir())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", &server.endpoint);
    command
}

/// Starts a test server that lives as long as this test process: spawned from a thread
/// that lives as long as the child, so that PR_SET_PDEATHSIG (tied to the spawning
/// thread) kills it only when the process dies. Returns its pid.
pub fn spawn_server(mut command: Command, what: &'static str) -> i32 {
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {what}: {err}"));
        pid_tx.send(child.id() as i32).unwrap();
        let _ = child.wait();
    });
    pid_rx.recv().unwrap()
}

/// Kills a server `spawn_server` started and waits for it, from an atexit handler.
pub fn stop_spawned(pid: i32) {
    if pid > 0 {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Sizes that send a file of a few MiB through every multipart path (upload, copy,
/// ranged download) in 5 MiB parts.
pub const SMALL_PARTS: [&str; 6] = [
    "--multipart-threshold",
    "5MiB",
    "--multipart-copy-threshold",
    "5MiB",
    "--part-size",
    "5MiB",
];

/// A bucket name no other test of this process uses.
pub fn unique_name(label: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{label}-{}-{n}", std::process::id())
}

/// Creates a bucket with a name no other test uses, through `client`.
pub async fn create_bucket(client: &Client, label: &str) -> String {
    let name = unique_name(label);
    client.create_bucket().bucket(&name).send().await.unwrap();
    name
}

/// An SDK client for a test server, for setting buckets up and checking them as another
/// tool would. `check_reads` validates the checksums a server states on reads.
pub fn sdk_client(endpoint: &str, region: &str, key: (&str, &str), check_reads: bool) -> Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    let validation = match check_reads {
        true => ResponseChecksumValidation::WhenSupported,
        false => ResponseChecksumValidation::WhenRequired,
    };
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_owned()))
        .credentials_provider(Credentials::new(key.0, key.1, None, None, "test"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(validation)
        .build();
    Client::from_conf(config)
}

/// Uploads `parts` as one multipart object with the SDK, as another tool would: with the
/// user metadata given and nothing else recorded (no part size, no checksum).
pub async fn put_multipart(
    client: &Client,
    bucket: &str,
    key: &str,
    parts: &[&[u8]],
    metadata: &[(&str, &str)],
) {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let mut create = client.create_multipart_upload().bucket(bucket).key(key);
    for (name, value) in metadata {
        create = create.metadata(*name, *value);
    }
    let upload = create.send().await.unwrap();
    let id = upload.upload_id().unwrap();
    let mut done = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let number = i as i32 + 1;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(data.to_vec().into())
            .send()
            .await
            .unwrap();
        done.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .unwrap();
}

/// Puts one object with the SDK, as another tool would.
pub async fn put_object(client: &Client, bucket: &str, key: &str, body: &[u8]) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap();
}

/// Every object of a bucket below a prefix: relative key → content.
pub async fn bucket_contents(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for object in page.unwrap().contents() {
            let key = percent_encoding::percent_decode_str(object.key().unwrap())
                .decode_utf8()
                .unwrap()
                .into_owned();
            let body = client
                .get_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .unwrap()
                .body;
            let bytes = body.collect().await.unwrap().into_bytes().to_vec();
            out.insert(key[prefix.len()..].to_owned(), bytes);
        }
    }
    out
}

/// Every file below a directory: relative path → content.
pub fn tree_contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn visit(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                visit(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    visit(root, root, &mut out);
    out
}

/// Writes files (relative path, content) below `root`.
pub fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A tree with the names that trip mirror tools: spaces, `+`, `%`, NFC and NFD forms of
/// the same letter, emoji, names ordered differently by byte and by path (`a/b`, `a.b`,
/// `a-b`), deep nesting, empty files and a file larger than the I/O buffers.
pub fn tricky_files() -> Vec<(String, Vec<u8>)> {
    let deep = (0..20)
        .map(|i| format!("d{i}"))
        .collect::<Vec<_>>()
        .join("/");
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut files = vec![
        ("with space/file name.txt".to_owned(), b"spaces".to_vec()),
        ("plus+sign.txt".to_owned(), b"plus".to_vec()),
        ("percent%20literal%.txt".to_owned(), b"percent".to_vec()),
        ("caf\u{e9}-nfc.txt".to_owned(), b"nfc".to_vec()),
        ("cafe\u{301}-nfd.txt".to_owned(), b"nfd".to_vec()),
        (
            "emoji-\u{1f600}/\u{65e5}\u{672c}.txt".to_owned(),
            b"unicode".to_vec(),
        ),
        ("a/b".to_owned(), b"a/b".to_vec()),
        ("a.b".to_owned(), b"a.b".to_vec()),
        ("a-b".to_owned(), b"a-b".to_vec()),
        ("empty".to_owned(), Vec::new()),
        ("dir/empty-too".to_owned(), Vec::new()),
        (format!("{deep}/leaf.txt"), b"deep".to_vec()),
        ("big.bin".to_owned(), big),
    ];
    files.sort();
    files
}
