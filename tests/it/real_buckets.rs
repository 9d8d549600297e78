//! Buckets and trees as other tools leave them: keys no XML can carry.

use crate::garage::garage;
use crate::{bucket_contents, s3mirror, tree_contents};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_with_a_control_character_lists_copies_and_downloads() {
    let server = garage();
    let client = server.client();
    let (source, copy) = (
        server.new_bucket("ctl-src").await,
        server.new_bucket("ctl-copy").await,
    );
    let keys = [
        "plain.txt",
        "bell\u{7}.txt",
        "dir\u{1}/start\u{1}.bin",
        "tab\tand\u{1f}.txt",
    ];
    for key in keys {
        client
            .put_object()
            .bucket(&source)
            .key(key)
            .body(key.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
    let (src_url, copy_url) = (format!("s3://{source}"), format!("s3://{copy}"));
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().to_str().unwrap().to_owned();
    let want: Vec<&str> = {
        let mut keys = keys.to_vec();
        keys.sort();
        keys
    };
    tokio::task::spawn_blocking(move || {
        s3mirror(&[&src_url, &copy_url]).assert_code(0);
        s3mirror(&[&src_url, &dest]).assert_code(0);
        // Listed again, all are unchanged.
        let again = s3mirror(&[&src_url, &dest]);
        again.assert_code(0);
        assert_eq!(again.count("copied"), 0);
    })
    .await
    .unwrap();
    let copied = bucket_contents(&client, &copy, "").await;
    assert_eq!(copied.keys().map(String::as_str).collect::<Vec<_>>(), want);
    let downloaded = tree_contents(local.path());
    assert_eq!(
        downloaded.keys().map(String::as_str).collect::<Vec<_>>(),
        want
    );
    for (key, body) in &downloaded {
        assert_eq!(body, key.as_bytes());
    }
}
