//! `--metrics-file`: what a run writes, read by the reference parser of the Prometheus
//! text format (Python's prometheus_client, which scripts/test.sh installs).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::garage::garage;
use crate::{s3mirror, write_tree};

/// Every sample of the file, as `name{label=value,...}` → value, and every family's
/// type, as prometheus_client parses them.
fn parse_exposition(path: &Path) -> (BTreeMap<String, f64>, BTreeMap<String, String>) {
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples, types = {}, {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    types[family.name] = family.type
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        samples[f"{sample.name}{{{labels}}}"] = sample.value
print(json.dumps({"samples": samples, "types": types}))
"#;
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "prometheus_client could not parse {}: {}\n(scripts/test.sh installs prometheus-client)",
        std::fs::read_to_string(path).unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples = parsed["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    let types = parsed["types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    (samples, types)
}

#[tokio::test]
async fn a_sync_writes_metrics_the_reference_parser_reads() {
    let server = garage();
    let bucket = server.new_bucket("metrics").await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("src");
    let files: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| (format!("f{i}"), vec![b'x'; 100 * (i + 1)]))
        .collect();
    write_tree(&source, &files);
    let metrics_dir = work.path().join("textfile");
    std::fs::create_dir(&metrics_dir).unwrap();
    let metrics = metrics_dir.join("s3mirror-nightly.prom");
    let dest = format!("s3://{bucket}/m");
    let args = |source: &str| {
        vec![
            source.to_owned(),
            dest.clone(),
            "--metrics-file".into(),
            metrics.to_str().unwrap().into(),
            "--job-name".into(),
            "nightly".into(),
            "--stats-interval".into(),
            "50ms".into(),
        ]
    };
    let run = |source: &str| {
        let args = args(source);
        s3mirror(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    run(source.to_str().unwrap()).assert_code(0);
    let (samples, types) = parse_exposition(&metrics);
    let job = "job_name=nightly";
    let get = |samples: &BTreeMap<String, f64>, key: &str| {
        *samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
    };
    assert_eq!(types["s3mirror_objects"], "counter");
    assert_eq!(types["s3mirror_exit_code"], "gauge");
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=copied}}")
        ),
        5.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=unchanged}}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=failed}}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=deleted}}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=archived}}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_bytes_total{{{job},result=copied}}")
        ),
        1500.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_requests_total{{{job},operation=PutObject}}")
        ),
        5.0
    );
    assert!(
        get(
            &samples,
            &format!("s3mirror_requests_total{{{job},operation=ListObjectsV2}}")
        ) >= 1.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_request_retries_total{{{job}}}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_throttled_responses_total{{{job}}}")
        ),
        0.0
    );
    assert_eq!(get(&samples, &format!("s3mirror_exit_code{{{job}}}")), 0.0);
    assert_eq!(get(&samples, &format!("s3mirror_running{{{job}}}")), 0.0);
    assert!(get(&samples, &format!("s3mirror_run_duration_seconds{{{job}}}")) > 0.0);
    let success = get(
        &samples,
        &format!("s3mirror_last_success_timestamp_seconds{{{job}}}"),
    );
    assert!(success >= before.floor(), "{success} >= {before}");

    // A second run finds everything unchanged.
    run(source.to_str().unwrap()).assert_code(0);
    let (samples, _) = parse_exposition(&metrics);
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=copied}}")
        ),
        0.0
    );
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_objects_total{{{job},result=unchanged}}")
        ),
        5.0
    );
    let success = get(
        &samples,
        &format!("s3mirror_last_success_timestamp_seconds{{{job}}}"),
    );

    // A run that cannot proceed says so, and keeps the time of the last success.
    run(work.path().join("missing").to_str().unwrap()).assert_code(3);
    let (samples, _) = parse_exposition(&metrics);
    assert_eq!(get(&samples, &format!("s3mirror_exit_code{{{job}}}")), 3.0);
    assert_eq!(
        get(
            &samples,
            &format!("s3mirror_last_success_timestamp_seconds{{{job}}}")
        ),
        success
    );
    let names: Vec<_> = std::fs::read_dir(&metrics_dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["s3mirror-nightly.prom"],
        "no temporary file is left"
    );
}
