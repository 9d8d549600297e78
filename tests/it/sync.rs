//! Each pairing end to end: content byte-identical, second runs copy nothing, dry runs
//! change nothing.

use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::garage::garage;
use crate::{bucket_contents, s3mirror, tree_contents, tricky_files, write_tree};

fn files_map() -> std::collections::BTreeMap<String, Vec<u8>> {
    tricky_files().into_iter().collect()
}

#[tokio::test]
async fn local_to_bucket_to_bucket_to_local_round_trip() {
    let server = garage();
    let client = server.client();
    let (first, second) = (
        server.new_bucket("first").await,
        server.new_bucket("second").await,
    );
    let work = tempfile::tempdir().unwrap();
    let (source, download) = (work.path().join("source"), work.path().join("download"));
    write_tree(&source, &tricky_files());
    let n = tricky_files().len() as u64;

    // local → bucket
    let up = format!("s3://{first}/upload");
    let run = s3mirror(&[source.to_str().unwrap(), &up, "--threads", "8"]);
    run.assert_code(0);
    assert_eq!((run.count("copied"), run.requests("PutObject")), (n, n));
    assert_eq!(
        bucket_contents(&client, &first, "upload/").await,
        files_map()
    );
    let head = client
        .head_object()
        .bucket(&first)
        .key("upload/plus+sign.txt")
        .send()
        .await
        .unwrap();
    let mtime = std::fs::metadata(source.join("plus+sign.txt"))
        .unwrap()
        .modified()
        .unwrap();
    let stored: f64 = head.metadata().unwrap()["mtime"].parse().unwrap();
    let actual = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (stored - actual).abs() < 1e-6,
        "mtime metadata {stored} vs file {actual}"
    );

    let again = s3mirror(&[source.to_str().unwrap(), &up]);
    again.assert_code(0);
    assert_eq!((again.count("copied"), again.count("unchanged")), (0, n));
    assert_eq!(
        again.requests("PutObject") + again.requests("HeadObject"),
        0
    );

    // bucket → bucket, server-side
    let copy = format!("s3://{second}/copy");
    let run = s3mirror(&[&up, &copy]);
    run.assert_code(0);
    assert_eq!(
        (run.requests("CopyObject"), run.requests("GetObject")),
        (n, 0)
    );
    assert_eq!(
        bucket_contents(&client, &second, "copy/").await,
        files_map()
    );
    let again = s3mirror(&[&up, &copy]);
    again.assert_code(0);
    assert_eq!(
        (again.count("copied"), again.requests("CopyObject")),
        (0, 0)
    );

    // bucket → local
    let run = s3mirror(&[&copy, download.to_str().unwrap()]);
    run.assert_code(0);
    assert_eq!(run.requests("GetObject"), n);
    assert_eq!(tree_contents(&download), files_map());
    let head = client
        .head_object()
        .bucket(&second)
        .key("copy/a.b")
        .send()
        .await
        .unwrap();
    let last_modified = SystemTime::try_from(*head.last_modified().unwrap()).unwrap();
    assert_eq!(
        std::fs::metadata(download.join("a.b"))
            .unwrap()
            .modified()
            .unwrap(),
        last_modified
    );
    let again = s3mirror(&[&copy, download.to_str().unwrap()]);
    again.assert_code(0);
    assert_eq!((again.count("copied"), again.requests("GetObject")), (0, 0));

    // and back up to the bucket it came from: the downloaded files carry its times
    let back = s3mirror(&[download.to_str().unwrap(), &copy]);
    back.assert_code(0);
    assert_eq!((back.count("copied"), back.count("unchanged")), (0, n));
}

#[tokio::test]
async fn local_to_local_copies_then_skips() {
    let work = tempfile::tempdir().unwrap();
    let (source, dest) = (work.path().join("src"), work.path().join("dst"));
    write_tree(&source, &tricky_files());
    s3mirror(&[source.to_str().unwrap(), dest.to_str().unwrap()]).assert_code(0);
    assert_eq!(tree_contents(&dest), files_map());
    let again = s3mirror(&[source.to_str().unwrap(), dest.to_str().unwrap()]);
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);
}

#[tokio::test]
async fn changed_files_are_copied_again() {
    let server = garage();
    let bucket = server.new_bucket("changes").await;
    let work = tempfile::tempdir().unwrap();
    let files = [
        ("same.txt".to_owned(), b"one".to_vec()),
        ("grows.txt".to_owned(), b"one".to_vec()),
        ("touched.txt".to_owned(), b"one".to_vec()),
    ];
    write_tree(work.path(), &files);
    let dest = format!("s3://{bucket}");
    s3mirror(&[work.path().to_str().unwrap(), &dest]).assert_code(0);

    std::fs::write(work.path().join("grows.txt"), b"one two").unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(work.path().join("touched.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    let run = s3mirror(&[work.path().to_str().unwrap(), &dest, "-v"]);
    run.assert_code(0);
    assert_eq!((run.count("copied"), run.count("unchanged")), (2, 1));
    assert!(
        run.stdout.contains("grows.txt (size differs"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("touched.txt (source is newer"),
        "{}",
        run.stdout
    );
    assert_eq!(
        bucket_contents(&server.client(), &bucket, "").await["grows.txt"],
        b"one two"
    );
}

#[tokio::test]
async fn etag_comparison_finds_same_size_changes_that_times_miss() {
    let server = garage();
    let bucket = server.new_bucket("etag").await;
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("f.txt");
    std::fs::write(&path, b"aaaa").unwrap();
    let dest = format!("s3://{bucket}");
    s3mirror(&[work.path().to_str().unwrap(), &dest]).assert_code(0);

    // Same size, older mtime: the default rule calls it unchanged, ETag comparison does not.
    std::fs::write(&path, b"bbbb").unwrap();
    let old = SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let by_time = s3mirror(&[work.path().to_str().unwrap(), &dest]);
    assert_eq!(by_time.count("copied"), 0);
    let by_etag = s3mirror(&[work.path().to_str().unwrap(), &dest, "--compare", "etag"]);
    by_etag.assert_code(0);
    assert_eq!(by_etag.count("copied"), 1);
    assert_eq!(
        bucket_contents(&server.client(), &bucket, "").await["f.txt"],
        b"bbbb"
    );
    let settled = s3mirror(&[work.path().to_str().unwrap(), &dest, "--compare", "etag"]);
    assert_eq!(
        (settled.count("copied"), settled.count("unchanged")),
        (0, 1)
    );
}

#[tokio::test]
async fn dry_run_changes_nothing() {
    let server = garage();
    let client = server.client();
    let (bucket, empty) = (
        server.new_bucket("dry").await,
        server.new_bucket("dry-empty").await,
    );
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    write_tree(&source, &tricky_files());
    let n = tricky_files().len() as u64;

    let run = s3mirror(&[
        source.to_str().unwrap(),
        &format!("s3://{bucket}"),
        "--dry-run",
    ]);
    run.assert_code(0);
    assert_eq!(run.count("would copy"), n);
    assert!(
        run.stdout
            .contains(&format!("would copy s3://{bucket}/a.b (new")),
        "{}",
        run.stdout
    );
    assert!(bucket_contents(&client, &bucket, "").await.is_empty());
    assert_eq!(run.requests("PutObject"), 0);

    s3mirror(&[source.to_str().unwrap(), &format!("s3://{bucket}")]).assert_code(0);
    let to_bucket = s3mirror(&[&format!("s3://{bucket}"), &format!("s3://{empty}"), "-n"]);
    assert_eq!(
        (
            to_bucket.count("would copy"),
            to_bucket.requests("CopyObject")
        ),
        (n, 0)
    );
    assert!(bucket_contents(&client, &empty, "").await.is_empty());

    let local = work.path().join("not-created");
    let to_local = s3mirror(&[&format!("s3://{bucket}"), local.to_str().unwrap(), "-n"]);
    assert_eq!(
        (to_local.count("would copy"), to_local.requests("GetObject")),
        (n, 0)
    );
    assert!(!local.exists());
}

#[tokio::test]
async fn different_endpoints_stream_through_the_client_and_keep_headers() {
    let server = garage();
    let client = server.client();
    let (source, dest) = (
        server.new_bucket("stream-src").await,
        server.new_bucket("stream-dst").await,
    );
    client
        .put_object()
        .bucket(&source)
        .key("page.html")
        .body(b"<html></html>".to_vec().into())
        .content_type("text/html")
        .cache_control("max-age=60")
        .metadata("owner", "web team")
        .send()
        .await
        .unwrap();
    // The same server under another name counts as another endpoint.
    let other_name = format!("http://localhost:{}", server.port);
    let run = s3mirror(&[
        &format!("s3://{source}"),
        &format!("s3://{dest}"),
        "--dest-endpoint-url",
        &other_name,
    ]);
    run.assert_code(0);
    assert!(
        run.stderr.contains("streamed through this machine"),
        "{}",
        run.stderr
    );
    assert_eq!(
        (
            run.requests("GetObject"),
            run.requests("PutObject"),
            run.requests("CopyObject")
        ),
        (1, 1, 0)
    );
    let head = client
        .head_object()
        .bucket(&dest)
        .key("page.html")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("text/html"));
    assert_eq!(head.cache_control(), Some("max-age=60"));
    assert_eq!(head.metadata().unwrap()["owner"], "web team");

    // Above the multipart threshold the stream is cut into parts as it arrives.
    let big: Vec<u8> = (0..(12 << 20) + 7).map(|i: u32| (i % 251) as u8).collect();
    client
        .put_object()
        .bucket(&source)
        .key("big.bin")
        .body(big.clone().into())
        .content_type("application/x-big")
        .send()
        .await
        .unwrap();
    let run = s3mirror(&[
        &format!("s3://{source}"),
        &format!("s3://{dest}"),
        "--dest-endpoint-url",
        &other_name,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
    ]);
    run.assert_code(0);
    assert_eq!(
        (run.requests("GetObject"), run.requests("UploadPart")),
        (1, 3)
    );
    let head = client
        .head_object()
        .bucket(&dest)
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/x-big"));
    assert_eq!(bucket_contents(&client, &dest, "").await["big.bin"], big);
}

#[tokio::test]
async fn one_failed_object_does_not_stop_the_run() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("conflict").await;
    // "a" and "a/b" cannot both exist on a local file system.
    for key in ["a", "a/b", "c"] {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(key.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let work = tempfile::tempdir().unwrap();
    let run = s3mirror(&[
        &format!("s3://{bucket}"),
        work.path().to_str().unwrap(),
        "--threads",
        "1",
    ]);
    run.assert_code(1);
    assert_eq!((run.count("copied"), run.count("failed")), (2, 1));
    // Whichever of the two reaches the disk first keeps its place: a file is renamed
    // into place after its transfer slot is given back, so "a/b" may make the
    // directory "a" before "a" is renamed.
    let (failed, landed) = match run.stderr.contains("failed objects:\n  a/b: ") {
        true => ("a/b", "a"),
        false => ("a", "a/b"),
    };
    assert!(
        run.stderr
            .contains(&format!("failed objects:\n  {failed}: ")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("a directory tree cannot hold both"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(work.path().join(landed)).unwrap(),
        landed.as_bytes()
    );
    assert_eq!(std::fs::read(work.path().join("c")).unwrap(), b"c");
}

#[tokio::test]
async fn parallel_listing_yields_the_sequential_order() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("parallel-list").await;
    // More than one page (1,000 keys), so that the rest is split over common prefixes
    // after a first page that ends inside one; top-level keys that sort between, before
    // and after "directories"; directories of many sizes, so that a window of 3 prefix
    // listings has to wait and move on.
    let mut keys: Vec<String> = ["a-b", "a.txt", "a/x", "a/y/z", "a0", "q", "top", "z/last"]
        .map(String::from)
        .to_vec();
    for d in 0..40 {
        for f in 0..30 {
            keys.push(format!("d{d:02}/f{f:02}"));
        }
        for f in 0..(d % 7) {
            keys.push(format!("p/d{d:02}/f{f}"));
        }
    }
    let puts = keys.iter().map(|key| {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(key.as_bytes().to_vec().into())
            .send()
    });
    futures::stream::iter(puts)
        .buffer_unordered(32)
        .for_each(|result| async {
            result.unwrap();
        })
        .await;
    let work = tempfile::tempdir().unwrap();
    for (width, dir) in [("1", "seq"), ("3", "par")] {
        let target = work.path().join(dir);
        let run = s3mirror(&[
            &format!("s3://{bucket}"),
            target.to_str().unwrap(),
            "--list-parallelism",
            width,
        ]);
        run.assert_code(0);
        assert_eq!(run.count("copied"), keys.len() as u64, "width {width}");
        // A second run joins the parallel listing against the local walk: any order
        // difference would fail the run.
        let again = s3mirror(&[
            &format!("s3://{bucket}"),
            target.to_str().unwrap(),
            "--list-parallelism",
            width,
        ]);
        again.assert_code(0);
        assert_eq!(again.count("copied"), 0);
    }
    assert_eq!(
        tree_contents(&work.path().join("seq")),
        tree_contents(&work.path().join("par"))
    );
    // Listing below a prefix keeps keys relative to it.
    let run = s3mirror(&[
        &format!("s3://{bucket}/p"),
        work.path().join("p").to_str().unwrap(),
        "--list-parallelism",
        "3",
    ]);
    run.assert_code(0);
    assert_eq!(
        tree_contents(&work.path().join("p")),
        tree_contents(&work.path().join("seq/p"))
    );
}
