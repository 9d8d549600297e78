//! `--as-of`: a versioned bucket read as it was at a point in time, against moto's server
//! (Garage keeps no versions): restores to directories and to buckets, server-side and
//! through this machine, reruns that copy nothing, `verify --as-of`, and the refusals.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::types::{BucketVersioningStatus, Tag, Tagging, VersioningConfiguration};
use aws_sdk_s3::Client;

use crate::moto::moto;
use crate::{bucket_contents, put_object, tree_contents, Run};

const MIB: usize = 1 << 20;

/// Relative key → content.
type State = BTreeMap<String, Vec<u8>>;

/// A versioned bucket written at three moments, a time after each, and what the bucket
/// held at each time.
struct History {
    bucket: String,
    /// As `--as-of` takes them: RFC 3339, and the second with a space and no zone.
    times: [String; 3],
    states: [State; 3],
}

async fn set_versioning(client: &Client, bucket: &str, status: BucketVersioningStatus) {
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .unwrap();
}

/// A time between the writes before and after it. S3 states LastModified in whole
/// seconds (moto rounds down), so it is taken over a second after the last write and
/// the next write waits over a second more.
async fn moment() -> SystemTime {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let now = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    now
}

fn big(seed: u8) -> Vec<u8> {
    (0..6 * MIB).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// A change made to the history bucket.
enum Change {
    Put(&'static str, Vec<u8>),
    Delete(&'static str),
}

/// `doc.txt` is overwritten twice, `gone.txt` deleted at the last moment, `later.txt`
/// added at the second, `big.bin` (two parts) overwritten with as many other bytes, and
/// `stays.txt` never touched. Each version is tagged `moment=N`, N the moment it was
/// written at.
async fn history(client: &Client) -> History {
    use Change::{Delete, Put};
    let bucket = moto().new_bucket("history").await;
    set_versioning(client, &bucket, BucketVersioningStatus::Enabled).await;
    let moments = [
        vec![
            Put("doc.txt", b"first".to_vec()),
            Put("gone.txt", b"short-lived".to_vec()),
            Put("stays.txt", b"constant".to_vec()),
            Put("big.bin", big(0)),
        ],
        vec![
            Put("doc.txt", b"second draft".to_vec()),
            Put("later.txt", b"added later".to_vec()),
            Put("big.bin", big(0x5a)),
        ],
        vec![
            Put("doc.txt", b"third and final draft".to_vec()),
            Delete("gone.txt"),
        ],
    ];
    let mut state = State::new();
    let (mut states, mut times) = (Vec::new(), Vec::new());
    for (i, changes) in moments.into_iter().enumerate() {
        for change in changes {
            match change {
                Put(key, body) => {
                    put_object(client, &bucket, key, &body).await;
                    state.insert(key.to_owned(), body);
                    // Each version its own tags, which copies must read from it.
                    let tagging = Tagging::builder()
                        .tag_set(
                            Tag::builder()
                                .key("moment")
                                .value(i.to_string())
                                .build()
                                .unwrap(),
                        )
                        .build()
                        .unwrap();
                    let tag = client.put_object_tagging().bucket(&bucket).key(key);
                    tag.tagging(tagging).send().await.unwrap();
                }
                Delete(key) => {
                    let deleted = client.delete_object().bucket(&bucket).key(key).send();
                    deleted.await.unwrap();
                    state.remove(key);
                }
            }
        }
        states.push(state.clone());
        let time = match i {
            2 => SystemTime::now(),
            _ => moment().await,
        };
        let time = humantime::format_rfc3339_millis(time).to_string();
        times.push(match i {
            1 => time.replace('T', " ").replace('Z', ""),
            _ => time,
        });
    }
    History {
        bucket,
        times: times.try_into().unwrap(),
        states: states.try_into().unwrap(),
    }
}

async fn tags_of(client: &Client, bucket: &str, key: &str) -> Vec<(String, String)> {
    let out = client.get_object_tagging().bucket(bucket).key(key).send();
    let tags = out.await.unwrap();
    tags.tag_set()
        .iter()
        .map(|t| (t.key().to_owned(), t.value().to_owned()))
        .collect()
}

/// Sizes that send `big.bin` through every multipart path.
fn in_parts<'a>(args: &[&'a str]) -> Vec<&'a str> {
    [args, &crate::SMALL_PARTS].concat()
}

/// The runs of `a_versioned_bucket_is_restored_as_it_was_at_each_time`, in their order.
struct Runs {
    restores: [Run; 3],
    restore_again: Run,
    /// As of the last time, then over it as of the first with --delete.
    later_then_earlier: [Run; 2],
    server_side: [Run; 2],
    through_here: Run,
    verify_same: Run,
    verify_other_time: Run,
    verify_bucket: Run,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versioned_bucket_is_restored_as_it_was_at_each_time() {
    let server = moto();
    let client = server.client();
    let History {
        bucket,
        times,
        states,
    } = history(&client).await;
    let dirs = [(); 4].map(|()| tempfile::tempdir().unwrap());
    let (server_side, through) = (
        server.new_bucket("restored-ss").await,
        server.new_bucket("restored-tc").await,
    );
    let source = format!("s3://{bucket}");
    let paths = dirs
        .each_ref()
        .map(|d| d.path().to_str().unwrap().to_owned());
    let (server_side_url, through_url) = (format!("s3://{server_side}"), format!("s3://{through}"));
    let other_endpoint = server.endpoint.replace("127.0.0.1", "localhost");
    let runs = tokio::task::spawn_blocking(move || {
        let sync = |dest: &str, time: &str, more: &[&str]| {
            server.run(&in_parts(
                &[&[source.as_str(), dest, "--as-of", time][..], more].concat(),
            ))
        };
        let verify =
            |dest: &str, time: &str| server.run(&["verify", &source, dest, "--as-of", time]);
        Runs {
            restores: [0, 1, 2].map(|i| sync(&paths[i], &times[i], &[])),
            restore_again: sync(&paths[1], &times[1], &[]),
            later_then_earlier: [
                sync(&paths[3], &times[2], &[]),
                sync(&paths[3], &times[0], &["--delete"]),
            ],
            server_side: [(); 2].map(|()| sync(&server_side_url, &times[0], &[])),
            through_here: sync(
                &through_url,
                &times[1],
                &["--source-endpoint-url", &other_endpoint],
            ),
            verify_same: verify(&paths[1], &times[1]),
            verify_other_time: verify(&paths[1], &times[0]),
            verify_bucket: verify(&server_side_url, &times[0]),
        }
    })
    .await
    .unwrap();

    assert!(states[0].contains_key("gone.txt") && !states[2].contains_key("gone.txt"));
    assert!(!states[0].contains_key("later.txt"));
    for (i, run) in runs.restores.iter().enumerate() {
        run.assert_code(0);
        assert_eq!(
            run.count("copied"),
            states[i].len() as u64,
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("as it was at"), "{}", run.stderr);
        assert_eq!(run.requests("ListObjectsV2"), 0, "{}", run.stderr);
        assert_eq!(tree_contents(dirs[i].path()), states[i], "as of time {i}");
    }
    let again = &runs.restore_again;
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0, "{}", again.stderr);

    // An earlier state over a later one: big.bin has the same size in both, and the
    // newer file is another version, not an up-to-date copy.
    let [later, earlier] = &runs.later_then_earlier;
    later.assert_code(0);
    earlier.assert_code(0);
    assert_eq!(
        tree_contents(dirs[3].path()),
        states[0],
        "{}",
        earlier.stderr
    );
    assert_eq!(earlier.count("deleted"), 1, "later.txt: {}", earlier.stderr);

    let [to_bucket, to_bucket_again] = &runs.server_side;
    to_bucket.assert_code(0);
    assert!(
        to_bucket.requests("UploadPartCopy") > 0 && to_bucket.requests("GetObject") == 0,
        "server-side, big.bin in parts: {}",
        to_bucket.stderr
    );
    assert_eq!(bucket_contents(&client, &server_side, "").await, states[0]);
    to_bucket_again.assert_code(0);
    assert_eq!(
        to_bucket_again.count("copied"),
        0,
        "{}",
        to_bucket_again.stderr
    );

    // The tags of the versions copied, not of the current ones: server-side (CopyObject
    // for doc.txt, UploadPartCopy and then the tags for big.bin) and through this machine.
    for (bucket, key, moment) in [
        (&server_side, "doc.txt", "0"),
        (&server_side, "big.bin", "0"),
        (&through, "doc.txt", "1"),
    ] {
        let tags = tags_of(&client, bucket, key).await;
        assert_eq!(
            tags,
            [("moment".to_owned(), moment.to_owned())],
            "{bucket}/{key}"
        );
    }

    let through_here = &runs.through_here;
    through_here.assert_code(0);
    assert_eq!(
        through_here.requests("CopyObject"),
        0,
        "{}",
        through_here.stderr
    );
    assert_eq!(bucket_contents(&client, &through, "").await, states[1]);

    runs.verify_same.assert_code(0);
    let other = &runs.verify_other_time;
    other.assert_code(1);
    for difference in ["differs doc.txt", "differs big.bin", "extra   later.txt"] {
        assert!(
            other.stdout.contains(difference),
            "{difference}: {}",
            other.stdout
        );
    }
    runs.verify_bucket.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_never_kept_versions_is_refused_before_any_copy() {
    let server = moto();
    let client = server.client();
    let plain = server.new_bucket("unversioned").await;
    put_object(&client, &plain, "a.txt", b"current only").await;
    let suspended = server.new_bucket("suspended").await;
    set_versioning(&client, &suspended, BucketVersioningStatus::Enabled).await;
    put_object(&client, &suspended, "kept.txt", b"versioned once").await;
    set_versioning(&client, &suspended, BucketVersioningStatus::Suspended).await;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("restore").to_str().unwrap().to_owned();
    let (plain_url, suspended_url) = (format!("s3://{plain}"), format!("s3://{suspended}"));
    let local_source = dir.path().to_str().unwrap().to_owned();
    let [sync, verify, from_suspended, local] = tokio::task::spawn_blocking(move || {
        let at = "2030-01-01T00:00:00Z";
        [
            server.run(&[&plain_url, &dest, "--as-of", at]),
            server.run(&["verify", &plain_url, &dest, "--as-of", at]),
            server.run(&[&suspended_url, &dest, "--as-of", at]),
            server.run(&[&local_source, &plain_url, "--as-of", at]),
        ]
    })
    .await
    .unwrap();

    sync.assert_code(3);
    let message =
        format!("--as-of needs a versioned bucket: versioning was never enabled on s3://{plain}");
    assert!(sync.stderr.contains(&message), "{}", sync.stderr);
    assert_eq!(sync.requests("GetObject"), 0, "{}", sync.stderr);
    verify.assert_code(2);
    assert!(verify.stderr.contains(&message), "{}", verify.stderr);
    // Suspended versioning still holds the versions made before; a time in the future
    // is the current state.
    from_suspended.assert_code(0);
    assert_eq!(
        tree_contents(&dir.path().join("restore")),
        BTreeMap::from([("kept.txt".to_owned(), b"versioned once".to_vec())])
    );
    local.assert_code(2);
    assert!(
        local
            .stderr
            .contains("--as-of reads earlier versions of the objects of an S3 source"),
        "{}",
        local.stderr
    );
}
