//! Bad input and unreachable resources: a clear message and a documented exit code.

use crate::garage::garage;
use crate::{s3mirror, s3mirror_with};

#[tokio::test]
async fn a_missing_bucket_is_fatal_and_named() {
    garage();
    let work = tempfile::tempdir().unwrap();
    let run = s3mirror(&[work.path().to_str().unwrap(), "s3://no-such-bucket-here/x"]);
    run.assert_code(3);
    assert!(
        run.stderr
            .contains("ListObjectsV2 s3://no-such-bucket-here/x/"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("NoSuchBucket"), "{}", run.stderr);
    assert!(
        run.stderr.contains("check the bucket name"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bad_credentials_are_fatal_and_not_printed() {
    let server = garage();
    let bucket = server.new_bucket("creds").await;
    let secret = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    let run = s3mirror_with(
        &[&format!("s3://{bucket}"), "/tmp/never-written"],
        &[
            ("AWS_ACCESS_KEY_ID", "GKffffffffffffffffffffffff"),
            ("AWS_SECRET_ACCESS_KEY", secret),
        ],
    );
    run.assert_code(3);
    assert!(
        run.stderr
            .contains(&format!("ListObjectsV2 s3://{bucket}/: AccessDenied")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("check that these credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(secret) && !run.stdout.contains(secret));
}

#[test]
fn usage_errors_exit_2_with_the_reason() {
    let cases: [(&[&str], &str); 5] = [
        (&["s3:/bucket", "/tmp/x"], "did you mean s3://"),
        (&["s3://", "/tmp/x"], "needs a bucket name"),
        (
            &["/tmp/a", "/tmp/b", "--threads", "0"],
            "--threads must be between",
        ),
        (&["/tmp/a"], "required"),
        (
            &["/tmp/a", "/tmp/b", "--compare", "crc"],
            "invalid value 'crc'",
        ),
    ];
    for (args, want) in cases {
        let run = s3mirror(args);
        run.assert_code(2);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn local_sides_that_cannot_work_are_fatal() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let missing = work.path().join("missing");
    let run = s3mirror(&[
        missing.to_str().unwrap(),
        work.path().join("out").to_str().unwrap(),
    ]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("No such file or directory"),
        "{}",
        run.stderr
    );
    let run = s3mirror(&[
        work.path().join("out").to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(run.code != 0);
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let run = s3mirror(&[src.to_str().unwrap(), file.to_str().unwrap()]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("exists and is not a directory"),
        "{}",
        run.stderr
    );
}
