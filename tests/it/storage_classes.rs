//! What Garage does not do, against moto's server: storage classes, archived objects and
//! tags (archived objects that are not restored are passed over and counted, restored
//! ones are copied, and copies keep the source's class and tags), and a server that
//! states wrong checksums for multipart uploads.

use aws_sdk_s3::types::StorageClass;
use aws_sdk_s3::Client;

use crate::moto::moto;
use crate::{bucket_contents, tree_contents};

const MIB: usize = 1 << 20;

async fn put(client: &Client, bucket: &str, key: &str, body: Vec<u8>, class: StorageClass) {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .storage_class(class)
        .tagging("team=data&tier=cold")
        .send()
        .await
        .unwrap();
}

async fn class_of(client: &Client, bucket: &str, key: &str) -> String {
    client
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .storage_class()
        .map_or("STANDARD".to_owned(), |c| c.as_str().to_owned())
}

async fn tags_of(client: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let mut tags: Vec<_> = client
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect();
    tags.sort();
    tags
}

/// A bucket as a lifecycle rule leaves it: objects in GLACIER and DEEP_ARCHIVE (one of
/// them restored), one in GLACIER_IR (readable at once, not archived), one STANDARD.
async fn lifecycle_bucket(client: &Client) -> String {
    let bucket = moto().new_bucket("lifecycle").await;
    for (key, class) in [
        ("hot.txt", StorageClass::Standard),
        ("instant.txt", StorageClass::GlacierIr),
        ("cold.txt", StorageClass::Glacier),
        ("deep.txt", StorageClass::DeepArchive),
        ("thawed.txt", StorageClass::Glacier),
    ] {
        put(client, &bucket, key, key.as_bytes().to_vec(), class).await;
    }
    client
        .restore_object()
        .bucket(&bucket)
        .key("thawed.txt")
        .restore_request(aws_sdk_s3::types::RestoreRequest::builder().days(1).build())
        .send()
        .await
        .unwrap();
    bucket
}

fn json_summary(run: &crate::Run) -> serde_json::Value {
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or_else(|| panic!("no JSON summary in:\n{}", run.stdout));
    serde_json::from_str(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archived_objects_are_passed_over_counted_and_restored_ones_copied() {
    let server = moto();
    let client = server.client();
    let source = lifecycle_bucket(&client).await;
    let copy = server.new_bucket("lifecycle-copy").await;
    let local = tempfile::tempdir().unwrap();
    let (src_url, copy_url) = (format!("s3://{source}"), format!("s3://{copy}"));
    let dest = local.path().to_str().unwrap().to_owned();

    let (to_bucket, to_local, again, verify, dry) = tokio::task::spawn_blocking(move || {
        let to_bucket = server.run(&[&src_url, &copy_url, "--json"]);
        let to_local = server.run(&[&src_url, &dest]);
        let again = server.run(&[&src_url, &dest]);
        let verify = server.run(&["verify", &src_url, &dest]);
        let dry = server.run(&[&src_url, &copy_url, "--dry-run", "--include-archived"]);
        (to_bucket, to_local, again, verify, dry)
    })
    .await
    .unwrap();
    for run in [&to_bucket, &to_local] {
        run.assert_code(0);
        assert_eq!(run.count("failed"), 0, "{}", run.stderr);
    }
    assert_eq!(to_local.count("copied"), 3);
    assert_eq!(to_local.count("archived"), 2);
    assert!(
        to_local.stderr.contains("cold.txt") && to_local.stderr.contains("GLACIER"),
        "each archived object is named: {}",
        to_local.stderr
    );
    let summary = json_summary(&to_bucket);
    assert_eq!(summary["copied"], 3, "{summary}");
    assert_eq!(summary["archived"], 2, "{summary}");
    let archived_events: Vec<String> = to_bucket
        .stdout
        .lines()
        .filter(|l| l.contains("\"archived\"") && !l.contains("\"summary\""))
        .map(str::to_owned)
        .collect();
    assert_eq!(archived_events.len(), 2, "{}", to_bucket.stdout);
    // A rerun finds them still archived: counted again, and still exit 0.
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);
    assert_eq!(again.count("archived"), 2);
    // A verify does not call them missing, nor does a dry run offer to copy them (or
    // request a restore: it changes nothing).
    verify.assert_code(0);
    assert_eq!(verify.count("archived"), 2, "{}", verify.stderr);
    dry.assert_code(0);
    assert_eq!(dry.count("would copy"), 0, "{}", dry.stderr);
    assert_eq!(dry.count("archived"), 2, "{}", dry.stderr);
    assert_eq!(dry.requests("RestoreObject"), 0, "{}", dry.stderr);

    let want = ["hot.txt", "instant.txt", "thawed.txt"];
    let listed = client.list_objects_v2().bucket(&copy).send().await.unwrap();
    let copied: Vec<(&str, &str)> = listed
        .contents()
        .iter()
        .map(|o| (o.key().unwrap(), o.storage_class().unwrap().as_str()))
        .collect();
    // The restored object is copied server-side into its own class, as any other.
    assert_eq!(
        copied,
        [
            ("hot.txt", "STANDARD"),
            ("instant.txt", "GLACIER_IR"),
            ("thawed.txt", "GLACIER")
        ]
    );
    for key in ["hot.txt", "instant.txt"] {
        let body = client
            .get_object()
            .bucket(&copy)
            .key(key)
            .send()
            .await
            .unwrap()
            .body;
        assert_eq!(body.collect().await.unwrap().into_bytes(), key.as_bytes());
    }
    let downloaded = tree_contents(local.path());
    assert_eq!(
        downloaded.keys().map(String::as_str).collect::<Vec<_>>(),
        want
    );
    for (key, body) in &downloaded {
        assert_eq!(body, key.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_archived_requests_a_restore_and_a_later_run_copies_them() {
    let server = moto();
    let client = server.client();
    let source = lifecycle_bucket(&client).await;
    let local = tempfile::tempdir().unwrap();
    let src_url = format!("s3://{source}");
    let dest = local.path().to_str().unwrap().to_owned();
    let (asked, later) = tokio::task::spawn_blocking(move || {
        let asked = server.run(&[&src_url, &dest, "--include-archived", "--restore-days", "3"]);
        let later = server.run(&[&src_url, &dest]);
        (asked, later)
    })
    .await
    .unwrap();
    asked.assert_code(0);
    assert_eq!(asked.count("archived"), 2);
    assert!(
        asked.stderr.contains("restore requested"),
        "{}",
        asked.stderr
    );
    assert_eq!(
        asked.requests("RestoreObject"),
        2,
        "one restore per archived object: {}",
        asked.stderr
    );
    // moto restores at once; S3 takes hours, and the nightly rerun picks them up.
    later.assert_code(0);
    assert_eq!(later.count("copied"), 2);
    assert!(!later.stderr.contains("archived "), "{}", later.stderr);
    assert_eq!(tree_contents(local.path()).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_keep_the_storage_class_and_tags_on_every_path() {
    let server = moto();
    let client = server.client();
    let source = server.new_bucket("classes").await;
    let big: Vec<u8> = (0..12 * MIB).map(|i| (i % 251) as u8).collect();
    put(
        &client,
        &source,
        "small-ia.bin",
        b"infrequent".to_vec(),
        StorageClass::StandardIa,
    )
    .await;
    put(
        &client,
        &source,
        "big-onezone.bin",
        big.clone(),
        StorageClass::OnezoneIa,
    )
    .await;
    put(
        &client,
        &source,
        "plain.bin",
        b"standard".to_vec(),
        StorageClass::Standard,
    )
    .await;
    let (server_side, through, overridden) = (
        server.new_bucket("classes-ss").await,
        server.new_bucket("classes-tc").await,
        server.new_bucket("classes-ov").await,
    );
    let parts = crate::SMALL_PARTS;
    // Another spelling of the same server: another endpoint, so bytes go through here.
    let other_endpoint = server.endpoint.replace("127.0.0.1", "localhost");
    let (src, ss, tc, ov) = (
        format!("s3://{source}"),
        format!("s3://{server_side}"),
        format!("s3://{through}"),
        format!("s3://{overridden}"),
    );
    let runs = tokio::task::spawn_blocking(move || {
        [
            server.run(&[&[src.as_str(), &ss][..], &parts].concat()),
            server.run(
                &[
                    &[src.as_str(), &tc, "--source-endpoint-url", &other_endpoint][..],
                    &parts,
                ]
                .concat(),
            ),
            server.run(
                &[
                    &[src.as_str(), &ov, "--storage-class", "GLACIER_IR"][..],
                    &parts,
                ]
                .concat(),
            ),
        ]
    })
    .await
    .unwrap();
    for run in &runs {
        run.assert_code(0);
        assert_eq!(run.count("copied"), 3);
    }
    assert!(runs[0].requests("UploadPartCopy") > 0, "{}", runs[0].stderr);
    assert_eq!(runs[1].requests("CopyObject"), 0, "{}", runs[1].stderr);
    for bucket in [&server_side, &through] {
        assert_eq!(
            class_of(&client, bucket, "small-ia.bin").await,
            "STANDARD_IA"
        );
        assert_eq!(
            class_of(&client, bucket, "big-onezone.bin").await,
            "ONEZONE_IA"
        );
        assert_eq!(class_of(&client, bucket, "plain.bin").await, "STANDARD");
        for key in ["small-ia.bin", "big-onezone.bin"] {
            assert_eq!(
                tags_of(&client, bucket, key).await,
                [
                    ("team".into(), "data".into()),
                    ("tier".into(), "cold".into())
                ],
                "{bucket}/{key}"
            );
        }
        let contents = bucket_contents(&client, bucket, "").await;
        assert_eq!(contents["big-onezone.bin"], big);
    }
    for key in ["small-ia.bin", "big-onezone.bin", "plain.bin"] {
        assert_eq!(class_of(&client, &overridden, key).await, "GLACIER_IR");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_to_a_server_stating_wrong_checksums_are_checked_by_etag() {
    let server = moto();
    let client = server.client();
    let (lenient, strict) = (
        server.new_bucket("wrongcrc").await,
        server.new_bucket("wrongcrc-strict").await,
    );
    let work = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..11 * MIB + 3).map(|i| (i % 241) as u8).collect();
    crate::write_tree(work.path(), &[("big.bin".into(), big.clone())]);
    let src = work.path().to_str().unwrap().to_owned();
    let (a, b) = (format!("s3://{lenient}"), format!("s3://{strict}"));
    let parts = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
    let (ok, refused) = tokio::task::spawn_blocking(move || {
        (
            server.run(&[&[src.as_str(), &a][..], &parts].concat()),
            server.run(
                &[
                    &[src.as_str(), &b, "--checksum-algorithm", "crc32c"][..],
                    &parts,
                ]
                .concat(),
            ),
        )
    })
    .await
    .unwrap();
    ok.assert_code(0);
    assert_eq!(ok.count("copied"), 1);
    assert_eq!(bucket_contents(&client, &lenient, "").await["big.bin"], big);
    refused.assert_code(1);
    // moto confirms no checksum in its answer, and stores a wrong one.
    assert!(
        refused.stderr.contains("CRC32C")
            && refused
                .stderr
                .contains("run without --checksum-algorithm for this server"),
        "{}",
        refused.stderr
    );
}
