//! A real Garage server on loopback, started once per test process and stopped (and
//! its data removed) when the process exits, even when a test panics.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;

pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const REGION: &str = "garage-test";

pub struct Garage {
    pub endpoint: String,
    pub port: u16,
    binary: PathBuf,
    config: PathBuf,
}

static SERVER: OnceLock<Garage> = OnceLock::new();
static SERVER_PID: AtomicI32 = AtomicI32::new(0);
static DATA_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The server shared by every test in this process.
pub fn garage() -> &'static Garage {
    SERVER.get_or_init(Garage::start)
}

fn garage_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        return PathBuf::from(bin);
    }
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("garage"))
        .find(|candidate| candidate.is_file());
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    in_path
        .or_else(|| cargo_home.map(|home| home.join("bin/garage")).filter(|p| p.is_file()))
        .expect("the garage binary is needed for the integration tests: cargo install garage@2.5.0 --locked (or set GARAGE_BIN)")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

extern "C" fn stop_server() {
    crate::stop_spawned(SERVER_PID.load(Ordering::SeqCst));
    if let Some(dir) = DATA_DIR.lock().ok().and_then(|mut d| d.take()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Garage {
    fn start() -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("s3mirror-garage-")
            .tempdir()
            .unwrap()
            .keep();
        *DATA_DIR.lock().unwrap() = Some(dir.clone());
        unsafe { libc::atexit(stop_server) };

        let (port, rpc_port) = (free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{port}"
"#,
                dir = dir.display(),
                secret = SECRET_KEY,
            ),
        )
        .unwrap();

        let binary = garage_binary();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut command = Command::new(&binary);
        command
            .arg("-c")
            .arg(&config)
            .args(["server", "--single-node", "--default-access-key"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null());
        SERVER_PID.store(crate::spawn_server(command, "garage"), Ordering::SeqCst);

        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let allowed = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .args(["key", "allow", "--create-bucket", ACCESS_KEY])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if allowed {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start; see {}",
                dir.join("server.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Garage {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            binary,
            config,
        }
    }

    /// Runs the garage CLI against this server.
    fn admin(&self, args: &[&str]) {
        let output = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "garage {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Another access key (an id of `GK` and 24 hex digits, a secret of 64), allowed
    /// nothing until `allow` says so.
    pub fn import_key(&self, id: &str, secret: &str) {
        self.admin(&["key", "import", "--yes", "-n", id, id, secret]);
    }

    /// A bucket under a global name, which other keys can be allowed to (a bucket made
    /// through the S3 API is named for its creator's key only); the default key may
    /// read, write and own it.
    pub fn new_shared_bucket(&self, label: &str) -> String {
        let name = crate::unique_name(label);
        self.admin(&["bucket", "create", &name]);
        self.admin(&[
            "bucket", "allow", "--read", "--write", "--owner", &name, "--key", ACCESS_KEY,
        ]);
        name
    }

    /// Allows key `id` to read and/or write `bucket`.
    pub fn allow(&self, bucket: &str, id: &str, read: bool, write: bool) {
        let mut args = vec!["bucket", "allow"];
        args.extend(read.then_some("--read"));
        args.extend(write.then_some("--write"));
        args.extend([bucket, "--key", id]);
        self.admin(&args);
    }

    /// An SDK client for setting up and checking buckets from tests.
    pub fn client(&self) -> Client {
        crate::sdk_client(&self.endpoint, REGION, (ACCESS_KEY, SECRET_KEY), true)
    }

    /// Creates a bucket with a name no other test uses.
    pub async fn new_bucket(&self, label: &str) -> String {
        crate::create_bucket(&self.client(), label).await
    }
}
