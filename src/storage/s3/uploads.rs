//! The registry of multipart uploads in progress: every upload s3mirror starts is in it
//! (and in the journal, when there is one) from CreateMultipartUpload until it is
//! completed or aborted, so that a failure, an interruption or a later run after a kill
//! aborts it rather than leave it behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use aws_sdk_s3::Client;

use super::describe_sdk_error;
use super::journal::{Journal, Recorded};

/// A multipart upload in progress: the client that may abort it, and its record.
pub(super) struct ActiveUpload {
    pub(super) client: Client,
    pub(super) recorded: Recorded,
}

/// Every multipart upload started and not yet completed or aborted.
#[derive(Default)]
pub struct ActiveUploads {
    /// Where uploads are recorded until they end, for runs after a crash.
    journal: Option<Journal>,
    next: AtomicU64,
    uploads: Mutex<HashMap<u64, ActiveUpload>>,
    /// Set by `abort_all`: no upload is started after it.
    closed: AtomicBool,
    /// CreateMultipartUpload requests in flight, not yet registered.
    creating: AtomicUsize,
}

/// A CreateMultipartUpload in flight; `abort_all` waits for it to be registered.
pub(super) struct Creating<'a>(&'a AtomicUsize);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An upload in the registry, aborted by `abort_all` until it completes.
pub(super) struct Registered {
    pub(super) id: u64,
    pub(super) upload_id: String,
}

impl ActiveUploads {
    pub fn with_journal(journal: Journal) -> Self {
        Self {
            journal: Some(journal),
            ..Self::default()
        }
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    pub(super) fn begin_create(&self) -> Option<Creating<'_>> {
        self.creating.fetch_add(1, Ordering::SeqCst);
        let creating = Creating(&self.creating);
        (!self.closed.load(Ordering::SeqCst)).then_some(creating)
    }

    pub(super) fn register(&self, upload: ActiveUpload) -> u64 {
        if let Some(journal) = &self.journal {
            if let Err(err) = journal.started(&upload.recorded) {
                journal_failed(journal, &err);
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.uploads
            .lock()
            .expect("uploads lock")
            .insert(id, upload);
        id
    }

    /// Takes an upload out of the registry.
    pub(super) fn take(&self, id: u64) -> Option<ActiveUpload> {
        self.uploads.lock().expect("uploads lock").remove(&id)
    }

    /// Takes the upload with this id out of the registry and records that it ended, for
    /// callers that hold the upload id rather than the registry's number.
    pub(super) fn ended_by_id(&self, upload_id: &str) {
        self.uploads
            .lock()
            .expect("uploads lock")
            .retain(|_, u| u.recorded.upload_id != upload_id);
        self.ended(upload_id);
    }

    /// Records that an upload ended: completed, or aborted.
    pub(super) fn ended(&self, upload_id: &str) {
        if let Some(journal) = &self.journal {
            if let Err(err) = journal.finished(upload_id) {
                journal_failed(journal, &err);
            }
        }
    }

    /// Aborts an upload; it is recorded as ended once the server has let it go.
    pub(super) async fn abort(&self, upload: &ActiveUpload) {
        if abort(&upload.client, &upload.recorded).await {
            self.ended(&upload.recorded.upload_id);
        }
    }

    /// Stops new uploads, waits (up to 30 s) for those being created to be registered,
    /// and aborts every registered upload; returns how many were aborted.
    pub async fn abort_all(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.creating.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let uploads: Vec<ActiveUpload> = self
            .uploads
            .lock()
            .expect("uploads lock")
            .drain()
            .map(|(_, u)| u)
            .collect();
        let count = uploads.len();
        futures::future::join_all(uploads.iter().map(|u| self.abort(u))).await;
        count
    }
}

/// Warns once that uploads cannot be recorded; the run goes on without the record.
fn journal_failed(journal: &Journal, err: &std::io::Error) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot record multipart uploads in {}: {err}; if this run is killed, a later \
             run cannot abort its incomplete uploads (set --state-dir)",
            journal.dir().display()
        );
    }
}

/// AbortMultipartUpload; true once the upload is gone (aborted now or before).
pub(super) async fn abort(client: &Client, upload: &Recorded) -> bool {
    let result = client
        .abort_multipart_upload()
        .bucket(&upload.bucket)
        .key(&upload.key)
        .upload_id(&upload.upload_id)
        .send()
        .await;
    match result {
        Ok(_) => true,
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_no_such_upload()) =>
        {
            true
        }
        Err(err) => {
            tracing::warn!(
                "AbortMultipartUpload s3://{}/{}: {}; list incomplete uploads to remove it",
                upload.bucket,
                upload.key,
                describe_sdk_error(&err)
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn abort_all_waits_for_uploads_being_created_and_refuses_new_ones() {
        let uploads = Arc::new(ActiveUploads::default());
        let creating = uploads.begin_create().expect("open before abort_all");
        let aborting = tokio::spawn({
            let uploads = Arc::clone(&uploads);
            async move { uploads.abort_all().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !aborting.is_finished(),
            "abort_all must wait for the creation"
        );
        assert!(
            uploads.begin_create().is_none(),
            "no upload starts once closed"
        );
        drop(creating);
        assert_eq!(aborting.await.unwrap(), 0);
    }
}
