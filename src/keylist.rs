//! Lists of keys in files, one per line: `--failed-keys` writes the keys that failed as
//! they fail, and `--files-from` reads such a list to restrict a run to its keys;
//! `--manifest-out` writes an S3 Batch Operations manifest.
//!
//! A line is a key relative to the location's prefix, as the summary shows it; a
//! trailing `\r` is dropped and blank lines are skipped when reading. A key that holds a line
//! break cannot be written to such a list; it is left out with a warning (the summary
//! still names it).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The keys of `--files-from`.
pub fn read_keys(path: &Path) -> std::io::Result<HashSet<String>> {
    let mut keys = HashSet::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        let key = line.strip_suffix('\r').unwrap_or(&line);
        if !key.is_empty() {
            keys.insert(key.to_owned());
        }
    }
    Ok(keys)
}

/// A file written line by line from any worker; a failed write is warned about, since
/// the run goes on without it.
struct Lines {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl Lines {
    /// Creates (or empties) the file.
    fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    fn write(&self, line: &str) {
        let mut out = self.out.lock().expect("lines lock");
        if let Err(err) = writeln!(out, "{line}") {
            tracing::warn!("writing {}: {err}", self.path.display());
        }
    }

    fn flush(&self) -> std::io::Result<()> {
        self.out.lock().expect("lines lock").flush()
    }
}

/// The `--failed-keys` file, written as failures happen, so that every failed key is in
/// it however many there are.
pub struct FailedKeys(Lines);

impl FailedKeys {
    /// Creates (or empties) the file, so that a run with no failure leaves it empty.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Lines::create(path).map(Self)
    }

    pub fn push(&self, key: &str) {
        if key.contains(['\n', '\r']) {
            tracing::warn!("{key:?} holds a line break and cannot be listed in --failed-keys");
            return;
        }
        self.0.write(key);
    }

    pub fn flush(&self) {
        if let Err(err) = self.0.flush() {
            tracing::warn!("writing {}: {err}", self.0.path.display());
        }
    }
}

/// `--manifest-out`: the objects a run would copy, as an S3 Batch Operations CSV
/// manifest (`bucket,key`, keys URL-encoded; `bucket,key,version` for the versions of a
/// point in time).
pub struct Manifest {
    lines: Lines,
    /// Objects over the CopyObject limit, which Batch Operations cannot copy.
    too_large: std::sync::atomic::AtomicU64,
}

/// The largest object CopyObject (and so S3 Batch Operations' copy) can copy.
pub const BATCH_COPY_LIMIT: u64 = 5 << 30;

impl Manifest {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            lines: Lines::create(path)?,
            too_large: Default::default(),
        })
    }

    pub fn push(&self, bucket: &str, full_key: &str, version: Option<&str>, size: u64) {
        if size > BATCH_COPY_LIMIT {
            self.too_large
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let key = crate::storage::s3::url_encoded_key(full_key);
        match version {
            Some(version) => self.lines.write(&format!("{bucket},{key},{version}")),
            None => self.lines.write(&format!("{bucket},{key}")),
        }
    }

    /// Flushes the file; warns about objects Batch Operations cannot copy.
    pub fn finish(&self) -> std::io::Result<()> {
        let too_large = self.too_large.load(std::sync::atomic::Ordering::Relaxed);
        if too_large > 0 {
            tracing::warn!(
                "{too_large} object(s) in {} are over 5 GiB, which S3 Batch Operations cannot \
                 copy (it uses CopyObject); copy those with s3mirror",
                self.lines.path.display()
            );
        }
        self.lines.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failed");
        let failed = FailedKeys::create(&path).unwrap();
        for key in ["a/b c", "ü/emoji 🎉", "#hash", " spaced ", "bad\nkey"] {
            failed.push(key);
        }
        failed.flush();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\nwindows\r\n");
        std::fs::write(&path, text).unwrap();
        let keys = read_keys(&path).unwrap();
        let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [" spaced ", "#hash", "a/b c", "windows", "ü/emoji 🎉"]
        );
    }
}

#[cfg(test)]
mod manifest_tests {
    use super::*;

    #[test]
    fn manifest_lines_are_bucket_and_encoded_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.csv");
        let manifest = Manifest::create(&path).unwrap();
        manifest.push("src-bucket", "p/a b,c+ü.txt", None, 1);
        manifest.push("src-bucket", "p/plain/key.txt", None, 6 << 30);
        manifest.push("src-bucket", "p/old.txt", Some("3HL4kqtJlcpXroDTDmJ"), 1);
        manifest.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "src-bucket,p/a%20b%2Cc%2B%C3%BC.txt\nsrc-bucket,p/plain/key.txt\n\
             src-bucket,p/old.txt,3HL4kqtJlcpXroDTDmJ\n"
        );
    }
}
