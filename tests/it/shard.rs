//! Scale-out: shard processes that run at once each handle a disjoint range of keys, and
//! together exactly the whole mirror.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::garage::garage;
use crate::{bucket_contents, s3mirror, s3mirror_with, write_tree, Run};

fn summary(run: &Run) -> Value {
    let last = run.stdout.lines().last().expect("a summary line");
    serde_json::from_str(last).unwrap()
}

fn copied_keys(run: &Run) -> Vec<String> {
    run.stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["action"] == "copy")
        .map(|event| event["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_at_once_make_exactly_the_whole_mirror() {
    let server = garage();
    let client = server.client();
    let (source_bucket, dest_bucket) = (
        server.new_bucket("shard-src").await,
        server.new_bucket("shard-dst").await,
    );
    let work = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = (0..2000u32)
        .map(|i| {
            (
                format!("p{:02}/f{:03}", i / 100, i % 100),
                i.to_string().into_bytes(),
            )
        })
        .collect();
    files.push(("a-top-level-key".into(), b"top".to_vec()));
    files.push(("zz-last".into(), b"last".to_vec()));
    write_tree(work.path(), &files);
    let source = format!("s3://{source_bucket}/data");
    let dest = format!("s3://{dest_bucket}/data");
    s3mirror(&[work.path().to_str().unwrap(), &source]).assert_code(0);
    let all: BTreeSet<String> = files.iter().map(|(key, _)| key.clone()).collect();

    // The boundaries, written once.
    let plan = s3mirror(&["plan", &source, &dest, "--shards", "4"]);
    plan.assert_code(0);
    let boundaries: Vec<&str> = plan.stdout.lines().collect();
    assert_eq!(boundaries.len(), 3, "{}", plan.stdout);
    let boundaries_file = work.path().join("boundaries");
    std::fs::write(&boundaries_file, &plan.stdout).unwrap();

    // Four processes at once; the last takes its index from a Kubernetes Indexed Job's
    // environment.
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let (source, dest) = (source.clone(), dest.clone());
                scope.spawn(move || {
                    let index = k.to_string();
                    let shard = format!("{k}/4");
                    match k {
                        3 => s3mirror_with(
                            &[&source, &dest, "--json", "--shard", "4"],
                            &[("JOB_COMPLETION_INDEX", index.as_str())],
                        ),
                        _ => s3mirror(&[&source, &dest, "--json", "--shard", &shard]),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut union = BTreeSet::new();
    let mut listed = 0;
    for (k, run) in runs.iter().enumerate() {
        run.assert_code(0);
        assert!(
            run.stderr.contains(&format!("shard {k}/4: keys from")),
            "{}",
            run.stderr
        );
        for key in copied_keys(run) {
            assert!(union.insert(key.clone()), "{key} copied by two shards");
        }
        let seen = summary(run)["listed_source"].as_u64().unwrap();
        // Each lists about a quarter of the keys, never the whole listing.
        assert!(
            seen > 0 && seen < all.len() as u64 / 2,
            "shard {k} listed {seen}"
        );
        listed += seen;
    }
    assert_eq!(union, all);
    assert_eq!(
        listed,
        all.len() as u64,
        "the shards' listings add up to the whole"
    );
    assert_eq!(
        bucket_contents(&client, &dest_bucket, "data/").await,
        bucket_contents(&client, &source_bucket, "data/").await
    );

    // With the written boundaries, a shard finds its range already done.
    let again = s3mirror(&[
        &source,
        &dest,
        "--json",
        "--shard",
        "1/4",
        "--shard-boundaries",
        boundaries_file.to_str().unwrap(),
    ]);
    again.assert_code(0);
    assert_eq!(summary(&again)["copied"], 0);
    assert!(
        again
            .stderr
            .contains(&format!("keys from {:?}", boundaries[0])),
        "{}",
        again.stderr
    );

    // A manifest for S3 Batch Operations lists what a run would copy, and copies nothing.
    let manifest = work.path().join("manifest.csv");
    let fresh = format!("s3://{dest_bucket}/fresh");
    let run = s3mirror(&[
        &source,
        &fresh,
        "--manifest-out",
        manifest.to_str().unwrap(),
        "--exclude",
        "*",
        "--include",
        "p07/*",
    ]);
    run.assert_code(0);
    let lines: Vec<String> = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[0], format!("{source_bucket},data/p07/f000"));
    assert!(bucket_contents(&client, &dest_bucket, "fresh/")
        .await
        .is_empty());
}

#[test]
fn a_shard_without_an_index_is_a_usage_error() {
    let run = s3mirror(&["/tmp/a", "/tmp/b", "--shard", "4"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("JOB_COMPLETION_INDEX"),
        "{}",
        run.stderr
    );
}

/// The fenced blocks of one language in a document.
fn blocks(doc: &str, language: &str) -> Vec<String> {
    let fence = format!("```{language}\n");
    doc.split(&fence)
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap().to_owned())
        .collect()
}

/// Parses s3mirror arguments as the binary would, with `index` as the engine's shard
/// index, and returns the shard count.
fn shard_count(args: &[String], index_variable: &str) -> usize {
    use s3mirror::cli::{Cli, Command};
    let cli =
        Cli::parse_with_default(std::iter::once("s3mirror".to_owned()).chain(args.iter().cloned()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"));
    let Command::Sync(sync) = cli.command else {
        panic!("{args:?} is not a sync");
    };
    let spec = sync.common.shard.expect("a --shard option");
    let shard = s3mirror::shard::Shard::parse(&spec, |name| {
        (name == index_variable).then(|| "0".to_owned())
    })
    .unwrap_or_else(|err| panic!("{err}"));
    shard.count
}

#[test]
fn scale_out_examples_are_valid() {
    use yaml_rust2::YamlLoader;
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scale-out.md")).unwrap();

    let yaml = blocks(&doc, "yaml");
    assert_eq!(yaml.len(), 1);
    let job = &YamlLoader::load_from_str(&yaml[0]).expect("valid YAML")[0];
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_i64().unwrap();
    assert_eq!(spec["parallelism"].as_i64(), Some(completions));
    let container = &spec["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        shard_count(&args, "JOB_COMPLETION_INDEX") as i64,
        completions
    );
    assert_eq!(
        spec["template"]["spec"]["restartPolicy"].as_str(),
        Some("Never")
    );

    let json = blocks(&doc, "json");
    assert_eq!(json.len(), 2);
    let definition: Value = serde_json::from_str(&json[0]).expect("valid JSON");
    let submit: Value = serde_json::from_str(&json[1]).expect("valid JSON");
    let command: Vec<String> = definition["containerProperties"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let size = submit["arrayProperties"]["size"].as_u64().unwrap() as usize;
    assert_eq!(shard_count(&command, "AWS_BATCH_JOB_ARRAY_INDEX"), size);
    assert_eq!(submit["jobDefinition"], definition["jobDefinitionName"]);
}
