//! `--compare checksum`: S3 additional checksums written, stored and compared on every
//! pairing, including multipart objects, against the real server.

use std::path::Path;

use aws_sdk_s3::types::ChecksumMode;
use base64::Engine;

use crate::garage::garage;
use crate::SMALL_PARTS;
use crate::{bucket_contents, put_object, s3mirror, tree_contents, write_tree};

const MIB: usize = 1 << 20;

fn big_file() -> Vec<u8> {
    (0..12 * MIB + 7)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

/// The stored checksum as `(algorithm, value)`, e.g. `("CRC32C", "abc=")`.
async fn stored(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Option<(String, String)> {
    let head = client
        .head_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let found = [
        ("CRC32C", head.checksum_crc32_c()),
        ("SHA256", head.checksum_sha256()),
        ("CRC32", head.checksum_crc32()),
    ]
    .into_iter()
    .find_map(|(name, value)| value.map(|v| (name.to_owned(), v.to_owned())));
    found
}

/// Rewrites a file with other bytes of the same length and the same mtime, so that only
/// a content comparison can tell.
fn tamper(path: &Path) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut data = std::fs::read(path).unwrap();
    data[0] ^= 0xff;
    std::fs::write(path, data).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(mtime).unwrap();
}

fn run_ok(args: &[&str], extra: &[&str]) -> crate::Run {
    let run = s3mirror(&[args, extra, &["--compare", "checksum"]].concat());
    run.assert_code(0);
    run
}

#[tokio::test]
async fn checksum_mode_finds_content_changes_on_every_pairing() {
    let server = garage();
    let client = server.client();
    let (first, second) = (
        server.new_bucket("ck-first").await,
        server.new_bucket("ck-second").await,
    );
    let work = tempfile::tempdir().unwrap();
    let (source, download) = (work.path().join("src"), work.path().join("down"));
    write_tree(
        &source,
        &[
            ("big.bin".into(), big_file()),
            ("small.txt".into(), b"same size, other bytes".to_vec()),
        ],
    );
    let src = source.to_str().unwrap();
    let up = format!("s3://{first}/up");

    // Upload: CRC32C sent with the single PUT and, as a whole-object CRC, with the parts.
    let run = run_ok(&[src, &up], &SMALL_PARTS);
    assert_eq!(
        (run.requests("UploadPart"), run.requests("PutObject")),
        (3, 1)
    );
    let small = stored(&client, &first, "up/small.txt").await.unwrap();
    let big = stored(&client, &first, "up/big.bin").await.unwrap();
    assert_eq!(small.0, "CRC32C");
    assert_eq!(big.0, "CRC32C");
    assert!(!big.1.contains('-'), "a whole-object CRC: {big:?}");

    // Second run: one HEAD per object, nothing copied.
    let again = run_ok(&[src, &up], &SMALL_PARTS);
    assert_eq!(
        (again.count("copied"), again.requests("HeadObject")),
        (0, 2)
    );

    // Same size, same mtime, other bytes: only the checksum tells, and it does.
    tamper(&source.join("small.txt"));
    let again = run_ok(&[src, &up, "-v"], &SMALL_PARTS);
    assert_eq!(again.count("copied"), 1);
    assert!(again.stdout.contains("content differs"), "{}", again.stdout);

    // Bucket to bucket, single and multipart: the copies carry the same checksums.
    let copy = format!("s3://{second}/copy");
    let run = run_ok(&[&up, &copy], &SMALL_PARTS);
    assert_eq!(run.count("copied"), 2);
    for key in ["small.txt", "big.bin"] {
        assert_eq!(
            stored(&client, &second, &format!("copy/{key}")).await,
            stored(&client, &first, &format!("up/{key}")).await,
            "{key}"
        );
    }
    let again = run_ok(&[&up, &copy], &SMALL_PARTS);
    assert_eq!(again.count("copied"), 0);

    // Bucket to local, then a local change of the same size and mtime is undone.
    let down = download.to_str().unwrap();
    run_ok(&[&copy, down], &SMALL_PARTS);
    assert_eq!(tree_contents(&download), tree_contents(&source));
    let again = run_ok(&[&copy, down], &SMALL_PARTS);
    assert_eq!((again.count("copied"), again.requests("GetObject")), (0, 0));
    tamper(&download.join("big.bin"));
    let again = run_ok(&[&copy, down], &SMALL_PARTS);
    assert_eq!(again.count("copied"), 1);
    assert_eq!(tree_contents(&download), tree_contents(&source));
}

#[tokio::test]
async fn composite_checksums_are_recomputed_and_reproduced_by_copies() {
    let server = garage();
    let client = server.client();
    let (first, second) = (
        server.new_bucket("ck-sha-first").await,
        server.new_bucket("ck-sha-second").await,
    );
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    write_tree(&source, &[("big.bin".into(), big_file())]);
    let src = source.to_str().unwrap();
    let up = format!("s3://{first}/up");
    let sha = ["--checksum-algorithm", "sha256"];
    let parts = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

    run_ok(&[src, &up], &[&sha[..], &parts].concat());
    let (algorithm, value) = stored(&client, &first, "up/big.bin").await.unwrap();
    assert_eq!(algorithm, "SHA256");
    assert!(value.ends_with("-3"), "a composite of three parts: {value}");

    // The composite is recomputed from the file with the part size recorded at upload,
    // even when this run would use another one.
    let again = run_ok(&[src, &up, "--part-size", "8MiB"], &sha);
    assert_eq!(again.count("copied"), 0);

    // A copy with the default (5 GiB) copy threshold still goes in parts, laid out as
    // the source's, so that its composite checksum is the same.
    let copy = format!("s3://{second}/copy");
    let run = run_ok(&[&up, &copy], &[]);
    assert_eq!(run.requests("UploadPartCopy"), 3);
    assert_eq!(
        stored(&client, &second, "copy/big.bin").await,
        stored(&client, &first, "up/big.bin").await
    );
    assert_eq!(run_ok(&[&up, &copy], &[]).count("copied"), 0);
    assert_eq!(
        bucket_contents(&client, &second, "copy/").await["big.bin"],
        big_file()
    );
}

#[tokio::test]
async fn objects_without_checksums_are_reported_or_rewritten() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("ck-none").await;
    let work = tempfile::tempdir().unwrap();
    let (source, download) = (work.path().join("src"), work.path().join("down"));
    write_tree(&source, &[("a.txt".into(), b"alpha".to_vec())]);
    let src = source.to_str().unwrap();
    let url = format!("s3://{bucket}/plain");
    // Written by another tool: s3mirror's own uploads always store a checksum.
    put_object(&client, &bucket, "plain/a.txt", b"alpha").await;
    assert_eq!(stored(&client, &bucket, "plain/a.txt").await, None);

    // A source object without a checksum cannot be judged: the object fails, clearly.
    let down = download.to_str().unwrap();
    s3mirror(&[&url, down]).assert_code(0);
    let run = s3mirror(&[&url, down, "--compare", "checksum"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("plain/a.txt") && run.stderr.contains("no stored additional checksum"),
        "{}",
        run.stderr
    );

    // A destination object without one is uploaded again, once, with one.
    let run = run_ok(&[src, &url, "-v"], &[]);
    assert!(run.stdout.contains("no stored checksum"), "{}", run.stdout);
    assert!(stored(&client, &bucket, "plain/a.txt").await.is_some());
    assert_eq!(run_ok(&[src, &url], &[]).count("copied"), 0);
}

/// Without `--checksum-algorithm`, an upload from a file stores the CRC32C of its whole
/// content, whether it goes in one PutObject (read whole or streamed) or in parts.
#[tokio::test]
async fn uploads_without_an_algorithm_store_the_crc32c_of_the_whole_content() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("ck-default").await;
    let work = tempfile::tempdir().unwrap();
    let files = [
        ("small.txt".to_owned(), b"small".to_vec()),
        ("streamed.bin".to_owned(), big_file()[..MIB].to_vec()),
        ("parts.bin".to_owned(), big_file()),
    ];
    write_tree(work.path(), &files);
    let url = format!("s3://{bucket}/up");
    let run = s3mirror(&[&[work.path().to_str().unwrap(), &url][..], &SMALL_PARTS].concat());
    run.assert_code(0);
    assert_eq!(
        (run.requests("PutObject"), run.requests("UploadPart")),
        (2, 3)
    );
    for (key, data) in &files {
        let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
        let want = base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes());
        let got = stored(&client, &bucket, &format!("up/{key}")).await;
        assert_eq!(got, Some(("CRC32C".to_owned(), want)), "{key}");
    }
}

#[tokio::test]
async fn copies_through_the_client_carry_the_checksum_for_the_server_to_verify() {
    let server = garage();
    let client = server.client();
    let (first, second) = (
        server.new_bucket("ck-stream-first").await,
        server.new_bucket("ck-stream-second").await,
    );
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    write_tree(
        &source,
        &[
            ("big.bin".into(), big_file()),
            ("small.txt".into(), b"small".to_vec()),
        ],
    );
    let up = format!("s3://{first}/up");
    run_ok(&[source.to_str().unwrap(), &up], &SMALL_PARTS);

    // The same server under another name counts as another endpoint.
    let other_name = format!("http://localhost:{}", server.port);
    let copy = format!("s3://{second}/copy");
    let args = [up.as_str(), &copy, "--dest-endpoint-url", &other_name];
    let run = run_ok(&args, &SMALL_PARTS);
    assert_eq!(
        (run.requests("UploadPart"), run.requests("CopyObject")),
        (3, 0)
    );
    for key in ["small.txt", "big.bin"] {
        assert_eq!(
            stored(&client, &second, &format!("copy/{key}")).await,
            stored(&client, &first, &format!("up/{key}")).await,
            "{key}"
        );
    }
    assert_eq!(run_ok(&args, &SMALL_PARTS).count("copied"), 0);
    assert_eq!(
        bucket_contents(&client, &second, "copy/").await,
        bucket_contents(&client, &first, "up/").await
    );
}
