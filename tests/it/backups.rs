//! Daily backups: `--backup-dir` keeps what a sync overwrites or deletes, server-side
//! between buckets and by hard link in a local tree; a failed move leaves the object alone.

use crate::garage::garage;
use crate::{bucket_contents, put_object, s3mirror, tree_contents, write_tree};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_dir_keeps_the_old_bytes_of_overwritten_and_deleted_objects() {
    let server = garage();
    let client = server.client();
    let (prod, backup) = (
        server.new_bucket("prod").await,
        server.new_bucket("backup").await,
    );
    for (key, body) in [
        ("a.txt", "v1"),
        ("b.txt", "keep"),
        ("dir/c.txt", "gone soon"),
    ] {
        put_object(&client, &prod, key, body.as_bytes()).await;
    }
    let src = format!("s3://{prod}");
    let current = format!("s3://{backup}/current");
    let first = tokio::task::spawn_blocking({
        let (src, current, day) = (
            src.clone(),
            current.clone(),
            format!("s3://{backup}/changed/day1"),
        );
        move || s3mirror(&[&src, &current, "--delete", "--backup-dir", &day])
    })
    .await
    .unwrap();
    first.assert_code(0);
    assert!(
        !first.stderr.contains("backed up"),
        "nothing to keep yet: {}",
        first.stderr
    );

    put_object(&client, &prod, "a.txt", b"v2, a bad night").await;
    client
        .delete_object()
        .bucket(&prod)
        .key("dir/c.txt")
        .send()
        .await
        .unwrap();
    let (second, overlap) = tokio::task::spawn_blocking({
        let (src, current) = (src.clone(), current.clone());
        let day = format!("s3://{backup}/changed/day2");
        let inside = format!("s3://{backup}/current/old");
        move || {
            (
                s3mirror(&[
                    &src,
                    &current,
                    "--delete",
                    "--backup-dir",
                    &day,
                    "--suffix",
                    "-day2",
                    "--json",
                ]),
                s3mirror(&[&src, &current, "--backup-dir", &inside]),
            )
        }
    })
    .await
    .unwrap();
    second.assert_code(0);
    assert!(
        second.stdout.contains("\"backed_up\":2"),
        "{}",
        second.stdout
    );
    assert_eq!(
        second.stdout.matches("\"action\":\"backup\"").count(),
        2,
        "{}",
        second.stdout
    );
    let kept = bucket_contents(&client, &backup, "").await;
    let got: Vec<(&str, &[u8])> = kept
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("changed/day2/a.txt-day2", b"v1".as_slice()),
            ("changed/day2/dir/c.txt-day2", b"gone soon".as_slice()),
            ("current/a.txt", b"v2, a bad night".as_slice()),
            ("current/b.txt", b"keep".as_slice()),
        ]
    );
    assert!(
        second.requests("CopyObject") >= 2,
        "moved server-side: {}",
        second.stderr
    );
    assert_eq!(second.requests("GetObject"), 0, "{}", second.stderr);

    overlap.assert_code(2);
    assert!(
        overlap.stderr.contains("overlaps the destination"),
        "{}",
        overlap.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_move_leaves_the_object_neither_overwritten_nor_deleted() {
    let server = garage();
    let client = server.client();
    let (prod, backup) = (
        server.new_bucket("prod-f").await,
        server.new_bucket("backup-f").await,
    );
    for (bucket, key, body) in [
        (&prod, "a.txt", "new"),
        (&backup, "current/a.txt", "old"),
        (&backup, "current/extra.txt", "only here"),
    ] {
        put_object(&client, bucket, key, body.as_bytes()).await;
    }
    let (src, current) = (format!("s3://{prod}"), format!("s3://{backup}/current"));
    let run = tokio::task::spawn_blocking(move || {
        s3mirror(&[
            &src,
            &current,
            "--delete",
            "--backup-dir",
            "s3://no-such-bucket-here/x",
        ])
    })
    .await
    .unwrap();
    run.assert_code(1);
    assert_eq!(run.count("failed"), 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("neither overwritten nor deleted"),
        "{}",
        run.stderr
    );
    let left = bucket_contents(&client, &backup, "current/").await;
    assert_eq!(left["a.txt"], b"old");
    assert_eq!(left["extra.txt"], b"only here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_backup_dir_receives_overwritten_and_deleted_files() {
    let work = tempfile::tempdir().unwrap();
    let (src, dest, kept) = (
        work.path().join("src"),
        work.path().join("dest"),
        work.path().join("kept"),
    );
    write_tree(&src, &[("a.txt".into(), b"new".to_vec())]);
    write_tree(
        &dest,
        &[
            ("a.txt".into(), b"old".to_vec()),
            ("sub/extra.txt".into(), b"extra".to_vec()),
        ],
    );
    // The destination's copy is older, so it is overwritten.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(dest.join("a.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let paths = [&src, &dest, &kept].map(|p| p.to_str().unwrap().to_owned());
    let run = tokio::task::spawn_blocking(move || {
        s3mirror(&[
            &paths[0],
            &paths[1],
            "--delete",
            "--backup-dir",
            &paths[2],
            "--suffix",
            ".1",
        ])
    })
    .await
    .unwrap();
    run.assert_code(0);
    assert_eq!(run.count("backed up"), 2, "{}", run.stderr);
    let got = tree_contents(&kept);
    assert_eq!(got["a.txt.1"], b"old");
    assert_eq!(got["sub/extra.txt.1"], b"extra");
    assert_eq!(tree_contents(&dest)["a.txt"], b"new");
    assert!(!dest.join("sub/extra.txt").exists());
}

/// Runs s3mirror with per-side profiles from `credentials` and no credentials in the
/// environment.
fn run_with_profiles(credentials: &std::path::Path, args: &[&str]) -> crate::Run {
    let mut command = crate::s3mirror_command(args);
    command
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", credentials)
        .env("AWS_CONFIG_FILE", credentials.with_file_name("config"));
    crate::Run::from(command.output().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_copy_always_reads_the_source_with_the_destinations_credentials() {
    const READER: (&str, &str) = (
        "GK00000000000000000000a11c",
        "a11ce00000000000000000000000000000000000000000000000000000000000",
    );
    const WRITER: (&str, &str) = (
        "GK00000000000000000000b0b0",
        "b0b0000000000000000000000000000000000000000000000000000000000000",
    );
    let server = garage();
    let client = server.client();
    let (prod, copy, refused) = (
        server.new_shared_bucket("xacct-src"),
        server.new_shared_bucket("xacct-dst"),
        server.new_shared_bucket("xacct-refused"),
    );
    put_object(&client, &prod, "small.txt", b"small").await;
    put_object(&client, &prod, "big.bin", &vec![3u8; 12 << 20]).await;
    // The backup account may read the source and write its own bucket; another may
    // only write.
    server.import_key(READER.0, READER.1);
    server.import_key(WRITER.0, WRITER.1);
    server.allow(&prod, READER.0, true, false);
    server.allow(&copy, READER.0, true, true);
    server.allow(&refused, WRITER.0, true, true);
    let work = tempfile::tempdir().unwrap();
    let credentials = work.path().join("credentials");
    std::fs::write(work.path().join("config"), "").unwrap();
    std::fs::write(
        &credentials,
        format!(
            "[prod]\naws_access_key_id = {}\naws_secret_access_key = {}\n\
             [reader]\naws_access_key_id = {}\naws_secret_access_key = {}\n\
             [writer]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            crate::garage::ACCESS_KEY,
            crate::garage::SECRET_KEY,
            READER.0,
            READER.1,
            WRITER.0,
            WRITER.1
        ),
    )
    .unwrap();
    let (src, dst, no) = (
        format!("s3://{prod}"),
        format!("s3://{copy}"),
        format!("s3://{refused}"),
    );
    let (always, denied, streamed) = tokio::task::spawn_blocking(move || {
        let sides = |dest_profile: &'static str| {
            ["--source-profile", "prod", "--dest-profile", dest_profile]
        };
        let parts = ["--multipart-copy-threshold", "5MiB", "--part-size", "5MiB"];
        (
            run_with_profiles(
                &credentials,
                &[
                    &[src.as_str(), &dst, "--server-side-copy", "always"][..],
                    &sides("reader"),
                    &parts,
                ]
                .concat(),
            ),
            run_with_profiles(
                &credentials,
                &[
                    &[src.as_str(), &no, "--server-side-copy", "always"][..],
                    &sides("writer"),
                ]
                .concat(),
            ),
            run_with_profiles(
                &credentials,
                &[&[src.as_str(), &no][..], &sides("writer")].concat(),
            ),
        )
    })
    .await
    .unwrap();
    always.assert_code(0);
    assert_eq!(always.count("copied"), 2);
    assert_eq!(
        always.requests("GetObject"),
        0,
        "server-side: {}",
        always.stderr
    );
    assert!(always.requests("UploadPartCopy") > 0, "{}", always.stderr);
    assert_eq!(
        bucket_contents(&client, &copy, "").await["big.bin"].len(),
        12 << 20
    );

    denied.assert_code(1);
    assert!(
        denied.stderr.contains("with --server-side-copy always, the destination's credentials (profile writer) read s3://")
            && denied.stderr.contains("s3:GetObject"),
        "{}",
        denied.stderr
    );
    assert!(!denied.stderr.contains(WRITER.1), "no secret printed");

    // The default streams through this machine, since the credentials differ.
    streamed.assert_code(0);
    assert_eq!(streamed.requests("GetObject"), 2, "{}", streamed.stderr);
    assert!(
        streamed
            .stderr
            .contains("--server-side-copy always copies server-side"),
        "{}",
        streamed.stderr
    );
}
