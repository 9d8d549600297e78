//! Large objects: multipart upload, multipart copy and ranged download against the real
//! server, with thresholds lowered so small files exercise them.

use base64::Engine;
use s3mirror::storage::md5::Md5;

use std::io::Write;

use crate::garage::garage;
use crate::{
    bucket_contents, put_multipart, put_object, s3mirror, s3mirror_command, tree_contents,
    write_tree, Run,
};

const MIB: usize = 1 << 20;
const SMALL_PARTS: [&str; 4] = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];

fn big_file() -> Vec<u8> {
    (0..12 * MIB + 7)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect()
}

/// The keys of the incomplete multipart uploads in a bucket.
async fn incomplete_uploads(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    uploads
        .uploads()
        .iter()
        .map(|u| u.key().unwrap_or_default().to_owned())
        .collect()
}

async fn assert_no_uploads_left(client: &aws_sdk_s3::Client, bucket: &str) {
    let left = incomplete_uploads(client, bucket).await;
    assert!(left.is_empty(), "incomplete uploads left: {left:?}");
}

#[tokio::test]
async fn multipart_upload_copy_and_ranged_download_round_trip() {
    let server = garage();
    let client = server.client();
    let (first, second) = (
        server.new_bucket("mp-first").await,
        server.new_bucket("mp-second").await,
    );
    let work = tempfile::tempdir().unwrap();
    let (source, download) = (work.path().join("src"), work.path().join("down"));
    let data = big_file();
    write_tree(
        &source,
        &[
            ("video.mp4".into(), data.clone()),
            ("small.txt".into(), b"small".to_vec()),
        ],
    );
    let src = source.to_str().unwrap();

    // Upload: three 5 MiB parts, with the whole-file MD5 and the part size in metadata.
    let up = format!("s3://{first}/up");
    let run = s3mirror(&[&[src, up.as_str()][..], &SMALL_PARTS].concat());
    run.assert_code(0);
    assert_eq!(
        (run.requests("UploadPart"), run.requests("PutObject")),
        (3, 1)
    );
    let head = client
        .head_object()
        .bucket(&first)
        .key("up/video.mp4")
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    // The parts were sent with CRC32C checksums, and the server verified the whole.
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, &data) as u32;
    assert_eq!(
        head.checksum_crc32_c(),
        Some(
            base64::engine::general_purpose::STANDARD
                .encode(crc.to_be_bytes())
                .as_str()
        )
    );
    assert!(
        head.e_tag().unwrap().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );
    assert_eq!(head.content_type(), Some("video/mp4"));
    let metadata = head.metadata().unwrap();
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&data));
    assert_eq!(metadata["md5chksum"], md5);
    assert_eq!(metadata["s3mirror-part-size"], (5 * MIB).to_string());
    assert_eq!(
        bucket_contents(&client, &first, "up/").await["video.mp4"],
        data
    );
    assert_no_uploads_left(&client, &first).await;

    // Unchanged by time, and by content: the multipart ETag is recomputed from the file,
    // even when this run would use another part size.
    for extra in [
        &[][..],
        &["--compare", "etag"],
        &["--compare", "etag", "--part-size", "8MiB"],
    ] {
        let again = s3mirror(&[&[src, up.as_str()][..], extra].concat());
        again.assert_code(0);
        assert_eq!(
            (again.count("copied"), again.count("unchanged")),
            (0, 2),
            "{extra:?}"
        );
    }

    // Bucket to bucket in parts: UploadPartCopy, with headers and metadata carried over.
    let copy = format!("s3://{second}/copy");
    let copy_args = ["--multipart-copy-threshold", "5MiB", "--part-size", "5MiB"];
    let run = s3mirror(&[&[up.as_str(), copy.as_str()][..], &copy_args].concat());
    run.assert_code(0);
    assert_eq!(
        (run.requests("UploadPartCopy"), run.requests("CopyObject")),
        (3, 1)
    );
    // Garage answers GetObjectTagging with NotImplemented: one warning, and the copy goes on.
    assert_eq!(
        run.stderr
            .matches("does not support object tagging")
            .count(),
        1,
        "{}",
        run.stderr
    );
    let copied = client
        .head_object()
        .bucket(&second)
        .key("copy/video.mp4")
        .send()
        .await
        .unwrap();
    assert_eq!(copied.content_type(), Some("video/mp4"));
    assert_eq!(copied.metadata().unwrap()["md5chksum"], md5);
    assert_eq!(
        bucket_contents(&client, &second, "copy/").await["video.mp4"],
        data
    );
    assert_no_uploads_left(&client, &second).await;
    let again = s3mirror(&[&[up.as_str(), copy.as_str()][..], &copy_args].concat());
    assert_eq!(
        (again.count("copied"), again.requests("UploadPartCopy")),
        (0, 0)
    );

    // Bucket to local in ranges, written into one temporary file.
    let down = download.to_str().unwrap();
    let run = s3mirror(&[&[copy.as_str(), down][..], &SMALL_PARTS].concat());
    run.assert_code(0);
    assert_eq!(run.requests("GetObject"), 3 + 1);
    assert_eq!(tree_contents(&download), tree_contents(&source));
    // The listing's LastModified (to the millisecond on Garage) agrees with the header's to the second.
    let secs =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let last_modified = std::time::SystemTime::try_from(*copied.last_modified().unwrap()).unwrap();
    let file_mtime = std::fs::metadata(download.join("video.mp4"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(secs(file_mtime), secs(last_modified));
    let again = s3mirror(&[&[copy.as_str(), down][..], &SMALL_PARTS].concat());
    assert_eq!((again.count("copied"), again.requests("GetObject")), (0, 0));
}

/// Starts an upload of a file big enough to take a while in 5 MiB parts sent one at a
/// time, and returns once the server shows the multipart upload in progress. (If a
/// request here panics, the child finishes its upload and exits by itself.)
#[allow(clippy::zombie_processes)]
async fn upload_in_progress(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    path: &std::path::Path,
    extra: &[&str],
) -> std::process::Child {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(200 * MIB as u64).unwrap();
    let url = format!("s3://{bucket}/up");
    let dir = path.parent().unwrap().to_str().unwrap();
    let args = [dir, url.as_str(), "--part-concurrency", "1"];
    let mut child = s3mirror_command(&[&args[..], &SMALL_PARTS, extra].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if !incomplete_uploads(client, bucket).await.is_empty() {
            return child;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let run = Run::from(child.wait_with_output().unwrap());
            panic!("the upload never started:\n{}", run.stderr);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn interrupting_a_multipart_upload_aborts_it() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mp-interrupt").await;
    let work = tempfile::tempdir().unwrap();
    let child = upload_in_progress(&client, &bucket, &work.path().join("big.bin"), &[]).await;
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_code(130);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert_no_uploads_left(&client, &bucket).await;
    assert!(bucket_contents(&client, &bucket, "").await.is_empty());
}

#[tokio::test]
async fn a_file_changing_during_its_upload_is_uploaded_again_as_it_now_is() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mp-changed").await;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("big.bin");
    let child = upload_in_progress(&client, &bucket, &path, &[]).await;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"more")
        .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("changed while it was being uploaded; it was not committed")
            && run.stderr.contains("copying again (attempt 2 of 11)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.count("recopied"), 1);
    assert_no_uploads_left(&client, &bucket).await;
    let stored = bucket_contents(&client, &bucket, "up/").await;
    assert_eq!(stored["big.bin"], std::fs::read(&path).unwrap());
}

#[tokio::test]
async fn after_kill_9_the_next_run_aborts_what_was_left_and_only_that() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mp-killed").await;
    let work = tempfile::tempdir().unwrap();
    let (source, state) = (work.path().join("src"), work.path().join("state"));
    std::fs::create_dir(&source).unwrap();
    let state_arg = ["--state-dir", state.to_str().unwrap()];
    let big = source.join("big.bin");
    let mut child = upload_in_progress(&client, &bucket, &big, &state_arg).await;
    // The record follows the server's answer to CreateMultipartUpload by microseconds.
    let recorded = || {
        std::fs::read_dir(state.join("uploads"))
            .into_iter()
            .flatten()
            .any(|f| std::fs::read_to_string(f.unwrap().path()).is_ok_and(|t| t.contains("+ ")))
    };
    for _ in 0..500 {
        if recorded() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Another tool's upload in the same bucket, which s3mirror must leave alone.
    client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("up/other-tool.bin")
        .send()
        .await
        .unwrap();
    let mut left = incomplete_uploads(&client, &bucket).await;
    left.sort();
    assert_eq!(left, ["up/big.bin", "up/other-tool.bin"]);

    // The file has left the source meanwhile; another has come.
    std::fs::remove_file(&big).unwrap();
    write_tree(&source, &[("small.txt".into(), b"small".to_vec())]);
    let url = format!("s3://{bucket}/up");
    let run = s3mirror(&[&[source.to_str().unwrap(), url.as_str()][..], &state_arg].concat());
    run.assert_code(0);
    assert!(
        run.stderr
            .contains("aborted 1 incomplete multipart upload(s) that an interrupted"),
        "{}",
        run.stderr
    );
    assert_eq!(
        incomplete_uploads(&client, &bucket).await,
        ["up/other-tool.bin"]
    );
    let stored = bucket_contents(&client, &bucket, "up/").await;
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["small.txt"]);
    assert_eq!(
        std::fs::read_dir(state.join("uploads")).unwrap().count(),
        0,
        "no record is left once everything ended"
    );
}

#[tokio::test]
async fn a_ranged_download_is_checked_against_an_md5chksum_alone() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mp-md5chksum").await;
    let data = big_file();
    let md5 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(Md5::digest(bytes));
    // In 5 MiB parts, with rclone's whole-object MD5 and no part size recorded.
    let parts: Vec<&[u8]> = data.chunks(5 * MIB).collect();
    let (good, bad) = (md5(&data), md5(b"other bytes"));
    put_multipart(
        &client,
        &bucket,
        "good/video.mp4",
        &parts,
        &[("md5chksum", &good)],
    )
    .await;
    // A recorded MD5 the bytes do not have: what a damaged download looks like.
    put_multipart(
        &client,
        &bucket,
        "bad/video.mp4",
        &parts,
        &[("md5chksum", &bad)],
    )
    .await;
    let work = tempfile::tempdir().unwrap();

    // Three 5 MiB ranges, landing in any order; the MD5 follows them as they are written.
    let good = work.path().join("good");
    let url = format!("s3://{bucket}/good");
    let run = s3mirror(&[&[url.as_str(), good.to_str().unwrap()][..], &SMALL_PARTS].concat());
    run.assert_code(0);
    assert_eq!(run.requests("GetObject"), 3);
    assert_eq!(std::fs::read(good.join("video.mp4")).unwrap(), data);

    let bad = work.path().join("bad");
    let url = format!("s3://{bucket}/bad");
    let args = [url.as_str(), bad.to_str().unwrap(), "--max-retries", "0"];
    let run = s3mirror(&[&args[..], &SMALL_PARTS].concat());
    run.assert_code(1);
    assert!(
        run.stderr.contains("video.mp4") && run.stderr.contains("md5chksum"),
        "{}",
        run.stderr
    );
    // Neither under its name nor as a temporary file.
    let left: Vec<_> = std::fs::read_dir(&bad).map_or(vec![], |d| d.collect());
    assert!(left.is_empty(), "{left:?}");
}

/// The keys copied, in the order `--json` reported them.
fn copy_order(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["action"] == "copy")
        .map(|line| line["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_large_object_late_in_key_order_starts_ahead_of_the_small_ones() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("mp-large-first").await;
    let data = big_file();
    put_object(&client, &bucket, "z-large", &data).await;
    for i in 0..40 {
        put_object(&client, &bucket, &format!("d/f{i:02}"), b"small").await;
    }
    let work = tempfile::tempdir().unwrap();
    let source = format!("s3://{bucket}");

    // One transfer at a time, so copies end in the order they start. The planner finds
    // the large object last, once the first few small ones are already handed out.
    let restore = |dir: &str, extra: &[&str]| {
        let dest = work.path().join(dir);
        let args = [source.as_str(), dest.to_str().unwrap(), "--threads", "1"];
        let run = s3mirror(&[&args[..], &["--json"], &SMALL_PARTS, extra].concat());
        run.assert_code(0);
        let contents = tree_contents(&dest);
        assert_eq!(contents.len(), 41);
        assert_eq!(contents["z-large"], data);
        copy_order(&run.stdout)
    };
    let ahead = restore("ahead", &[]);
    let position = ahead.iter().position(|key| key == "z-large").unwrap();
    assert!(
        position < 10,
        "the large object copied {position}th: {ahead:?}"
    );

    let in_key_order = restore("in-key-order", &["--max-backlog", "0"]);
    assert_eq!(in_key_order.last().map(String::as_str), Some("z-large"));
}
