//! Which process made a record or a file, and whether it may still be running: a name
//! for this process that a later process with the same pid cannot share, so that what
//! a killed run left behind can be told from what a running one still uses.

/// `<pid>-<start time>@<host>_<boot>`: the start time tells a running process from a
/// later one given the same pid; the host keeps runs on other machines sharing the
/// directory from judging each other, and the boot tells a run from before a restart,
/// which cannot be running any more.
pub fn owner_id() -> String {
    let pid = std::process::id();
    let (host, boot) = machine();
    format!("{pid}-{}@{host}_{boot}", start_time(pid).unwrap_or(0))
}

/// This host and this boot, as short hex names.
pub fn machine() -> (String, String) {
    let short = |path: &str| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let digest = crate::storage::checksum::digest(
            crate::storage::checksum::HashKind::Md5,
            text.trim().as_bytes(),
        );
        hex::encode(&digest[..4])
    };
    (
        short("/proc/sys/kernel/hostname"),
        short("/proc/sys/kernel/random/boot_id"),
    )
}

/// Whether the process that wrote a journal may still run. One from another host is
/// not this run's to judge, so it counts as running (a bucket lifecycle rule is the
/// backstop for those); one from an earlier boot of this host is not running.
pub fn is_running(owner: &str) -> bool {
    let (process, at) = owner.split_once('@').unwrap_or((owner, ""));
    if let Some((host, boot)) = at.split_once('_') {
        let (this_host, this_boot) = machine();
        if host != this_host {
            return true;
        }
        if boot != this_boot {
            return false;
        }
    }
    let Some((pid, start)) = process.split_once('-') else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    pid != 0 && start_time(pid) == Some(start)
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_runs_and_a_made_up_one_does_not() {
        assert!(is_running(&owner_id()));
        let pid = std::process::id();
        let start = start_time(pid).unwrap();
        let (host, boot) = machine();
        assert!(!is_running(&format!("{pid}-{}@{host}_{boot}", start + 1)));
        assert!(!is_running("0-0"));
        assert!(!is_running("junk"));
        // Another host's journal is never taken for a dead process's; one from before
        // this host's last boot is.
        assert!(is_running(&format!("{pid}-{start}@00000000_{boot}")));
        assert!(!is_running(&format!("{pid}-{start}@{host}_00000000")));
    }
}
