//! moto's S3 server on loopback, for the AWS APIs Garage lacks: storage classes and
//! archived objects, restores, tagging, versioning. Started once per test process when a
//! test first needs it and killed when the process exits, like Garage.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;

use crate::Run;

/// moto accepts any credentials; these are what the runs and the test client send.
const ACCESS_KEY: &str = "moto-test-access-key";
const SECRET_KEY: &str = "moto-test-secret-key";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    pub endpoint: String,
}

static SERVER: OnceLock<Moto> = OnceLock::new();
static SERVER_PID: AtomicI32 = AtomicI32::new(0);

/// The moto server shared by every test in this process.
pub fn moto() -> &'static Moto {
    SERVER.get_or_init(Moto::start)
}

extern "C" fn stop_server() {
    crate::stop_spawned(SERVER_PID.load(Ordering::SeqCst));
}

impl Moto {
    fn start() -> Moto {
        let port = crate::garage::free_port();
        let log = tempfile::Builder::new()
            .prefix("s3mirror-moto-")
            .suffix(".log")
            .tempfile()
            .unwrap()
            .keep()
            .unwrap()
            .1;
        unsafe { libc::atexit(stop_server) };
        let log_file = std::fs::File::create(&log).unwrap();
        // As a module of the Python that pip installed it into, whatever PATH holds.
        let mut command = Command::new("python3");
        command
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("AWS_DEFAULT_REGION", REGION)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .stdin(Stdio::null());
        let pid = crate::spawn_server(command, "moto's server (python3 is needed)");
        SERVER_PID.store(pid, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto's server did not start (pip install 'moto[server]==5.2.5'); see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// moto states wrong CRC32Cs for multipart objects: this client's reads check none.
    pub fn client(&self) -> Client {
        crate::sdk_client(&self.endpoint, REGION, (ACCESS_KEY, SECRET_KEY), false)
    }

    pub async fn new_bucket(&self, label: &str) -> String {
        crate::create_bucket(&self.client(), label).await
    }

    /// Runs s3mirror against this server, isolated from the machine's AWS configuration.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_s3mirror"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("S3MIRROR_STATE_DIR", crate::state_dir())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .output()
            .expect("run s3mirror");
        Run::from(output)
    }
}
