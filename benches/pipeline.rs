//! Micro-benchmarks of the in-process hot paths: the merge-join and decision over a
//! million synthetic entries (what a no-op re-sync of a million objects costs beyond the
//! listings themselves), and the hashes behind ETags and checksums.
//!
//! Run with `cargo bench --bench pipeline`.

use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use s3mirror::plan::{decide, CompareMode, MergeJoin, Pair, Pairing};
use s3mirror::storage::checksum::{digest, ChecksumAlgorithm, HashKind};
use s3mirror::storage::{ETag, Entry, Listing};

const ENTRIES: usize = 1_000_000;

fn entries() -> Vec<Entry> {
    let etag = ETag::parse("\"9e107d9d372bb6826bd81d3542a419d6\"");
    let mut keys: Vec<String> = (0..ENTRIES)
        .map(|i| format!("data/d{:03}/file-{i:08}.bin", i % 997))
        .collect();
    keys.sort();
    keys.into_iter()
        .map(|key| Entry {
            key,
            size: 4096,
            mtime: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            etag: Some(etag.clone()),
            skip: None,
            storage_class: None,
            version: None,
        })
        .collect()
}

/// Streams `entries` through a listing channel, as a lister task would.
fn listing(entries: Vec<Entry>) -> Listing {
    let (tx, listing) = Listing::channel();
    tokio::spawn(async move {
        for entry in entries {
            if tx.send(Ok(entry)).await.is_err() {
                return;
            }
        }
    });
    listing
}

fn join_and_decide(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let source = entries();
    let mut group = c.benchmark_group("no-op re-sync");
    group.throughput(Throughput::Elements(ENTRIES as u64));
    group.sample_size(10);
    group.bench_function("merge-join + decide, 1M keys on both sides", |b| {
        b.iter_batched(
            || (source.clone(), source.clone()),
            |(source, dest)| {
                runtime.block_on(async move {
                    let mut join = MergeJoin::new(listing(source), listing(dest));
                    let mut unchanged = 0usize;
                    while let Some(item) = join.next().await {
                        if let Ok(Pair::Both { source, dest }) = item {
                            let d =
                                decide(&source, Some(&dest), CompareMode::Etag, Pairing::S3ToS3);
                            unchanged += usize::from(d == s3mirror::plan::Decision::Skip);
                        }
                    }
                    assert_eq!(unchanged, ENTRIES);
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn hashes(c: &mut Criterion) {
    let data = vec![0x5a_u8; 16 << 20];
    let mut group = c.benchmark_group("hash 16 MiB");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    let kinds = [
        ("MD5 (ETag)", HashKind::Md5),
        ("CRC32C", HashKind::Checksum(ChecksumAlgorithm::Crc32c)),
        (
            "CRC64NVME",
            HashKind::Checksum(ChecksumAlgorithm::Crc64nvme),
        ),
        ("SHA256", HashKind::Checksum(ChecksumAlgorithm::Sha256)),
    ];
    for (name, kind) in kinds {
        group.bench_function(name, |b| b.iter(|| digest(kind, &data)));
    }
    let parts: Vec<Vec<u8>> = data
        .chunks(1 << 20)
        .map(|part| digest(HashKind::Md5, part))
        .collect();
    group.bench_function("multipart ETag from 16 part MD5s", |b| {
        b.iter(|| ETag::multipart(&parts))
    });
    group.finish();
}

criterion_group!(benches, join_and_decide, hashes);
criterion_main!(benches);
