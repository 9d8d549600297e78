//! --delete and the filters, against the real server and a local directory.

use crate::garage::garage;
use crate::{bucket_contents, s3mirror, tree_contents, write_tree};

fn files(names: &[&str]) -> Vec<(String, Vec<u8>)> {
    names
        .iter()
        .map(|n| (n.to_string(), n.as_bytes().to_vec()))
        .collect()
}

#[tokio::test]
async fn delete_removes_extras_and_keeps_what_filters_leave_out() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("delete").await;
    let work = tempfile::tempdir().unwrap();
    write_tree(work.path(), &files(&["a.txt", "dir/b.txt"]));
    let src = work.path().to_str().unwrap();
    let dest = format!("s3://{bucket}/m");
    s3mirror(&[src, &dest]).assert_code(0);
    for key in ["m/extra.txt", "m/dir/extra.txt", "m/keep.log"] {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(b"x".to_vec().into())
            .send()
            .await
            .unwrap();
    }

    let dry = s3mirror(&[src, &dest, "--delete", "--exclude", "*.log", "--dry-run"]);
    dry.assert_code(0);
    assert_eq!(dry.count("would delete"), 2);
    assert!(
        dry.stdout
            .contains(&format!("would delete s3://{bucket}/m/extra.txt")),
        "{}",
        dry.stdout
    );
    assert_eq!(bucket_contents(&client, &bucket, "m/").await.len(), 5);

    let run = s3mirror(&[src, &dest, "--delete", "--exclude", "*.log"]);
    run.assert_code(0);
    assert_eq!(
        (run.count("deleted"), run.requests("DeleteObjects")),
        (2, 1)
    );
    let left: Vec<String> = bucket_contents(&client, &bucket, "m/")
        .await
        .into_keys()
        .collect();
    assert_eq!(
        left,
        ["a.txt", "dir/b.txt", "keep.log"],
        "the excluded key is not deleted"
    );
}

#[tokio::test]
async fn delete_refuses_an_empty_source_and_too_many_deletions() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("delete-safety").await;
    let work = tempfile::tempdir().unwrap();
    let (full, empty) = (work.path().join("full"), work.path().join("empty"));
    write_tree(&full, &files(&["a", "b", "c"]));
    std::fs::create_dir(&empty).unwrap();
    let dest = format!("s3://{bucket}");
    s3mirror(&[full.to_str().unwrap(), &dest]).assert_code(0);

    let run = s3mirror(&[empty.to_str().unwrap(), &dest, "--delete"]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("refusing to delete all 3 destination objects"),
        "{}",
        run.stderr
    );
    assert_eq!(bucket_contents(&client, &bucket, "").await.len(), 3);

    std::fs::remove_file(full.join("a")).unwrap();
    std::fs::remove_file(full.join("b")).unwrap();
    let run = s3mirror(&[
        full.to_str().unwrap(),
        &dest,
        "--delete",
        "--max-delete",
        "1",
    ]);
    run.assert_code(1);
    assert!(
        run.stderr
            .contains("2 deletions exceed --max-delete 1; nothing was deleted"),
        "{}",
        run.stderr
    );
    assert_eq!(bucket_contents(&client, &bucket, "").await.len(), 3);

    let run = s3mirror(&[
        empty.to_str().unwrap(),
        &dest,
        "--delete",
        "--allow-empty-source",
    ]);
    run.assert_code(0);
    assert!(bucket_contents(&client, &bucket, "").await.is_empty());
}

#[tokio::test]
async fn delete_in_a_local_directory_removes_emptied_directories() {
    let server = garage();
    let bucket = server.new_bucket("delete-local").await;
    let work = tempfile::tempdir().unwrap();
    let (src, dst) = (work.path().join("src"), work.path().join("dst"));
    write_tree(&src, &files(&["keep/a"]));
    s3mirror(&[src.to_str().unwrap(), &format!("s3://{bucket}")]).assert_code(0);
    write_tree(&dst, &files(&["old/deep/x", "keep/b"]));
    let run = s3mirror(&[&format!("s3://{bucket}"), dst.to_str().unwrap(), "--delete"]);
    run.assert_code(0);
    assert_eq!(run.count("deleted"), 2);
    assert_eq!(
        tree_contents(&dst).into_keys().collect::<Vec<_>>(),
        ["keep/a"]
    );
    assert!(!dst.join("old").exists(), "emptied directories are removed");
}

#[tokio::test]
async fn filters_select_by_pattern_size_and_age() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("filters").await;
    let work = tempfile::tempdir().unwrap();
    write_tree(
        work.path(),
        &[
            ("doc.txt".into(), vec![b'x'; 100]),
            ("tmp/doc.txt".into(), vec![b'x'; 100]),
            ("img.jpg".into(), vec![b'x'; 100]),
            ("tiny.txt".into(), vec![b'x'; 1]),
        ],
    );
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(work.path().join("img.jpg"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let run = s3mirror(&[
        work.path().to_str().unwrap(),
        &format!("s3://{bucket}"),
        "--exclude",
        "*",
        "--include",
        "*.txt",
        "--exclude",
        "tmp/*",
        "--min-size",
        "10",
    ]);
    run.assert_code(0);
    let keys: Vec<String> = bucket_contents(&client, &bucket, "")
        .await
        .into_keys()
        .collect();
    assert_eq!(keys, ["doc.txt"]);
    let run = s3mirror(&[
        work.path().to_str().unwrap(),
        &format!("s3://{bucket}"),
        "--max-age",
        "7d",
    ]);
    run.assert_code(0);
    let keys: Vec<String> = bucket_contents(&client, &bucket, "")
        .await
        .into_keys()
        .collect();
    assert_eq!(
        keys,
        ["doc.txt", "tiny.txt", "tmp/doc.txt"],
        "the 30-day-old image is left out"
    );
}
