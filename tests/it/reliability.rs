//! Faults between s3mirror and the server, injected by `faultproxy` on loopback: the run
//! retries through them and ends with an identical mirror, or fails with a clear cause.

use std::net::SocketAddr;

use faultproxy::{Faults, Proxy};

use crate::garage::garage;
use crate::{bucket_contents, s3mirror, tree_contents, write_tree, Run};

async fn proxy(faults: Faults) -> Proxy {
    let upstream: SocketAddr = garage()
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    Proxy::start(upstream, faults).await.unwrap()
}

/// Runs s3mirror against the proxy, off the runtime that serves the proxy.
async fn run_through(proxy: &Proxy, args: &[&str]) -> Run {
    let endpoint = format!("http://{}", proxy.addr);
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--endpoint-url".to_owned(), endpoint]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s3mirror(&args)
    })
    .await
    .unwrap()
}

/// The number after `label` in the summary's `retried` line, e.g. `retried 12 (...)`.
fn retried(run: &Run) -> u64 {
    run.count("retried")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_dropped_connections_are_retried_to_an_identical_mirror() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("faults").await;
    let proxy = proxy(Faults {
        slowdown: 0.10,
        reset: 0.01,
        ..Faults::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..2000u32)
        .map(|i| {
            let body = format!("object {i} ").repeat(1 + (i % 50) as usize);
            (format!("d{:02}/f{i:04}", i % 20), body.into_bytes())
        })
        .collect();
    write_tree(work.path(), &files);
    let url = format!("s3://{bucket}/data");
    let src = work.path().to_str().unwrap();

    let run = run_through(&proxy, &[src, &url, "--threads", "32"]).await;
    run.assert_code(0);
    assert_eq!(run.count("copied"), 2000);
    assert_eq!(
        bucket_contents(&client, &bucket, "data/").await,
        tree_contents(work.path())
    );
    let slowdowns = Proxy::count(&proxy.counters.slowdowns);
    let resets = Proxy::count(&proxy.counters.resets);
    assert!(slowdowns > 100 && resets > 0, "{slowdowns} {resets}");
    // Every injected fault was answered by a retry, and the summary says so.
    assert_eq!(retried(&run), slowdowns + resets, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{slowdowns} throttled")),
        "{}",
        run.stderr
    );
    // The adaptive limit came down from 32 concurrent transfers.
    let lowest = run.count("throttled  concurrent transfers lowered to");
    assert!(lowest < 32, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_throttling_fails_the_run_with_its_cause() {
    let server = garage();
    let bucket = server.new_bucket("no-retries").await;
    let proxy = proxy(Faults {
        slowdown: 1.0,
        ..Faults::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &[("a".into(), b"a".to_vec())]);
    let url = format!("s3://{bucket}/data");
    let run = run_through(
        &proxy,
        &[work.path().to_str().unwrap(), &url, "--max-retries", "0"],
    )
    .await;
    run.assert_code(3);
    assert!(
        run.stderr.contains("ListObjectsV2") && run.stderr.contains("SlowDown"),
        "{}",
        run.stderr
    );
    assert_eq!(Proxy::count(&proxy.counters.requests), 1);
}
