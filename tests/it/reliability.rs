//! Faults between s3mirror and the server, injected by `faultproxy` on loopback: the run
//! retries through them and ends with an identical mirror, or fails with a clear cause.

use std::net::SocketAddr;

use faultproxy::{Faults, Proxy};

use crate::garage::garage;
use crate::{bucket_contents, put_multipart, s3mirror, tree_contents, write_tree, Run};

pub async fn proxy(faults: Faults) -> Proxy {
    let upstream: SocketAddr = garage()
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    Proxy::start(upstream, faults).await.unwrap()
}

/// Runs s3mirror against the proxy, off the runtime that serves the proxy.
pub async fn run_through(proxy: &Proxy, args: &[&str]) -> Run {
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

const LOWERED: &str = "throttled  concurrent transfers lowered to";

/// The lowest number of concurrent transfers in the summary: the `throttled` line's, or
/// `threads` when there is none (throttling never lowered it).
fn lowest_concurrency(run: &Run, threads: u64) -> u64 {
    let lowered = run
        .stderr
        .lines()
        .any(|line| line.trim_start().starts_with(LOWERED));
    if lowered {
        run.count(LOWERED)
    } else {
        threads
    }
}

/// `count` files of up to a few KiB in 20 directories.
fn small_files(count: u32) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let body = format!("object {i} ").repeat(1 + (i % 50) as usize);
            (format!("d{:02}/f{i:04}", i % 20), body.into_bytes())
        })
        .collect()
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
    write_tree(work.path(), &small_files(2000));
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_through_scattered_slowdowns_keeps_its_concurrency() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("scattered").await;
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &small_files(2000));
    let url = format!("s3://{bucket}/data");
    s3mirror(&[work.path().to_str().unwrap(), &url]).assert_code(0);

    // One request in ten refused at random, whatever the rate: concurrency does not cause
    // it, and lowering it would only slow the run.
    let proxy = proxy(Faults {
        slowdown: 0.10,
        ..Faults::default()
    })
    .await;
    let dest = tempfile::tempdir().unwrap();
    let restore = [
        url.as_str(),
        dest.path().to_str().unwrap(),
        "--threads",
        "32",
    ];
    let run = run_through(&proxy, &restore).await;
    run.assert_code(0);
    assert_eq!(run.count("copied"), 2000);
    assert_eq!(
        tree_contents(dest.path()),
        bucket_contents(&client, &bucket, "data/").await
    );
    let slowdowns = Proxy::count(&proxy.counters.slowdowns);
    assert!(slowdowns > 100, "{slowdowns}");
    assert!(
        run.stderr.contains(&format!("{slowdowns} throttled")),
        "{}",
        run.stderr
    );
    // Halving for a round tells scattered throttling from a rate limit; nothing deeper.
    let lowest = lowest_concurrency(&run, 32);
    assert!(lowest >= 8, "lowered to {lowest}:\n{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_lowers_the_concurrency_and_the_mirror_completes() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("rate-limited").await;
    // Far fewer requests per second than 32 transfers on loopback send, as S3 allows a
    // prefix: the share of refusals is high until fewer transfers run at once.
    let proxy = proxy(Faults {
        rate_limit: Some(100.0),
        ..Faults::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &small_files(1000));
    let url = format!("s3://{bucket}/data");
    let run = run_through(
        &proxy,
        &[work.path().to_str().unwrap(), &url, "--threads", "32"],
    )
    .await;
    run.assert_code(0);
    assert_eq!(run.count("copied"), 1000);
    assert_eq!(
        bucket_contents(&client, &bucket, "data/").await,
        tree_contents(work.path())
    );
    assert!(Proxy::count(&proxy.counters.rate_limited) > 0);
    let lowest = run.count(LOWERED);
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

/// Compares two sets of objects by key, naming the keys that differ (not their bytes).
fn assert_same_contents(
    got: &std::collections::BTreeMap<String, Vec<u8>>,
    want: &std::collections::BTreeMap<String, Vec<u8>>,
    run: &crate::Run,
) {
    let differ: Vec<String> = want
        .iter()
        .filter(|(key, body)| got.get(*key) != Some(body))
        .map(|(key, body)| {
            let found = got.get(key).map(|b| b.len());
            format!("{key} ({} bytes wanted, {found:?} found)", body.len())
        })
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k} (extra)")),
        )
        .collect();
    assert!(
        differ.is_empty(),
        "differ: {differ:?}\nstderr:\n{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_cut_short_or_damaged_are_fetched_again_and_never_land() {
    const MIB: usize = 1 << 20;
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("damaged").await;
    let copy_bucket = server.new_bucket("damaged-copy").await;
    let url = format!("s3://{bucket}/data");
    // The large one uploaded in parts by s3mirror, which records the whole MD5.
    upload_objects_to_damage(&url, &[]);
    // Uploaded in parts by another tool: only the multipart ETag tells the content.
    let (five, one) = (vec![7u8; 5 * MIB], vec![9u8; MIB]);
    put_multipart(&client, &bucket, "data/sdk/six.bin", &[&five, &one], &[]).await;
    let expected = bucket_contents(&client, &bucket, "data/").await;

    let proxy = damaging_proxy().await;
    // To a directory: the 11 MiB object by ranges, the rest whole.
    let dest = tempfile::tempdir().unwrap();
    let download = [
        url.as_str(),
        dest.path().to_str().unwrap(),
        "--multipart-threshold",
        "8MiB",
        "--part-size",
        "5MiB",
    ];
    let run = run_through(&proxy, &download).await;
    run.assert_code(0);
    assert_same_contents(&tree_contents(dest.path()), &expected, &run);
    let truncations = Proxy::count(&proxy.counters.truncations);
    let corruptions = Proxy::count(&proxy.counters.corruptions);
    assert!(
        truncations > 0 && corruptions > 0,
        "{truncations} {corruptions}"
    );
    let recopied = run.count("recopied");
    assert!(
        recopied >= 1 && recopied <= truncations + corruptions,
        "{recopied} for {truncations}+{corruptions} faults:\n{}",
        run.stderr
    );
    // Damage is named: by the S3 client's check of a stated CRC, or by s3mirror's own.
    assert!(
        run.stderr.contains("checksum mismatch: the server states")
            || run.stderr.contains("damaged on the way"),
        "{}",
        run.stderr
    );

    // Bucket to bucket through this machine: the destination checks the source's MD5, or
    // the bytes are checked against its CRC on the way.
    let copy_url = format!("s3://{copy_bucket}/data");
    let through = copy_through(&proxy, &url, &copy_url, &[]).await;
    through.assert_code(0);
    assert_same_contents(
        &bucket_contents(&client, &copy_bucket, "data/").await,
        &expected,
        &through,
    );
    assert!(through.count("recopied") >= 1, "{}", through.stderr);
}

/// Uploads 120 small objects below `small/` and one of 11 MiB in 5 MiB parts to `url`,
/// with s3mirror and `extra` options.
fn upload_objects_to_damage(url: &str, extra: &[&str]) {
    let work = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = (0..120u32)
        .map(|i| {
            let body = format!("object {i} ").repeat(1 + (i as usize * 97) % 4000);
            (format!("small/f{i:03}"), body.into_bytes())
        })
        .collect();
    let big: Vec<u8> = (0..11 << 20).map(|i| (i % 251) as u8).collect();
    files.push(("big/eleven.bin".into(), big));
    write_tree(work.path(), &files);
    let parts = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
    let up = [work.path().to_str().unwrap(), url];
    s3mirror(&[&up[..], &parts, extra].concat()).assert_code(0);
}

/// A proxy that cuts 8 % of object GETs short and flips a bit in 8 %.
async fn damaging_proxy() -> Proxy {
    proxy(Faults {
        truncate: 0.08,
        corrupt: 0.08,
        ..Faults::default()
    })
    .await
}

/// A bucket to bucket copy through this machine, reading the source through the proxy
/// and writing straight to the server, in parts above 8 MiB.
async fn copy_through(proxy: &Proxy, from: &str, to: &str, extra: &[&str]) -> Run {
    let endpoint = format!("http://{}", proxy.addr);
    let args: Vec<String> = [
        from,
        to,
        "--source-endpoint-url",
        &endpoint,
        "--dest-endpoint-url",
        &garage().endpoint,
        "--multipart-threshold",
        "8MiB",
        "--part-size",
        "5MiB",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s3mirror(&args)
    })
    .await
    .unwrap()
}

/// Objects that state a whole-object CRC (as every object AWS has stored since December
/// 2024 states a CRC64NVME) and so are checked against it rather than their MD5: copied
/// through this machine past a proxy that damages and cuts bodies, none lands damaged,
/// whether the copy carries checksums or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_of_objects_stating_crcs_through_this_machine_never_land_damaged() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("crc-damaged").await;
    let url = format!("s3://{bucket}/data");
    upload_objects_to_damage(&url, &["--checksum-algorithm", "crc32c"]);
    let expected = bucket_contents(&client, &bucket, "data/").await;

    let proxy = damaging_proxy().await;
    // Without checksums, the bytes are checked on their way through, and a mismatch
    // names the read; with them, the destination checks the source's CRC.
    for (name, extra, refusal) in [
        ("crc-plain-copy", &[][..], "GetObject"),
        (
            "crc-crc-copy",
            &["--checksum-algorithm", "crc32c"][..],
            "PutObject",
        ),
    ] {
        let copy_bucket = server.new_bucket(name).await;
        let copy_url = format!("s3://{copy_bucket}/data");
        let through = copy_through(&proxy, &url, &copy_url, extra).await;
        through.assert_code(0);
        assert_same_contents(
            &bucket_contents(&client, &copy_bucket, "data/").await,
            &expected,
            &through,
        );
        assert!(through.count("recopied") >= 1, "{name}: {}", through.stderr);
        let refused = through.stderr.lines().any(|line| {
            line.contains(refusal)
                && (line.contains("checksum mismatch")
                    || line.contains("damaged on the way")
                    || line.contains("InvalidDigest"))
        });
        assert!(refused, "{name}: {}", through.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_failing_its_stated_checksum_says_so_with_both_values() {
    let server = garage();
    let work = tempfile::tempdir().unwrap();
    // The large one goes up in parts and comes down by ranges, whose CRCs combine.
    let parted: Vec<u8> = (0..6 << 20).map(|i| (i % 239) as u8).collect();
    write_tree(
        work.path(),
        &[
            ("one.txt".into(), b"one small object".to_vec()),
            ("parted.bin".into(), parted),
        ],
    );
    let parts = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
    let proxy = proxy(Faults {
        corrupt: 1.0,
        ..Faults::default()
    })
    .await;
    // With the algorithm asked for, and with the CRC32C every upload stores by default.
    for (name, algorithm) in [
        ("mismatch", &["--checksum-algorithm", "CRC32C"][..]),
        ("mismatch-default", &[]),
    ] {
        let url = format!("s3://{}", server.new_bucket(name).await);
        let up = [work.path().to_str().unwrap(), &url];
        s3mirror(&[&up[..], &parts, algorithm].concat()).assert_code(0);
        let dest = tempfile::tempdir().unwrap();
        let download = [
            url.as_str(),
            dest.path().to_str().unwrap(),
            "--max-retries",
            "0",
        ];
        let run = run_through(&proxy, &[&download[..], &parts, algorithm].concat()).await;
        run.assert_code(1);
        let ranged = run.stderr.lines().find(|line| line.contains("parted.bin"));
        assert!(
            ranged.is_some_and(|line| line.contains("do not match the object's checksum CRC32C")),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr
                .contains("checksum mismatch: the server states CRC32C "),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(", the bytes received hash to "),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("streaming error"), "{}", run.stderr);
        assert!(
            tree_contents(dest.path()).is_empty(),
            "nothing damaged lands"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keeping_no_checksums_gets_multipart_uploads_checked_by_etag() {
    const MIB: usize = 1 << 20;
    let server = garage();
    let client = server.client();
    let (bucket, strict) = (
        server.new_bucket("nochecksums").await,
        server.new_bucket("nochecksums-strict").await,
    );
    let work = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..12 * MIB + 5).map(|i| (i % 253) as u8).collect();
    write_tree(work.path(), &[("big.bin".into(), big.clone())]);
    let proxy = proxy(Faults {
        strip_checksums: true,
        ..Faults::default()
    })
    .await;
    let src = work.path().to_str().unwrap();
    let parts = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
    let (url, strict_url) = (format!("s3://{bucket}"), format!("s3://{strict}"));
    let lenient = run_through(&proxy, &[&[src, &url][..], &parts].concat()).await;
    lenient.assert_code(0);
    assert!(
        lenient.stderr.contains("checked by their ETag instead"),
        "{}",
        lenient.stderr
    );
    assert_eq!(bucket_contents(&client, &bucket, "").await["big.bin"], big);
    let again = run_through(&proxy, &[&[src, &url][..], &parts].concat()).await;
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);

    // Asked for, a checksum the server does not keep is a failure that says so.
    let asked = [src, &strict_url, "--checksum-algorithm", "CRC32C"];
    let refused = run_through(&proxy, &[&asked[..], &parts].concat()).await;
    refused.assert_code(1);
    assert!(
        refused
            .stderr
            .contains("did not confirm the CRC32C checksum sent with the object"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("--compare etag"),
        "{}",
        refused.stderr
    );
    let uploads = client
        .list_multipart_uploads()
        .bucket(&strict)
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "no upload left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_server_is_given_the_time_it_asks_for() {
    let server = garage();
    let bucket = server.new_bucket("retry-after").await;
    let proxy = proxy(Faults {
        slowdown: 1.0,
        retry_after: Some(std::time::Duration::from_secs(3)),
        ..Faults::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &[("a".into(), b"a".to_vec())]);
    let url = format!("s3://{bucket}/data");
    let started = std::time::Instant::now();
    let args = [work.path().to_str().unwrap(), &url];
    let run = run_through(&proxy, &args);
    // Throttle the first request only.
    let first_only = async {
        while Proxy::count(&proxy.counters.slowdowns) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        proxy.set_faults(Faults::default());
    };
    let (run, ()) = tokio::join!(run, first_only);
    run.assert_code(0);
    assert_eq!(Proxy::count(&proxy.counters.slowdowns), 1);
    // Without Retry-After, the first retry comes within a second.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn max_rps_and_max_bandwidth_hold_the_run_below_them() {
    let server = garage();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(server.new_bucket("paced"));
    let work = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..30u32)
        .map(|i| (format!("f{i:02}"), vec![i as u8; 100]))
        .collect();
    write_tree(work.path(), &files);
    let src = work.path().to_str().unwrap();

    let started = std::time::Instant::now();
    let run = s3mirror(&[src, &format!("s3://{bucket}/rps"), "--max-rps", "20"]);
    let elapsed = started.elapsed().as_secs_f64();
    run.assert_code(0);
    let requests = run.requests("ListObjectsV2") + run.requests("PutObject");
    assert!(requests >= 31, "{}", run.stderr);
    // n requests at 20 per second take at least (n - 1) / 20 seconds.
    assert!(
        elapsed >= (requests - 1) as f64 / 20.0,
        "{requests} requests in {elapsed:.2}s"
    );

    let big = tempfile::tempdir().unwrap();
    write_tree(big.path(), &[("two-mib".into(), vec![7u8; 2 << 20])]);
    let started = std::time::Instant::now();
    let run = s3mirror(&[
        big.path().to_str().unwrap(),
        &format!("s3://{bucket}/bw"),
        "--max-bandwidth",
        "1MiB",
    ]);
    let elapsed = started.elapsed().as_secs_f64();
    run.assert_code(0);
    // The first chunk goes at once; the remaining ~2 MiB take about two seconds.
    assert!(elapsed >= 1.5, "2 MiB at 1 MiB/s in {elapsed:.2}s");
}
