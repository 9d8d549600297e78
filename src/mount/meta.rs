//! Modes, owners and times kept as user metadata, in the keys s3fs and rclone use, so a
//! tree written by either shows through the mount as they show it, and the reverse:
//! `mode` (decimal `st_mode` with the file-type bits, as s3fs writes it; a leading `0`
//! marks rclone's octal form), `uid`, `gid` and `mtime` (seconds since the epoch, with
//! nanoseconds after a dot when there are any).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File-type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;

/// What an object's metadata says about the file it stands for; `None` where it says
/// nothing (the mount's defaults apply).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredAttrs {
    /// `st_mode`, file-type bits included.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
}

impl StoredAttrs {
    pub fn from_metadata(metadata: &HashMap<String, String>) -> Self {
        let number = |key: &str| metadata.get(key).and_then(|v| v.trim().parse::<u32>().ok());
        Self {
            mode: metadata.get("mode").and_then(|v| parse_mode(v)),
            uid: number("uid"),
            gid: number("gid"),
            mtime: metadata.get("mtime").and_then(|v| parse_time(v)),
        }
    }

    /// The metadata to store: only what is set.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut metadata = HashMap::new();
        if let Some(mode) = self.mode {
            metadata.insert("mode".to_owned(), mode.to_string());
        }
        if let Some(uid) = self.uid {
            metadata.insert("uid".to_owned(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            metadata.insert("gid".to_owned(), gid.to_string());
        }
        if let Some(mtime) = self.mtime {
            metadata.insert("mtime".to_owned(), format_time(mtime));
        }
        metadata
    }

    pub fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & S_IFMT == S_IFLNK)
    }
}

fn parse_mode(value: &str) -> Option<u32> {
    let value = value.trim();
    let mode = match value.strip_prefix('0') {
        Some(octal) if !octal.is_empty() => u32::from_str_radix(octal, 8).ok()?,
        _ => value.parse().ok()?,
    };
    // Only permission bits and a known file type make sense.
    let kind = mode & S_IFMT;
    (mode <= 0o177777 && matches!(kind, 0 | S_IFREG | S_IFDIR | S_IFLNK)).then_some(mode)
}

fn parse_time(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    let (secs, fraction) = value.split_once('.').unwrap_or((value, ""));
    let secs: u64 = secs.parse().ok()?;
    let nanos = match fraction {
        "" => 0,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => {
            let digits = &digits[..digits.len().min(9)];
            digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn format_time(time: SystemTime) -> String {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(_) => "0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn s3fs_and_rclone_forms_are_read() {
        // s3fs: decimal st_mode with the type bits, whole seconds.
        let s3fs = StoredAttrs::from_metadata(&metadata(&[
            ("mode", "33261"),
            ("uid", "1000"),
            ("gid", "100"),
            ("mtime", "1700000000"),
        ]));
        assert_eq!(s3fs.mode, Some(S_IFREG | 0o755));
        assert_eq!((s3fs.uid, s3fs.gid), (Some(1000), Some(100)));
        assert_eq!(
            s3fs.mtime,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        // rclone: octal with a leading 0, fractional seconds.
        let rclone = StoredAttrs::from_metadata(&metadata(&[
            ("mode", "0100640"),
            ("mtime", "1700000000.25"),
        ]));
        assert_eq!(rclone.mode, Some(S_IFREG | 0o640));
        assert_eq!(
            rclone.mtime,
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250))
        );
        let link =
            StoredAttrs::from_metadata(&metadata(&[("mode", &(S_IFLNK | 0o777).to_string())]));
        assert!(link.is_symlink());
    }

    #[test]
    fn nonsense_is_ignored() {
        let attrs = StoredAttrs::from_metadata(&metadata(&[
            ("mode", "rwxr-xr-x"),
            ("uid", "-1"),
            ("mtime", "yesterday"),
        ]));
        assert_eq!(attrs, StoredAttrs::default());
        assert_eq!(parse_mode("9999999"), None);
        assert_eq!(parse_time("1.5x"), None);
    }

    #[test]
    fn what_is_written_is_read_back() {
        let attrs = StoredAttrs {
            mode: Some(S_IFREG | 0o600),
            uid: Some(0),
            gid: Some(42),
            mtime: Some(UNIX_EPOCH + Duration::new(1_600_000_000, 5)),
        };
        let stored = attrs.to_metadata();
        assert_eq!(stored["mtime"], "1600000000.000000005");
        assert_eq!(stored["mode"], "33152");
        assert_eq!(StoredAttrs::from_metadata(&stored), attrs);
        assert!(StoredAttrs::default().to_metadata().is_empty());
    }
}
