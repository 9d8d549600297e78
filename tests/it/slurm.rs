//! A one-node Slurm cluster on loopback for the scale-out test: munged (as user munge),
//! slurmctld and slurmd, all children of the test with their state in a temporary
//! directory, stopped when the cluster is dropped.
//!
//! Slurm comes from Debian (`slurm-wlm`, `munge`; scripts/test.sh installs them). Where
//! it is missing the test is skipped, except in CI (`CI=true`), where that fails.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MUNGE_SOCKET: &str = "/run/munge/munge.socket.2";

pub struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    /// Started by this cluster, stopped in reverse order on drop (a munged that was
    /// already running is left alone).
    daemons: Vec<(&'static str, Child)>,
}

/// Whether the Slurm and munge binaries are here; in CI their absence is a failure.
pub fn available() -> bool {
    let found = ["slurmctld", "slurmd", "sbatch", "sinfo", "munged", "munge"]
        .iter()
        .all(|tool| on_path(tool));
    if !found && std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("Slurm is not installed (apt-get install slurm-wlm munge; scripts/test.sh does)");
    }
    if !found {
        eprintln!("skipped: Slurm is not installed (apt-get install slurm-wlm munge)");
    }
    found
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|dir| dir.join(tool).is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn short_hostname() -> String {
    let out = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn uid_gid_of(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, user]).output().expect("id");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .expect("a numeric id")
    };
    (id("-u"), id("-g"))
}

fn munge_works() -> bool {
    Command::new("munge")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("s3mirror-slurm-")
            .tempdir()
            .unwrap();
        let mut cluster = Cluster {
            conf: dir.path().join("slurm.conf"),
            dir,
            daemons: Vec::new(),
        };
        cluster.start_munge();
        let host = short_hostname();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let d = cluster.dir.path().display().to_string();
        std::fs::create_dir_all(cluster.dir.path().join("state")).unwrap();
        std::fs::create_dir_all(cluster.dir.path().join("spool")).unwrap();
        let conf = format!(
            "ClusterName=s3mirror-test\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmctldPort={ctld_port}\n\
             SlurmdPort={slurmd_port}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             MpiDefault=none\n\
             ReturnToService=2\n\
             SlurmdParameters=config_overrides\n\
             MailProg=/bin/true\n\
             StateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool\n\
             SlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\n\
             SlurmctldLogFile={d}/slurmctld.log\n\
             SlurmdLogFile={d}/slurmd.log\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
             PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
            ctld_port = free_port(),
            slurmd_port = free_port(),
        );
        std::fs::write(&cluster.conf, conf).unwrap();
        let ctld = cluster.daemon("slurmctld", &["-D", "-c"]);
        cluster.daemons.push(("slurmctld", ctld));
        let slurmd = cluster.daemon("slurmd", &["-D", "-N", &host]);
        cluster.daemons.push(("slurmd", slurmd));
        cluster.wait_for_idle_node();
        cluster
    }

    fn start_munge(&mut self) {
        if Path::new(MUNGE_SOCKET).exists() && munge_works() {
            return;
        }
        let (uid, gid) = uid_gid_of("munge");
        for dir in ["/run/munge", "/var/lib/munge", "/var/log/munge"] {
            std::fs::create_dir_all(dir).unwrap();
            let path = std::ffi::CString::new(dir).unwrap();
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::chown(path.as_ptr(), uid, gid) };
        }
        let child = Command::new("munged")
            .args(["-F", "--force"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("munged.log")).unwrap())
            .spawn()
            .expect("munged");
        self.daemons.push(("munged", child));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !munge_works() {
            assert!(
                Instant::now() < deadline,
                "munged did not start: {}",
                self.log("munged.log")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn daemon(&self, name: &str, args: &[&str]) -> Child {
        Command::new(name)
            .args(args)
            .args(["-f".as_ref(), self.conf.as_os_str()])
            .env("SLURM_CONF", &self.conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{name}.stderr"))).unwrap())
            .spawn()
            .unwrap_or_else(|err| panic!("{name}: {err}"))
    }

    /// A Slurm command (sbatch, sinfo...) talking to this cluster, in an environment
    /// of its own: what it is given, PATH and SLURM_CONF.
    pub fn command(&self, name: &str) -> Command {
        let mut command = Command::new(name);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SLURM_CONF", &self.conf);
        command
    }

    fn wait_for_idle_node(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = self
                .command("sinfo")
                .args(["-h", "-N", "-o", "%T"])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
                .unwrap_or_default();
            if state == "idle" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Slurm node is not idle but {state:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// The daemons' logs, for a failure message.
    pub fn logs(&self) -> String {
        [
            "slurmctld.log",
            "slurmctld.stderr",
            "slurmd.log",
            "slurmd.stderr",
            "munged.log",
        ]
        .iter()
        .map(|name| format!("== {name}\n{}", self.log(name)))
        .collect::<Vec<_>>()
        .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while let Some((_, mut child)) = self.daemons.pop() {
            // SAFETY: signalling a child this process started and has not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
