//! Buckets and trees as other tools and people leave them: keys no XML can carry, folder
//! markers, symbolic links that lead nowhere, temporary files of killed runs.

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
        crate::put_object(&client, &source, key, key.as_bytes()).await;
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

/// The `.s3mirror-tmp-*` files in a directory.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".s3mirror-tmp-")
        })
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_or_killed_download_leaves_no_temporary_file_behind() {
    let server = garage();
    let bucket = server.new_bucket("tmp-left").await;
    let work = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 239) as u8).collect();
    crate::write_tree(&work.path().join("src"), &[("big.bin".into(), big.clone())]);
    let url = format!("s3://{bucket}");
    let src = work.path().join("src");
    tokio::task::spawn_blocking(move || {
        s3mirror(&[src.to_str().unwrap(), &url]).assert_code(0);
        // Whole, and by ranges.
        let by_ranges = ["--multipart-threshold", "5MiB", "--part-size", "5MiB"];
        for (name, options) in [("whole", &[][..]), ("ranges", &by_ranges[..])] {
            let dest = work.path().join(name);
            for signal in [libc::SIGINT, libc::SIGKILL] {
                let mut args = vec![&url[..], dest.to_str().unwrap(), "--max-bandwidth", "1MiB"];
                args.extend(options);
                let mut child = crate::s3mirror_command(&args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                while dest.read_dir().map_or(true, |d| d.count() == 0) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{name}: the download did not start"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                assert_eq!(
                    temp_files(&dest).len(),
                    1,
                    "{name}: a download is under way"
                );
                unsafe { libc::kill(child.id() as i32, signal) };
                let status = child.wait().unwrap();
                if signal == libc::SIGINT {
                    assert_eq!(status.code(), Some(130), "{name}");
                    assert!(temp_files(&dest).is_empty(), "{name}: Ctrl-C removes it");
                } else {
                    assert_eq!(temp_files(&dest).len(), 1, "{name}: kill -9 leaves it");
                }
            }
            // The next run removes what the killed one left, and finishes the copy.
            let mut args = vec![&url[..], dest.to_str().unwrap()];
            args.extend(options);
            s3mirror(&args).assert_code(0);
            assert!(temp_files(&dest).is_empty(), "{name}");
            assert_eq!(std::fs::read(dest.join("big.bin")).unwrap(), big, "{name}");
        }
    })
    .await
    .unwrap();
}

/// A tree as real ones are: a dangling link, links that loop, a link to a file and a
/// link to a directory outside the tree.
fn tree_with_links(root: &std::path::Path, outside: &std::path::Path) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::write(root.join("docs/real.txt"), b"real").unwrap();
    std::fs::create_dir_all(outside).unwrap();
    std::fs::write(outside.join("shared.txt"), b"shared").unwrap();
    symlink("/nonexistent/target", root.join("docs/dangling")).unwrap();
    symlink("itself", root.join("docs/itself")).unwrap();
    symlink(".", root.join("docs/loop")).unwrap();
    symlink("real.txt", root.join("docs/to-file")).unwrap();
    symlink(outside, root.join("docs/to-dir")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_lead_nowhere_are_skipped_with_a_warning_not_failed() {
    let server = garage();
    let client = server.client();
    let (followed, unfollowed) = (
        server.new_bucket("links-follow").await,
        server.new_bucket("links-nofollow").await,
    );
    let work = tempfile::tempdir().unwrap();
    let (src, outside) = (work.path().join("src"), work.path().join("outside"));
    tree_with_links(&src, &outside);
    let src_path = src.to_str().unwrap().to_owned();
    let (a, b) = (format!("s3://{followed}"), format!("s3://{unfollowed}"));
    let runs = tokio::task::spawn_blocking(move || {
        let follow = s3mirror(&[&src_path, &a, "--json"]);
        let no_follow = s3mirror(&[&src_path, &b, "--no-follow-symlinks"]);
        let again = s3mirror(&[&src_path, &a]);
        (follow, no_follow, again)
    })
    .await
    .unwrap();
    let (follow, no_follow, again) = runs;
    follow.assert_code(0);
    for name in ["docs/dangling", "docs/itself", "docs/loop/"] {
        assert!(
            follow.stderr.contains(&format!("warning: {name}:")),
            "{name}: {}",
            follow.stderr
        );
        assert!(
            follow
                .stdout
                .contains(&format!("\"action\":\"skipped\",\"key\":\"{name}\"")),
            "{}",
            follow.stdout
        );
    }
    assert!(follow.stdout.contains("\"skipped\":3"), "{}", follow.stdout);
    let stored = bucket_contents(&client, &followed, "").await;
    assert_eq!(
        stored.keys().map(String::as_str).collect::<Vec<_>>(),
        ["docs/real.txt", "docs/to-dir/shared.txt", "docs/to-file"]
    );
    assert_eq!(stored["docs/to-file"], b"real");
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0);
    assert_eq!(again.count("skipped"), 3);

    no_follow.assert_code(0);
    assert_eq!(no_follow.count("skipped"), 5);
    let stored = bucket_contents(&client, &unfollowed, "").await;
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["docs/real.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_kept_as_rclonelink_objects_round_trip_and_delete() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("links-kept").await;
    let work = tempfile::tempdir().unwrap();
    let (src, outside) = (work.path().join("src"), work.path().join("outside"));
    tree_with_links(&src, &outside);
    let (back, plain) = (work.path().join("back"), work.path().join("plain"));
    let paths = [&src, &back, &plain].map(|p| p.to_str().unwrap().to_owned());
    let url = format!("s3://{bucket}");
    let (up, up_again, down, down_again, verify, as_files) = tokio::task::spawn_blocking({
        let (paths, url) = (paths.clone(), url.clone());
        move || {
            (
                s3mirror(&[&paths[0], &url, "--links"]),
                s3mirror(&[&paths[0], &url, "-l"]),
                s3mirror(&[&url, &paths[1], "--links"]),
                s3mirror(&[&url, &paths[1], "--links"]),
                s3mirror(&["verify", &paths[0], &paths[1], "--links"]),
                s3mirror(&[&url, &paths[2]]),
            )
        }
    })
    .await
    .unwrap();
    for run in [&up, &up_again, &down, &down_again, &verify, &as_files] {
        run.assert_code(0);
    }
    assert_eq!(up.count("copied"), 6);
    assert_eq!(up_again.count("copied"), 0, "{}", up_again.stderr);
    assert_eq!(down_again.count("copied"), 0, "{}", down_again.stderr);
    let stored = bucket_contents(&client, &bucket, "").await;
    let outside_target = outside.to_str().unwrap().as_bytes().to_vec();
    let want: Vec<(&str, &[u8])> = vec![
        ("docs/dangling.rclonelink", b"/nonexistent/target"),
        ("docs/itself.rclonelink", b"itself"),
        ("docs/loop.rclonelink", b"."),
        ("docs/real.txt", b"real"),
        ("docs/to-dir.rclonelink", &outside_target),
        ("docs/to-file.rclonelink", b"real.txt"),
    ];
    let got: Vec<(&str, &[u8])> = stored
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(got, want, "links are stored, never followed");
    for (name, target) in [
        ("dangling", "/nonexistent/target"),
        ("itself", "itself"),
        ("loop", "."),
        ("to-file", "real.txt"),
        ("to-dir", outside.to_str().unwrap()),
    ] {
        let link = back.join("docs").join(name);
        assert_eq!(
            std::fs::read_link(&link).unwrap().to_str().unwrap(),
            target,
            "{name}"
        );
    }
    assert_eq!(std::fs::read(back.join("docs/real.txt")).unwrap(), b"real");
    // Without --links, the objects are what rclone gives too: files holding the target.
    assert_eq!(
        std::fs::read(plain.join("docs/to-file.rclonelink")).unwrap(),
        b"real.txt"
    );

    // A link gone from the bucket is removed by --delete, the link only.
    client
        .delete_object()
        .bucket(&bucket)
        .key("docs/to-dir.rclonelink")
        .send()
        .await
        .unwrap();
    let pruned =
        tokio::task::spawn_blocking(move || s3mirror(&[&url, &paths[1], "--links", "--delete"]))
            .await
            .unwrap();
    pruned.assert_code(0);
    assert_eq!(pruned.count("deleted"), 1, "{}", pruned.stderr);
    assert!(std::fs::symlink_metadata(back.join("docs/to-dir")).is_err());
    assert_eq!(
        std::fs::read(outside.join("shared.txt")).unwrap(),
        b"shared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_directory_in_the_destination_is_never_written_through() {
    let server = garage();
    let client = server.client();
    let bucket = server.new_bucket("links-dest").await;
    for key in ["sub/x.txt", "top.txt"] {
        crate::put_object(&client, &bucket, key, b"from the bucket").await;
    }
    let work = tempfile::tempdir().unwrap();
    let (dest, outside) = (work.path().join("dest"), work.path().join("outside"));
    std::fs::create_dir_all(&dest).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
    let (url, dest_path) = (format!("s3://{bucket}"), dest.to_str().unwrap().to_owned());
    let run = tokio::task::spawn_blocking(move || s3mirror(&[&url, &dest_path]))
        .await
        .unwrap();
    run.assert_code(1);
    assert!(run.stderr.contains("is a symbolic link"), "{}", run.stderr);
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing written outside"
    );
    assert_eq!(
        std::fs::read(dest.join("top.txt")).unwrap(),
        b"from the bucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_markers_are_directories_in_sync_verify_and_delete() {
    let server = garage();
    let client = server.client();
    let (bucket, copy) = (
        server.new_bucket("markers").await,
        server.new_bucket("markers-copy").await,
    );
    // As the S3 console leaves them: one for the prefix mirrored, one for a directory
    // with files, one for an empty directory.
    for (key, body) in [
        ("folder/", ""),
        ("folder/sub/", ""),
        ("folder/sub/file.txt", "in sub"),
        ("folder/empty/", ""),
    ] {
        crate::put_object(&client, &bucket, key, body.as_bytes()).await;
    }
    let work = tempfile::tempdir().unwrap();
    let local = work.path().join("local");
    let local_path = local.to_str().unwrap().to_owned();
    let (src, dst) = (format!("s3://{bucket}/folder"), format!("s3://{copy}/copy"));
    let runs = tokio::task::spawn_blocking(move || {
        let down = s3mirror(&[&src, &local_path]);
        let again = s3mirror(&[&src, &local_path]);
        let verify = s3mirror(&["verify", &local_path, &src]);
        let back = s3mirror(&[&local_path, &src, "--delete"]);
        let up = s3mirror(&[&local_path, &dst]);
        let up_again = s3mirror(&[&local_path, &dst]);
        [down, again, verify, back, up, up_again]
    })
    .await
    .unwrap();
    let [down, again, verify, back, up, up_again] = runs;
    down.assert_code(0);
    assert!(local.join("empty").is_dir(), "the empty directory is made");
    assert_eq!(
        std::fs::read(local.join("sub/file.txt")).unwrap(),
        b"in sub"
    );
    again.assert_code(0);
    assert_eq!(again.count("copied"), 0, "{}", again.stderr);
    verify.assert_code(0);
    assert!(!verify.stdout.contains("extra"), "{}", verify.stdout);
    back.assert_code(0);
    assert_eq!(back.count("copied"), 0, "{}", back.stderr);
    assert!(
        !back.stderr.contains("deleted"),
        "no marker is deleted: {}",
        back.stderr
    );
    let kept = bucket_contents(&client, &bucket, "").await;
    assert_eq!(kept.len(), 4, "{:?}", kept.keys());
    // An empty directory goes up as its marker, and round-trips.
    up.assert_code(0);
    let copied = bucket_contents(&client, &copy, "").await;
    assert_eq!(
        copied.keys().map(String::as_str).collect::<Vec<_>>(),
        ["copy/empty/", "copy/sub/file.txt"]
    );
    up_again.assert_code(0);
    assert_eq!(up_again.count("copied"), 0);
}
