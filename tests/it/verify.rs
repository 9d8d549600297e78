//! `s3mirror verify`: every difference between two sides, by kind, with exit 0 when
//! identical, 1 when they differ and 2 when something could not be compared.

use std::time::{Duration, SystemTime};

use crate::garage::garage;
use crate::{s3mirror, write_tree, Run};

/// The lines of a verify's stdout that start with `kind`, as keys.
fn listed(run: &Run, kind: &str) -> Vec<String> {
    let mut keys: Vec<String> = run
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix(kind))
        .map(|rest| rest.trim().to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn verify_reports_each_kind_of_difference_and_only_differences() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("verify").await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let files: Vec<(String, Vec<u8>)> = (0..20u32)
        .map(|i| (format!("d/f{i:02}"), format!("content {i}").into_bytes()))
        .collect();
    write_tree(&src, &files);
    let src = src.to_str().unwrap();
    let url = format!("s3://{bucket}/v");
    s3mirror(&[src, &url]).assert_code(0);

    let same = s3mirror(&["verify", src, &url]);
    same.assert_code(0);
    assert_eq!(same.count("identical"), 20, "{}", same.stderr);
    assert!(same.stdout.is_empty(), "{}", same.stdout);
    // A listing is enough: no object is read.
    assert_eq!(same.requests("GetObject") + same.requests("HeadObject"), 0);

    // One object gone, one added, one file longer, one rewritten to the same size with
    // its old mtime kept: only content hashing sees the last.
    client
        .delete_object()
        .bucket(&bucket)
        .key("v/d/f00")
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket(&bucket)
        .key("v/d/zz-extra")
        .body(b"extra".to_vec().into())
        .send()
        .await
        .unwrap();
    let dir = work.path().join("src/d");
    std::fs::write(dir.join("f01"), b"content 1 and more").unwrap();
    let sneaky = dir.join("f02");
    let mtime = std::fs::metadata(&sneaky).unwrap().modified().unwrap();
    std::fs::write(&sneaky, b"CONTENT 2").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&sneaky)
        .unwrap()
        .set_modified(mtime)
        .unwrap();

    let shallow = s3mirror(&["verify", src, &url]);
    shallow.assert_code(1);
    assert_eq!(listed(&shallow, "missing "), ["d/f00"]);
    assert_eq!(listed(&shallow, "extra "), ["d/zz-extra"]);
    assert_eq!(listed(&shallow, "differs "), ["d/f01 (size differs)"]);
    assert_eq!(shallow.count("identical"), 18);

    let deep = s3mirror(&["verify", src, &url, "--checksum"]);
    deep.assert_code(1);
    assert_eq!(
        listed(&deep, "differs "),
        ["d/f01 (size differs)", "d/f02 (content differs)"]
    );
    assert_eq!(deep.count("identical"), 17);

    // Filters apply as in a sync.
    let filtered = s3mirror(&[
        "verify",
        src,
        &url,
        "--exclude",
        "d/f0[012]",
        "--exclude",
        "*extra",
    ]);
    filtered.assert_code(0);

    // A sync with --verify repairs what it can and proves the rest: the extra object
    // stays (no --delete), so the sides still differ.
    // Touched a second after the first upload, so that the sync sees it is newer.
    std::thread::sleep(Duration::from_millis(1100));
    let later = SystemTime::now();
    std::fs::File::options()
        .write(true)
        .open(&sneaky)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let repaired = s3mirror(&[src, &url, "--verify"]);
    repaired.assert_code(1);
    assert_eq!(listed(&repaired, "extra "), ["d/zz-extra"]);
    assert_eq!(repaired.count("identical"), 20, "{}", repaired.stderr);
    s3mirror(&[src, &url, "--delete", "--verify"]).assert_code(0);

    // Bucket to bucket, proving content by ETag.
    let copy = format!("s3://{bucket}/copy");
    s3mirror(&[&url, &copy]).assert_code(0);
    s3mirror(&["verify", &url, &copy, "--checksum"]).assert_code(0);

    // Something that cannot be compared is exit 2.
    let missing = s3mirror(&["verify", src, "s3://no-such-bucket-here"]);
    missing.assert_code(2);
    assert!(
        missing.stderr.contains("NoSuchBucket"),
        "{}",
        missing.stderr
    );
}
