//! Scale-out: shard processes that run at once each handle a disjoint range of keys, and
//! together exactly the whole mirror.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::garage::{garage, ACCESS_KEY, REGION, SECRET_KEY};
use crate::slurm::{self, Cluster};
use crate::{bucket_contents, s3mirror, s3mirror_with, state_dir, write_tree, Run};

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

/// The sbatch script of docs/scale-out.md, and the array size and shard count it says.
fn documented_sbatch_script() -> (String, usize, usize) {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scale-out.md")).unwrap();
    let scripts = blocks(&doc, "bash");
    assert_eq!(scripts.len(), 1, "one sbatch script");
    let script = scripts[0].clone();
    let array = script
        .lines()
        .find_map(|line| line.strip_prefix("#SBATCH --array=0-"))
        .expect("an #SBATCH --array=0-N line");
    let tasks = array.trim().parse::<usize>().unwrap() + 1;
    let command = script
        .lines()
        .find(|line| line.starts_with("s3mirror "))
        .expect("an s3mirror command");
    let args: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    (script, tasks, shard_count(&args, "SLURM_ARRAY_TASK_ID"))
}

#[test]
fn the_documented_sbatch_script_shards_as_its_array() {
    let (_, tasks, shards) = documented_sbatch_script();
    assert_eq!(tasks, shards, "--array=0-N-1 for --shard N");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_slurm_array_mirrors_every_key_once() {
    if !slurm::available() {
        return;
    }
    let server = garage();
    let client = server.client();
    let (source_bucket, dest_bucket) = (
        server.new_bucket("slurm-src").await,
        server.new_bucket("slurm-dst").await,
    );
    let work = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..400u32)
        .map(|i| {
            (
                format!("d{:02}/f{:03}", i / 20, i % 20),
                i.to_string().into_bytes(),
            )
        })
        .collect();
    let tree = work.path().join("tree");
    write_tree(&tree, &files);
    s3mirror(&[tree.to_str().unwrap(), &format!("s3://{source_bucket}")]).assert_code(0);

    // The script as documented, pointed at the test's buckets.
    let (script, tasks, _) = documented_sbatch_script();
    let script = script
        .replace("s3://prod-data", &format!("s3://{source_bucket}"))
        .replace("s3://backup-data", &format!("s3://{dest_bucket}"));
    let script_path = work.path().join("s3mirror-shards.sbatch");
    std::fs::write(&script_path, script).unwrap();

    let cluster = Cluster::start();
    // The tasks inherit this environment: s3mirror on PATH, the server's credentials.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_s3mirror")).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut sbatch = cluster
        .command("sbatch")
        .arg("--wait")
        .arg(&script_path)
        .current_dir(work.path())
        .env("PATH", path)
        .env("HOME", "/nonexistent")
        .env("S3MIRROR_STATE_DIR", state_dir())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sbatch");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = sbatch.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = sbatch.kill();
            let queue = cluster.command("squeue").output().unwrap();
            panic!(
                "the array did not finish in time\n{}\n{}",
                String::from_utf8_lossy(&queue.stdout),
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = sbatch.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let job: u64 = said
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {said:?}"));

    let mut union = BTreeSet::new();
    for task in 0..tasks {
        let read = |ext: &str| {
            std::fs::read_to_string(work.path().join(format!("s3mirror-{job}_{task}.{ext}")))
                .unwrap_or_else(|err| {
                    panic!("task {task} .{ext}: {err}\n{said}\n{}", cluster.logs())
                })
        };
        let (stdout, stderr) = (read("out"), read("err"));
        assert!(
            stderr.contains(&format!("shard {task}/{tasks}: keys from")),
            "task {task}:\n{stderr}"
        );
        let run = Run {
            code: 0,
            stdout,
            stderr,
        };
        assert_eq!(
            summary(&run)["result"],
            "ok",
            "task {task}:\n{}",
            run.stderr
        );
        for key in copied_keys(&run) {
            assert!(union.insert(key.clone()), "{key} copied by two tasks");
        }
    }
    assert!(status.success(), "sbatch --wait: {status}\n{said}");
    drop(cluster);
    let all: BTreeSet<String> = files.iter().map(|(key, _)| key.clone()).collect();
    assert_eq!(
        union, all,
        "the tasks together copied every key exactly once"
    );
    assert_eq!(
        bucket_contents(&client, &dest_bucket, "").await,
        bucket_contents(&client, &source_bucket, "").await
    );
}
