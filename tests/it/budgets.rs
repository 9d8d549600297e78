//! Run budgets for a maintenance window: `--max-transfer` and `--max-duration` stop new
//! copies with exit 4, `--cutoff hard` aborts what is in flight, deletions wait for a
//! run that copies everything, and a rerun finishes the job.

use std::time::Duration;

use faultproxy::Faults;

use crate::garage::garage;
use crate::reliability::{proxy, run_through};
use crate::{bucket_contents, put_object, s3mirror, write_tree};

const KIB: usize = 1 << 10;

fn files(count: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| (format!("f{i:03}.bin"), vec![i as u8; size]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_transfer_stops_new_copies_with_exit_4_and_a_rerun_finishes() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("budget-bytes").await;
    put_object(&client, &bucket, "zz-extra.txt", b"only in the destination").await;
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &files(40, 100 * KIB));
    let (src, url) = (
        work.path().to_str().unwrap().to_owned(),
        format!("s3://{bucket}"),
    );
    let (stopped, rerun) = tokio::task::spawn_blocking(move || {
        let budget = [
            "--max-transfer",
            "1MiB",
            "--threads",
            "2",
            "--delete",
            "--json",
        ];
        (
            s3mirror(&[&[src.as_str(), &url][..], &budget].concat()),
            s3mirror(&[&src, &url, "--delete"]),
        )
    })
    .await
    .unwrap();
    stopped.assert_code(4);
    let summary = stopped.stdout.lines().last().unwrap();
    assert!(
        summary.contains("\"stopped_by\":\"--max-transfer\""),
        "{summary}"
    );
    assert!(summary.contains("\"result\":\"stopped\""), "{summary}");
    assert!(
        stopped.stderr.contains("nothing was deleted"),
        "{}",
        stopped.stderr
    );
    let copied_first = stopped.stdout.matches("\"action\":\"copy\"").count();
    assert!(
        (10..40).contains(&copied_first),
        "1 MiB of 100 KiB files, two in flight: {copied_first} copied"
    );
    rerun.assert_code(0);
    assert_eq!(rerun.count("copied") as usize, 40 - copied_first);
    assert_eq!(rerun.count("deleted"), 1);
    assert_eq!(bucket_contents(&client, &bucket, "").await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_stops_new_copies_and_hard_cutoff_aborts_the_upload_in_flight() {
    let server = garage();
    let client = server.client();
    let (soft, hard) = (
        server.new_bucket("budget-soft").await,
        server.new_bucket("budget-hard").await,
    );
    let work = tempfile::tempdir().unwrap();
    let (small, big) = (work.path().join("small"), work.path().join("big"));
    write_tree(&small, &files(20, KIB));
    write_tree(&big, &[("big.bin".into(), vec![7u8; 12 << 20])]);
    // 200 ms per request: 20 uploads one at a time take at least 4 s.
    let slow = proxy(Faults {
        latency: Duration::from_millis(200),
        ..Faults::default()
    })
    .await;
    let soft_url = format!("s3://{soft}");
    let args = [
        small.to_str().unwrap(),
        &soft_url,
        "--threads",
        "1",
        "--max-duration",
        "1s",
    ];
    let soft_run = run_through(&slow, &args).await;
    soft_run.assert_code(4);
    assert!(
        soft_run.stderr.contains("stopped    at --max-duration 1s"),
        "{}",
        soft_run.stderr
    );
    let done = soft_run.count("copied");
    assert!(done < 20, "{}", soft_run.stderr);
    assert_eq!(bucket_contents(&client, &soft, "").await.len() as u64, done);

    // 1 s per request: the upload (create, then three parts one at a time) takes at least
    // 4 s, so a 3 s deadline finds it in flight however long the file takes to hash.
    let slower = proxy(Faults {
        latency: Duration::from_secs(1),
        ..Faults::default()
    })
    .await;
    let hard_url = format!("s3://{hard}");
    let args = [
        big.to_str().unwrap(),
        &hard_url,
        "--multipart-threshold",
        "5MiB",
        "--part-size",
        "5MiB",
        "--part-concurrency",
        "1",
        "--max-duration",
        "3s",
        "--cutoff",
        "hard",
    ];
    let hard_run = run_through(&slower, &args).await;
    hard_run.assert_code(4);
    assert!(hard_run.stderr.contains("aborted"), "{}", hard_run.stderr);
    let uploads = client
        .list_multipart_uploads()
        .bucket(&hard)
        .send()
        .await
        .unwrap();
    assert!(
        uploads.uploads().is_empty(),
        "the upload in flight was aborted"
    );
    assert!(bucket_contents(&client, &hard, "").await.is_empty());

    let (small, big) = (
        small.to_str().unwrap().to_owned(),
        big.to_str().unwrap().to_owned(),
    );
    let reruns = tokio::task::spawn_blocking(move || {
        (s3mirror(&[&small, &soft_url]), s3mirror(&[&big, &hard_url]))
    })
    .await
    .unwrap();
    reruns.0.assert_code(0);
    assert_eq!(reruns.0.count("copied"), 20 - done);
    reruns.1.assert_code(0);
    assert_eq!(
        bucket_contents(&client, &hard, "").await["big.bin"].len(),
        12 << 20
    );
}
