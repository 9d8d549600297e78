//! Flat prefixes (no `/` below them) listed with many requests at once: the listing is cut
//! into spans listed in parallel, and yields exactly the keys of a sequential listing,
//! whole and within the ranges of shards.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_s3::Client;
use futures::StreamExt;
use serde_json::Value;

use crate::garage::garage;
use crate::moto::moto;
use crate::{bucket_contents, s3mirror, tree_contents, Run};

/// Keys in one flat prefix.
const KEYS: usize = 3_000;

/// `count` keys: numbered ones, and among them keys that are prefixes of each other, keys
/// with control characters and keys with multi-byte characters, so that pages and spans
/// begin and end on such keys.
fn flat_keys(count: usize) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = (0..count * 4 / 5).map(|i| format!("k{i:05}")).collect();
    keys.extend(
        [
            "a",
            "a0",
            "a\u{1}",
            "a\u{1}b",
            "a\u{1f}",
            "a\u{7f}",
            "k",
            "k0",
            "k00100\u{1}",
            "k00999\u{e9}",
            "\u{e9}",
            "\u{e9}0",
            "\u{65e5}\u{672c}",
            "\u{65e5}\u{672c}\u{8a9e}",
            "\u{1f600}",
            "z\u{10FFFF}",
        ]
        .map(String::from),
    );
    let alphabet = [
        'a',
        'k',
        '0',
        '9',
        '-',
        '.',
        ' ',
        '\u{1}',
        '\u{7}',
        '\u{e9}',
        '\u{65e5}',
        '\u{1f600}',
    ];
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    while keys.len() < count {
        let mut pick = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as usize
        };
        let len = 1 + pick() % 6;
        let key: String = (0..len)
            .map(|_| alphabet[pick() % alphabet.len()])
            .collect();
        // Names a directory cannot hold as files.
        if key != "." && key != ".." {
            keys.insert(key);
        }
    }
    keys
}

/// Puts `keys` below `flat/` in `bucket`, each object's body its key.
async fn put_flat(client: &Client, bucket: &str, keys: &BTreeSet<String>) {
    let puts = keys.iter().map(|key| {
        client
            .put_object()
            .bucket(bucket)
            .key(format!("flat/{key}"))
            .body(key.as_bytes().to_vec().into())
            .send()
    });
    futures::stream::iter(puts)
        .buffer_unordered(32)
        .for_each(|result| async {
            result.unwrap();
        })
        .await;
}

/// A Garage bucket holding `keys` below `flat/`.
async fn flat_bucket(label: &str, keys: &BTreeSet<String>) -> String {
    let server = garage();
    let bucket = server.new_bucket(label).await;
    put_flat(&server.client(), &bucket, keys).await;
    bucket
}

fn as_files(keys: &BTreeSet<String>) -> BTreeMap<String, Vec<u8>> {
    keys.iter()
        .map(|key| (key.clone(), key.as_bytes().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_prefix_listed_in_parallel_yields_exactly_its_keys() {
    let keys = flat_keys(KEYS);
    let bucket = flat_bucket("flat-list", &keys).await;
    let source = format!("s3://{bucket}/flat");
    let work = tempfile::tempdir().unwrap();
    let (sequential_dir, parallel_dir) = (work.path().join("seq"), work.path().join("par"));
    let (sequential_dir, parallel_dir) = (
        sequential_dir.to_str().unwrap(),
        parallel_dir.to_str().unwrap(),
    );
    let sequential = s3mirror(&[&source, sequential_dir, "--list-parallelism", "1"]);
    let parallel = s3mirror(&[&source, parallel_dir, "--list-parallelism", "64"]);
    for run in [&sequential, &parallel] {
        run.assert_code(0);
        assert_eq!(run.count("copied"), KEYS as u64);
    }
    // One request per page of 1,000 keys listed one after the other; many more spans,
    // each with its own requests, listed at once.
    assert_eq!(sequential.requests("ListObjectsV2"), 3);
    let requests = parallel.requests("ListObjectsV2");
    assert!(requests > 6, "{requests} ListObjectsV2 requests");
    let expected = as_files(&keys);
    assert!(tree_contents(parallel_dir.as_ref()) == expected);
    assert!(tree_contents(sequential_dir.as_ref()) == expected);

    // Joined against the local walk, a key listed twice, missed or out of order would be
    // copied again or stop the run.
    let again = s3mirror(&[&source, parallel_dir, "--list-parallelism", "64"]);
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);
    // The bucket as the destination.
    let back = s3mirror(&[parallel_dir, &source, "--list-parallelism", "64"]);
    back.assert_code(0);
    assert_eq!(back.count("copied"), 0);

    // Between buckets, both sides listed in parallel.
    let server = garage();
    let dest_bucket = server.new_bucket("flat-list-dst").await;
    let dest = format!("s3://{dest_bucket}/flat");
    let copy = s3mirror(&[&source, &dest, "--list-parallelism", "64"]);
    copy.assert_code(0);
    assert_eq!(copy.count("copied"), KEYS as u64);
    let again = s3mirror(&[&source, &dest, "--list-parallelism", "64"]);
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);
    let client = server.client();
    assert!(
        bucket_contents(&client, &dest_bucket, "flat/").await
            == bucket_contents(&client, &bucket, "flat/").await
    );
}

fn copied_keys(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["action"] == "copy")
        .map(|event| event["key"].as_str().unwrap().to_owned())
        .collect()
}

fn listed_source(run: &Run) -> u64 {
    let summary: Value = serde_json::from_str(run.stdout.lines().last().unwrap()).unwrap();
    summary["listed_source"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_of_a_flat_prefix_listed_in_parallel_make_exactly_the_whole_mirror() {
    let keys = flat_keys(KEYS);
    let bucket = flat_bucket("flat-shard", &keys).await;
    let dest_bucket = garage().new_bucket("flat-shard-dst").await;
    let (source, dest) = (
        format!("s3://{bucket}/flat"),
        format!("s3://{dest_bucket}/flat"),
    );
    // Two shards of about 1,500 keys: each range takes more than a page, so its listing
    // is cut into spans, and each stops at its range's end.
    let shard = |k: usize| {
        let shard = format!("{k}/2");
        s3mirror(&[
            &source,
            &dest,
            "--json",
            "--shard",
            &shard,
            "--list-parallelism",
            "64",
        ])
    };
    let mut union = BTreeSet::new();
    let mut listed = 0;
    for k in 0..2 {
        let run = shard(k);
        run.assert_code(0);
        let copied = copied_keys(&run);
        assert!(copied.len() > 1_000, "shard {k} copied {}", copied.len());
        for key in copied {
            assert!(union.insert(key.clone()), "{key:?} copied by two shards");
        }
        listed += listed_source(&run);
    }
    assert!(union == keys, "{} keys copied", union.len());
    assert_eq!(
        listed, KEYS as u64,
        "the shards' listings add up to the whole"
    );
    for k in 0..2 {
        let again = shard(k);
        again.assert_code(0);
        assert!(copied_keys(&again).is_empty(), "shard {k} copied again");
    }
    let client = garage().client();
    assert!(
        bucket_contents(&client, &dest_bucket, "flat/").await
            == bucket_contents(&client, &bucket, "flat/").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_prefix_listed_in_parallel_from_moto_yields_exactly_its_keys() {
    // Another server's reading of StartAfter, MaxKeys and prefixes: 1,500 keys, so that the
    // rest after the first page is cut into spans.
    let server = moto();
    let keys = flat_keys(1_500);
    let bucket = server.new_bucket("flat-list").await;
    put_flat(&server.client(), &bucket, &keys).await;
    let work = tempfile::tempdir().unwrap();
    let (source, dir) = (
        format!("s3://{bucket}/flat"),
        work.path().to_str().unwrap().to_owned(),
    );
    let (first, again) = tokio::task::spawn_blocking(move || {
        let args = [source.as_str(), dir.as_str(), "--list-parallelism", "64"];
        (server.run(&args), server.run(&args))
    })
    .await
    .unwrap();
    first.assert_code(0);
    assert_eq!(first.count("copied"), keys.len() as u64);
    // Listed one page after the other, two requests; the rest was cut into spans.
    let requests = first.requests("ListObjectsV2");
    assert!(requests > 2, "{requests} ListObjectsV2 requests");
    assert!(tree_contents(work.path()) == as_files(&keys));
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);
}
