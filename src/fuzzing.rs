//! The properties the fuzz targets (`tests/fuzz`, run with `cargo fuzz`) check on
//! arbitrary input: the parsers of everything a user types never panic, and what they
//! accept keeps its invariants. Unit tests run the same checks on seed inputs, so the
//! targets never drift from the code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{Cli, Command};
use crate::config::SyncSettings;
use crate::filter::{Filters, Rule};
use crate::location::Location;
use crate::storage::{ETag, Entry};
use crate::units::parse_size;

/// A location parses, or is refused with a message; an S3 location's prefix is empty
/// or ends with `/`, and its display parses back to the same location.
pub fn location(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Location::parse(text) {
        Ok(Location::S3(url)) => {
            assert!(url.prefix().is_empty() || url.prefix().ends_with('/'));
            assert!(!url.bucket().is_empty());
            let again = Location::parse(&url.to_string()).expect("a shown location parses");
            assert_eq!(again, Location::S3(url));
        }
        Ok(Location::Local(_)) => {}
        Err(err) => assert!(!err.to_string().is_empty()),
    }
}

/// A size parses to what its digits and unit say, or is refused.
pub fn size(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bytes) = parse_size(text) {
        let digits = text.trim();
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            assert_eq!(Some(bytes), digits.parse().ok());
        }
    }
}

/// Any command line, NUL-separated: parsing it and turning it into settings ends in
/// settings or an error, never a panic. Sizes, durations, globs, locations, URLs and
/// every other option value pass through here.
pub fn command_line(data: &[u8]) {
    let args = data
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned());
    let Ok(cli) = Cli::parse_with_default(std::iter::once("s3mirror".to_owned()).chain(args))
    else {
        return;
    };
    let settings = match cli.command {
        Command::Sync(args) => SyncSettings::from_args(*args),
        Command::Verify(args) => SyncSettings::for_verify(args),
        Command::Plan(args) => SyncSettings::for_plan(args),
        Command::Mount(_) | Command::Completions(_) | Command::Man(_) => return,
    };
    if let Ok(settings) = settings {
        assert!(settings.threads >= 1);
    }
}

/// Patterns compile or are refused, and any key then is selected or not: the first byte
/// splits the input into patterns and one key, the rest alternate include and exclude.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts: Vec<&str> = text.split('\n').collect();
    let key = parts.pop().unwrap_or_default();
    let rules = parts.iter().enumerate().map(|(i, pattern)| {
        // Alternating from an exclude: an include before every exclude is refused.
        let rule = if i % 2 == 0 {
            Rule::Exclude
        } else {
            Rule::Include
        };
        (rule, *pattern)
    });
    let Ok(filters) = Filters::default().with_patterns(rules) else {
        return;
    };
    let entry = Entry {
        key: key.to_owned(),
        size: key.len() as u64,
        mtime: UNIX_EPOCH + Duration::from_secs(key.len() as u64),
        etag: Some(ETag::parse(key)),
        skip: None,
        storage_class: None,
        version: None,
    };
    let selected = filters.selects(&entry, SystemTime::now());
    assert_eq!(selected, filters.key_selected(key));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_hold_the_properties() {
        let seeds: &[&[u8]] = &[
            b"s3://bucket/a//b",
            b"s3://bucket/prefix/",
            b"S3://Bucket_1/x",
            b"s3:/x",
            b"gs://x",
            b"",
            b"./local dir",
            b"64MiB",
            b"1.5G",
            b"18446744073709551616",
            b"99999999999999999999TiB",
            b" 12 ",
            b"src\0s3://bkt\0--max-age\x0099999999999999999999y",
            b"src\0s3://bkt\0--part-size\x001.9999999999999999999GiB",
            b"src\0s3://bkt\0--include\0[\0--endpoint-url\0http://[",
            b"a\0b\0--threads\x0018446744073709551615",
            b"*.txt\n**/x\n{a,b\nkey.txt",
            b"[!a-]\n\\\nkey",
        ];
        for seed in seeds {
            location(seed);
            size(seed);
            command_line(seed);
            filter(seed);
        }
    }
}
