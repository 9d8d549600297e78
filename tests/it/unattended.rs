//! What unattended runs rely on: `--json` events that parse, `--failed-keys` feeding a
//! rerun with `--files-from`, and `--log-file`.

use serde_json::Value;

use crate::garage::garage;
use crate::{s3mirror, Run};

/// Every stdout line, parsed; the test fails on a line that is not a JSON object.
fn events(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("{err}: not JSON: {line:?}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

fn of<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

#[tokio::test]
async fn json_events_failed_keys_files_from_and_log_file() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("unattended").await;
    for (key, body) in [
        ("p/ok1", "one"),
        ("p/ok2", "two!"),
        ("p/a", "file a"),
        ("p/a/b", "below a"),
    ] {
        crate::put_object(&client, &bucket, key, body.as_bytes()).await;
    }
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("dest");
    let (failed, log) = (work.path().join("failed.txt"), work.path().join("run.log"));
    let url = format!("s3://{bucket}/p");
    let args = [
        url.as_str(),
        dest.to_str().unwrap(),
        "--json",
        "--failed-keys",
        failed.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ];
    let run = s3mirror(&args);
    run.assert_code(1);
    assert!(
        run.stderr.is_empty(),
        "stderr went to the log: {}",
        run.stderr
    );

    // One event per object acted on, then the summary.
    let all = events(&run);
    let copies = of(&all, "copy");
    assert_eq!(copies.len(), 3, "{}", run.stdout);
    for copy in &copies {
        assert!(copy["key"].is_string() && copy["bytes"].as_u64().unwrap() > 0);
        assert!(copy["duration_ms"].is_u64() && copy["reason"] == "new");
    }
    let errors = of(&all, "error");
    assert_eq!(errors.len(), 1, "{}", run.stdout);
    let failed_key = errors[0]["key"].as_str().unwrap().to_owned();
    assert!(failed_key == "a" || failed_key == "a/b", "{failed_key}");
    assert!(errors[0]["error"].as_str().unwrap().contains("in the way"));
    let summary = all.last().unwrap();
    assert_eq!(summary["action"], "summary");
    assert_eq!(summary["result"], "failed");
    assert_eq!(
        (summary["copied"].as_u64(), summary["failed"].as_u64()),
        (Some(3), Some(1))
    );
    assert!(summary["requests"]["GetObject"].as_u64().unwrap() >= 3);

    // The failed key, alone, in the list; the log has what stderr would have shown.
    assert_eq!(
        std::fs::read_to_string(&failed).unwrap(),
        format!("{failed_key}\n")
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("== ") && text.contains("s3mirror"),
        "{text}"
    );
    assert!(
        text.contains("summary:") && text.contains("in the way"),
        "{text}"
    );

    // Clear what was in the way and rerun only the failed key.
    let in_the_way = dest.join("a");
    match in_the_way.is_dir() {
        true => std::fs::remove_dir_all(&in_the_way).unwrap(),
        false => std::fs::remove_file(&in_the_way).unwrap(),
    }
    let rerun = s3mirror(&[
        url.as_str(),
        dest.to_str().unwrap(),
        "--json",
        "--files-from",
        failed.to_str().unwrap(),
    ]);
    rerun.assert_code(0);
    let all = events(&rerun);
    let copies = of(&all, "copy");
    assert_eq!(copies.len(), 1, "{}", rerun.stdout);
    assert_eq!(copies[0]["key"], failed_key.as_str());
    assert_eq!(all.last().unwrap()["result"], "ok");

    // A verify reports differences as events and lists them for a rerun.
    client
        .delete_object()
        .bucket(&bucket)
        .key("p/ok1")
        .send()
        .await
        .unwrap();
    let differences = work.path().join("differences.txt");
    let verify = s3mirror(&[
        "verify",
        dest.to_str().unwrap(),
        url.as_str(),
        "--json",
        "--failed-keys",
        differences.to_str().unwrap(),
    ]);
    verify.assert_code(1);
    let all = events(&verify);
    let missing: Vec<&str> = of(&all, "missing")
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["ok1"]);
    // The directory tree holds only one of `a` and `a/b`: the other is extra.
    let other = if failed_key == "a" { "a/b" } else { "a" };
    let extra: Vec<&str> = of(&all, "extra")
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(extra, [other]);
    assert_eq!(all.last().unwrap()["result"], "differ");
    let mut listed: Vec<String> = std::fs::read_to_string(&differences)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut want = vec!["ok1".to_owned(), other.to_owned()];
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn a_log_file_that_cannot_be_opened_is_a_usage_error() {
    let run = s3mirror(&["/tmp/a", "/tmp/b", "--log-file", "/nonexistent-dir/run.log"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("--log-file /nonexistent-dir/run.log"),
        "{}",
        run.stderr
    );
}

#[test]
fn scheduled_backup_examples_are_valid() {
    use s3mirror::cli::{Cli, Command};
    use s3mirror::config::SyncSettings;
    use yaml_rust2::YamlLoader;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/scheduled-backups.md"
    ))
    .unwrap();
    let yaml = doc
        .split("```yaml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let cron_job = &YamlLoader::load_from_str(yaml).expect("valid YAML")[0];
    assert_eq!(cron_job["kind"].as_str(), Some("CronJob"));
    assert_eq!(
        cron_job["spec"]["concurrencyPolicy"].as_str(),
        Some("Forbid")
    );
    let pod = &cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let args: Vec<String> = pod["containers"][0]["args"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let cli = Cli::parse_with_default(std::iter::once("s3mirror".to_owned()).chain(args))
        .expect("the arguments parse");
    let Command::Sync(sync) = cli.command else {
        panic!("not a sync");
    };
    let settings = SyncSettings::from_args(*sync).expect("valid settings");
    assert!(settings.verify_after && settings.output.json);

    // The daily job at the top, as a shell would pass it (with the date substituted).
    let daily = doc.split("```\n").nth(1).unwrap();
    let words: Vec<String> = daily
        .replace("\\\n", " ")
        .replace("$(date +%F)", "2026-12-01")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(words[0], "s3mirror");
    let cli = Cli::parse_with_default(words).expect("the daily job parses");
    let Command::Sync(sync) = cli.command else {
        panic!("not a sync");
    };
    let settings = SyncSettings::from_args(*sync).expect("valid settings");
    assert!(settings.backup.is_some() && settings.delete.is_some());
    assert!(settings.budget.max_duration.is_some());
}
