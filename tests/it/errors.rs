//! Bad input and unreachable resources: one clear line naming the cause and a
//! documented exit code, never a panic, a debug dump or a secret.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use faultproxy::{Faults, Proxy};

use crate::garage::garage;
use crate::{s3mirror_command, Run};

const SECRET: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKENvalue";

/// One bad input: the run, the exit code it must end with, and what it must say.
struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Variables of the usual environment left out.
    unset: Vec<&'static str>,
    /// Run without the capability to read files regardless of their permissions.
    no_dac_override: bool,
    code: i32,
    says: Vec<&'static str>,
}

impl Case {
    fn new(name: &'static str, args: &[&str], code: i32, says: &[&'static str]) -> Self {
        Self {
            name,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            unset: Vec::new(),
            no_dac_override: false,
            code,
            says: says.to_vec(),
        }
    }

    fn env(mut self, key: &'static str, value: &str) -> Self {
        self.env.push((key, value.to_owned()));
        self
    }

    fn without(mut self, key: &'static str) -> Self {
        self.unset.push(key);
        self
    }

    fn run(&self) -> Run {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut command = s3mirror_command(&args);
        for key in &self.unset {
            command.env_remove(key);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if self.no_dac_override {
            // Root reads any file; without these capabilities, permissions apply to it
            // as to anyone. Dropped from the bounding set, they stay dropped after exec.
            unsafe {
                command.pre_exec(|| {
                    for capability in [1, 2] {
                        // CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
                        if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        Run::from(command.output().expect("run s3mirror"))
    }
}

/// A server on loopback that answers every request 403 Forbidden, as the instance metadata
/// service of an instance that disabled it does; returns its address.
fn refusing_server() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "IMDS is disabled";
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// A tmpfs of 1 MiB at a directory, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: std::path::PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_line_and_its_exit_code() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("bad-input").await;
    let put = |key: String, body: Vec<u8>| {
        let client = client.clone();
        let bucket = bucket.clone();
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    // Keys no directory tree can hold, beside one it can.
    put("keys/fine.txt".into(), b"fine".to_vec()).await;
    put("keys/a".into(), b"a file".to_vec()).await;
    put("keys/a/b".into(), b"below a".to_vec()).await;
    put(format!("keys/{}", "n".repeat(300)), b"long".to_vec()).await;
    put("keys/up/../../escape".into(), b"escape".to_vec()).await;
    put("big/three-mib".into(), vec![3u8; 3 << 20]).await;

    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("readable.txt"), b"readable").unwrap();
    let locked = src.join("locked.txt");
    std::fs::write(&locked, b"nobody may read this").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::write(work.path().join("a-file"), b"x").unwrap();
    let small_disk = SmallDisk::mount(work.path().join("small-disk"));

    let proxy = Proxy::start(
        server
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .unwrap(),
        Faults {
            answer: Some((400, "ExpiredToken")),
            ..Faults::default()
        },
    )
    .await
    .unwrap();
    let expired_endpoint = format!("http://{}", proxy.addr);
    let refusing_metadata = format!("http://{}", refusing_server());

    let src = src.to_str().unwrap();
    let url = |prefix: &str| format!("s3://{bucket}/{prefix}");
    let cases = vec![
        Case::new("no bucket", &[src, "s3://"], 2, &["needs a bucket name"]),
        Case::new(
            "invalid bucket name",
            &[src, "s3://no?such"],
            2,
            &["invalid bucket name \"no?such\""],
        ),
        Case::new(
            "malformed scheme",
            &[src, "s3:/bucket"],
            2,
            &["did you mean s3://"],
        ),
        Case::new(
            "unsupported scheme",
            &["gs://bucket", src],
            2,
            &["unsupported scheme"],
        ),
        Case::new(
            "malformed endpoint",
            &[src, &url("x"), "--endpoint-url", "http://host:port"],
            2,
            &["--endpoint-url \"http://host:port\": the port is not a number"],
        ),
        Case::new(
            "missing bucket",
            &[src, "s3://no-such-bucket-here/x"],
            3,
            &[
                "ListObjectsV2 s3://no-such-bucket-here/x/: NoSuchBucket",
                "check the bucket name",
            ],
        ),
        Case::new(
            "wrong region",
            &[src, &url("x"), "--region", "mars-north-1"],
            3,
            &["ListObjectsV2", "--region"],
        ),
        Case::new(
            "unknown access key",
            &[&url("x"), &path("never")],
            3,
            &["ListObjectsV2", "check that these credentials"],
        )
        .env("AWS_ACCESS_KEY_ID", "GKffffffffffffffffffffffff")
        .env("AWS_SECRET_ACCESS_KEY", SECRET),
        Case::new(
            "wrong secret, logged at every level",
            &[&url("x"), &path("never"), "-vv"],
            3,
            &["ListObjectsV2", "check"],
        )
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("RUST_LOG", "trace"),
        Case::new(
            "no credentials, and an instance metadata service that refuses",
            &[&url("x"), &path("never")],
            3,
            &["ListObjectsV2", "configure credentials"],
        )
        .without("AWS_ACCESS_KEY_ID")
        .without("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "false")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &refusing_metadata),
        Case::new(
            "expired credentials",
            &[
                &url("x"),
                &path("never"),
                "--endpoint-url",
                &expired_endpoint,
            ],
            3,
            &["ExpiredToken", "refresh the credentials"],
        )
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("RUST_LOG", "trace"),
        Case::new(
            "missing local source",
            &[&path("missing"), &url("x")],
            3,
            &["No such file or directory"],
        ),
        Case::new(
            "destination is a file",
            &[src, &path("a-file")],
            3,
            &["exists and is not a directory"],
        ),
        Case {
            no_dac_override: true,
            ..Case::new(
                "unreadable local file",
                &[src, &url("unreadable")],
                1,
                &["locked.txt", "Permission denied"],
            )
        },
        Case::new(
            "keys that cannot be file names",
            &[&url("keys"), &path("keys")],
            1,
            &[
                "is in the way",
                "a directory tree cannot hold both",
                "longer than 255 bytes",
                "'..' segment",
            ],
        ),
        Case::new(
            "full disk",
            &[&url("big"), small_disk.0.to_str().unwrap()],
            1,
            &["No space left on device", "free space on the destination"],
        ),
    ];
    for case in &cases {
        let run = case.run();
        let output = format!("{}{}", run.stdout, run.stderr);
        assert_eq!(run.code, case.code, "{}:\n{output}", case.name);
        for want in &case.says {
            assert!(
                output.contains(want),
                "{}: no {want:?} in:\n{output}",
                case.name
            );
        }
        for secret in [SECRET, SESSION_TOKEN] {
            assert!(
                !output.contains(secret),
                "{}: a secret in:\n{output}",
                case.name
            );
        }
        // Traces asked for with RUST_LOG may show the SDK's own debug output.
        let tracing = case.env.iter().any(|(key, _)| *key == "RUST_LOG");
        let dump = ["panicked", "RUST_BACKTRACE", "DispatchFailure(", "Error {"];
        assert!(
            tracing || !dump.iter().any(|d| output.contains(d)),
            "{}: a panic or debug dump:\n{output}",
            case.name
        );
        assert!(!output.contains("panicked"), "{}:\n{output}", case.name);
    }
    // What could be done was done.
    assert!(Path::new(&path("keys/fine.txt")).exists());
    // A key that cannot be a file name is refused before it is downloaded.
    let keys = Case::new("again", &[&url("keys"), &path("keys-again")], 1, &[]).run();
    assert_eq!(
        keys.requests("GetObject"),
        3,
        "fine.txt, a, a/b:\n{}",
        keys.stderr
    );
    assert!(std::fs::read_dir(&small_disk.0).unwrap().next().is_none());
    let uploaded = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("unreadable/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = uploaded.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["unreadable/readable.txt"]);
    assert!(Proxy::count(&proxy.counters.requests) > 0);
}

#[test]
fn usage_errors_exit_2_with_the_reason() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["/tmp/a", "/tmp/b", "--threads", "0"],
            "--threads must be between",
        ),
        (
            &["/tmp/a", "/tmp/b", "--include", "*.jpg"],
            "--include \"*.jpg\" comes before any --exclude",
        ),
        (&["/tmp/a"], "required"),
        (
            &["/tmp/a", "/tmp/b", "--compare", "crc"],
            "invalid value 'crc'",
        ),
    ];
    for (args, want) in cases {
        let run = crate::s3mirror(args);
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
}
