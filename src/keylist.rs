//! Lists of keys in files, one per line: `--failed-keys` writes the keys that failed as
//! they fail, and `--files-from` reads such a list to restrict a run to its keys.
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

/// The `--failed-keys` file, written as failures happen, so that every failed key is in
/// it however many there are.
pub struct FailedKeys {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
}

impl FailedKeys {
    /// Creates (or empties) the file, so that a run with no failure leaves it empty.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    pub fn push(&self, key: &str) {
        if key.contains(['\n', '\r']) {
            tracing::warn!("{key:?} holds a line break and cannot be listed in --failed-keys");
            return;
        }
        let mut out = self.out.lock().expect("failed keys lock");
        if let Err(err) = writeln!(out, "{key}") {
            tracing::warn!("writing {}: {err}", self.path.display());
        }
    }

    pub fn flush(&self) {
        if let Err(err) = self.out.lock().expect("failed keys lock").flush() {
            tracing::warn!("writing {}: {err}", self.path.display());
        }
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
