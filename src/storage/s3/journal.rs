//! A record on local disk of the multipart uploads a process has started and not yet
//! completed or aborted, so that a later run can abort those that a killed process left
//! behind, and only those: S3 cannot tell who started an upload, so other tools'
//! uploads are recognised by their absence from these records and never touched.
//!
//! Each process appends to its own file, `<pid>-<start time>@<host>_<boot>.journal`, in
//! the state directory: `+ endpoint bucket upload-id key` when an upload is created and
//! `- upload-id` when it ends (fields percent-encoded). A run removes its file when it
//! leaves nothing open. A file whose owner is no longer running is claimed by renaming
//! it to the claimer's name, so two runs never clean the same file; what the claimer
//! cannot reach (another endpoint or bucket) is put back, under an owner that never runs,
//! for a later run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::liveness::{is_running, owner_id};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

const SUFFIX: &str = ".journal";

/// Bytes escaped in a field: whatever would break a line into other fields or lines.
const FIELD: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// An upload a run started, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub endpoint: String,
    pub bucket: String,
    pub upload_id: String,
    pub key: String,
}

/// This process's record.
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    state: Mutex<JournalState>,
}

struct JournalState {
    file: Option<File>,
    open: usize,
}

/// Names claimed files uniquely within this process.
static CLAIMS: AtomicU64 = AtomicU64::new(0);

impl Journal {
    /// The journal of this process in `dir`, created on its first record.
    pub fn new(dir: PathBuf) -> Self {
        let path = dir.join(format!("{}{SUFFIX}", owner_id()));
        Self {
            dir,
            path,
            state: Mutex::new(JournalState {
                file: None,
                open: 0,
            }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn started(&self, upload: &Recorded) -> std::io::Result<()> {
        let line = started_line(upload);
        let mut state = self.state.lock().expect("journal lock");
        if state.file.is_none() {
            // Journals name buckets and keys: for this user only.
            crate::private::create_dir(&self.dir)?;
            let file = crate::private::append_file(&self.path)?;
            state.file = Some(file);
        }
        state.open += 1;
        write_line(state.file.as_mut(), &line)
    }

    pub fn finished(&self, upload_id: &str) -> std::io::Result<()> {
        let mut state = self.state.lock().expect("journal lock");
        state.open = state.open.saturating_sub(1);
        write_line(state.file.as_mut(), &format!("- {}\n", encode(upload_id)))
    }

    /// Removes the file when every upload it records has ended.
    pub fn close(&self) {
        let state = self.state.lock().expect("journal lock");
        if state.file.is_some() && state.open == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Takes over the records of runs that are no longer running which hold an open
    /// upload that `reachable` accepts (one this run can end), and returns the uploads
    /// they left open, each with the file it is recorded in. Records holding none are
    /// left alone, so that a run on another bucket never hides them from one on theirs.
    pub fn claim_orphans(
        &self,
        reachable: impl Fn(&Recorded) -> bool,
    ) -> std::io::Result<Vec<Claimed>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err),
        };
        let mut claimed = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(owner) = name.strip_suffix(SUFFIX).map(|n| n.split('.').next()) else {
                continue;
            };
            if owner.is_none_or(is_running) || path == self.path {
                continue;
            }
            // Read before claiming; a file another run claimed meanwhile is gone.
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if !open_uploads(&text).iter().any(&reachable) {
                continue;
            }
            let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
            let mine = self.dir.join(format!("{}.{n}{SUFFIX}", owner_id()));
            // Whoever renames first owns it; the other finds it gone.
            if std::fs::rename(&path, &mine).is_err() {
                continue;
            }
            let text = std::fs::read_to_string(&mine)?;
            claimed.push(Claimed {
                path: mine,
                open: open_uploads(&text),
            });
        }
        Ok(claimed)
    }
}

/// A claimed record and the uploads still open in it.
pub struct Claimed {
    pub path: PathBuf,
    pub open: Vec<Recorded>,
}

impl Claimed {
    /// Keeps `left` (uploads this run could not end) for a later run, at once: under a
    /// name whose owner is never running. Removes the file when none are left.
    pub fn settle(self, left: &[Recorded]) -> std::io::Result<()> {
        if left.is_empty() {
            return std::fs::remove_file(&self.path);
        }
        let mut text = String::new();
        for upload in left {
            text.push_str(&started_line(upload));
        }
        std::fs::write(&self.path, text)?;
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        std::fs::rename(
            &self.path,
            self.path.with_file_name(format!("{NO_OWNER}.{name}")),
        )
    }
}

/// The owner of records left for any later run: pid 0 is never a running s3mirror.
const NO_OWNER: &str = "0-0";

fn started_line(upload: &Recorded) -> String {
    format!(
        "+ {} {} {} {}\n",
        encode(&upload.endpoint),
        encode(&upload.bucket),
        encode(&upload.upload_id),
        encode(&upload.key)
    )
}

fn write_line(file: Option<&mut File>, line: &str) -> std::io::Result<()> {
    match file {
        // One write per line: appends of a line are not interleaved with other writers.
        Some(file) => file.write_all(line.as_bytes()),
        None => Ok(()),
    }
}

/// Uploads started and not ended in a journal's text; a torn last line is ignored.
fn open_uploads(text: &str) -> Vec<Recorded> {
    let mut open = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<String> = line.split(' ').map(decode).collect();
        match fields.as_slice() {
            [op, endpoint, bucket, upload_id, key] if op == "+" => {
                open.insert(
                    upload_id.clone(),
                    Recorded {
                        endpoint: endpoint.clone(),
                        bucket: bucket.clone(),
                        upload_id: upload_id.clone(),
                        key: key.clone(),
                    },
                );
            }
            [op, upload_id] if op == "-" => {
                open.remove(upload_id);
            }
            _ => {}
        }
    }
    open.into_values().collect()
}

fn encode(field: &str) -> String {
    utf8_percent_encode(field, FIELD).to_string()
}

fn decode(field: &str) -> String {
    percent_decode_str(field).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(id: &str, key: &str) -> Recorded {
        Recorded {
            endpoint: "http://127.0.0.1:3900".into(),
            bucket: "b".into(),
            upload_id: id.into(),
            key: key.into(),
        }
    }

    #[test]
    fn open_uploads_survive_odd_keys_and_torn_lines() {
        let odd = "dir/a b%20\n\tc ü";
        let text = format!(
            "+ {} b u1 {}\n+ {} b u2 k\n- u2\n+ x",
            encode("http://127.0.0.1:3900"),
            encode(odd),
            encode("http://127.0.0.1:3900")
        );
        assert_eq!(open_uploads(&text), vec![upload("u1", odd)]);
    }

    #[test]
    fn orphans_are_claimed_once_and_what_is_left_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!("0-0{SUFFIX}"));
        std::fs::write(&dead, "+ e b u1 k1\n+ e b u2 k2\n- u1\n+ other b u3 k3\n").unwrap();
        let journal = Journal::new(dir.path().to_path_buf());
        journal.started(&upload("mine", "k")).unwrap();
        let elsewhere = |u: &Recorded| u.endpoint == "nowhere";
        assert!(journal.claim_orphans(elsewhere).unwrap().is_empty());
        assert!(
            dead.exists(),
            "a record with nothing reachable is left alone"
        );
        let mut claimed = journal.claim_orphans(|u| u.endpoint == "e").unwrap();
        assert_eq!(claimed.len(), 1, "only the dead process's file");
        assert!(!dead.exists());
        let claim = claimed.remove(0);
        let ids: Vec<&str> = claim.open.iter().map(|u| u.upload_id.as_str()).collect();
        assert_eq!(ids, ["u2", "u3"]);
        let left = vec![claim.open[1].clone()];
        claim.settle(&left).unwrap();
        // What is left is free for the next run at once.
        let again = journal.claim_orphans(|u| u.endpoint == "other").unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].open, left);

        journal.finished("mine").unwrap();
        journal.close();
        assert!(!journal.path.exists());
    }
}
