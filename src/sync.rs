//! One sync run: open both sides, stream the listings through the planner to the
//! workers, and account for every object.

use std::path::Path;
use std::sync::Arc;

use crate::budget::{Budget, Limit};
use crate::config::{ServerSideCopy, SyncSettings};
use crate::location::Location;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::plan::{
    count_source, hand_out, DeleteQueue, Event, MergeJoin, Pairing, Planner, Reporter,
};
use crate::stats::Stats;
use tokio::sync::Semaphore;

use crate::keylist::Manifest;
use crate::shard;
use crate::storage::s3::BUFFER_BUDGET_MIB;
use crate::storage::s3::{
    build_client, requests::RequestCounts, ActiveUploads, Journal, PartSettings,
};
use crate::storage::{KeyRange, LocalStore, S3Store, Store};
use crate::transfer::AdaptiveConcurrency;
use crate::transfer::{Backup, Route, Transfer};
use crate::ui::{Console, MetricsFile};

/// Why a run stopped before it could account for every object.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Listing(#[from] crate::plan::PlanFailed),
    #[error("interrupted; {0} multipart upload(s) in progress were aborted")]
    Interrupted(usize),
}

/// What a finished run did; `failed > 0` means some objects are not in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Destination-only keys a verify found.
    pub extra: u64,
    /// The budget that stopped the run before every object was handled.
    pub stopped_by: Option<Limit>,
}

/// Runs one sync (or verify); `metrics` receives its counters while it runs and at the
/// end.
pub async fn run(
    settings: SyncSettings,
    metrics: Option<Arc<MetricsFile>>,
) -> Result<Outcome, RunError> {
    let console = Arc::new(Console::new(&settings.output, metrics).map_err(|err| {
        let path = settings
            .output
            .failed_keys
            .as_deref()
            .unwrap_or(Path::new(""));
        RunError::Setup(format!("--failed-keys {}: {err}", path.display()))
    })?);
    let requests = Arc::new(RequestCounts::default());
    let stats = Arc::new(Stats::new(Arc::clone(&requests)));
    let budget = Arc::new(Budget::new(
        settings.budget.max_duration,
        settings.budget.max_transfer,
    ));
    let result = run_pipeline(&settings, &console, &stats, &requests, &budget).await;
    let error = result.as_ref().err();
    // A run refused before it started has nothing to sum up for people.
    let started = !matches!(error, Some(RunError::Setup(_)));
    let message = error.map(ToString::to_string);
    let stopped_by = budget.stopped().filter(|_| error.is_none());
    console.finish(
        &stats,
        settings.dry_run,
        started,
        stopped_by,
        message.as_deref(),
    );
    result?;
    let snap = stats.snapshot();
    Ok(Outcome {
        copied: snap.copied,
        skipped: snap.skipped,
        failed: snap.failed,
        extra: snap.extra,
        stopped_by,
    })
}

async fn run_pipeline(
    settings: &SyncSettings,
    console: &Arc<Console>,
    stats: &Arc<Stats>,
    requests: &Arc<RequestCounts>,
    budget: &Arc<Budget>,
) -> Result<(), RunError> {
    let uploads = Arc::new(
        match (&settings.state_dir, &settings.dest, settings.dry_run) {
            (Some(dir), Location::S3(_), false) => {
                ActiveUploads::with_journal(Journal::new(dir.join("uploads")))
            }
            _ => ActiveUploads::default(),
        },
    );

    prepare_local_sides(settings)?;
    let (source, dest, route) = open_stores(settings, requests, &uploads).await;
    if let (Some(at), Store::S3(source)) = (settings.as_of, &source) {
        source.check_versioned().await.map_err(RunError::Setup)?;
        // To the second when given so, else to the millisecond.
        let whole = at
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|d| d.subsec_nanos() == 0);
        let shown = match whole {
            true => humantime::format_rfc3339_seconds(at),
            false => humantime::format_rfc3339_millis(at),
        };
        console.report(Event::Notice(&format!(
            "{} as it was at {shown}: each key's version current then (ListObjectVersions)",
            source.url()
        )));
    }
    if let Store::S3(dest) = &dest {
        abort_orphans(dest, console.as_ref()).await;
    }
    let same_endpoint = settings.source_client.endpoint_url == settings.dest_client.endpoint_url;
    match (route, settings.server_side_copy) {
        (Route::ThroughClient, ServerSideCopy::Never) => console.report(Event::Notice(
            "--server-side-copy never: objects are streamed through this machine (GetObject, \
             then PutObject)",
        )),
        (Route::ThroughClient, _) if same_endpoint => console.report(Event::Notice(
            "source and destination use different credentials: objects are streamed through \
             this machine (GetObject, then PutObject); where the destination's credentials may \
             read the source bucket, --server-side-copy always copies server-side",
        )),
        (Route::ThroughClient, _) => console.report(Event::Notice(
            "source and destination use different endpoints: objects are streamed through this \
             machine (GetObject, then PutObject) instead of copied server-side",
        )),
        _ => {}
    }
    let reader = (route == Route::ServerSide
        && settings.source.is_s3()
        && settings.dest.is_s3()
        && settings.source_client != settings.dest_client)
        .then(|| match &settings.dest_client.profile {
            Some(profile) => format!("the destination's credentials (profile {profile})"),
            None => "the destination's credentials (the default chain: environment, \
                     ~/.aws, SSO or instance role)"
                .to_owned(),
        });

    let pairing = Pairing::new(settings.source.is_s3(), settings.dest.is_s3());
    let range = shard_range(settings, &source, console).await?;
    let now = SystemTime::now();
    // A local tree is counted ahead of the copy so that the bar has a total early; a
    // bucket's listing is the planner's, and counting it twice would cost requests.
    let census = (console.shows_bar() && !settings.source.is_s3()).then(|| {
        count_source(
            source.list(&range),
            settings.filters.clone(),
            now,
            Arc::clone(stats),
        )
    });
    let backup = backup_store(settings, &dest);
    if let Some(Backup {
        store: Store::S3(store),
        ..
    }) = &backup
    {
        if store.url().bucket() != dest_bucket(&dest) {
            abort_orphans(store, console.as_ref()).await;
        }
    }
    let join = MergeJoin::new(source.list(&range), dest.list(&range));
    let budget = Arc::clone(budget);
    let transfer = Arc::new(Transfer {
        source,
        dest,
        route,
        sizes: settings.transfer,
        parts: PartSettings {
            part_size: settings.transfer.part_size,
            concurrency: settings.transfer.part_concurrency,
            permits: Arc::new(Semaphore::new(settings.threads)),
            buffers: Arc::new(Semaphore::new(BUFFER_BUDGET_MIB)),
        },
        dry_run: settings.dry_run,
        concurrency: AdaptiveConcurrency::new(settings.threads),
        stats: Arc::clone(stats),
        reporter: console.clone(),
        manifest: match &settings.manifest_out {
            Some(path) => Some(Manifest::create(path).map_err(|err| {
                RunError::Setup(format!("--manifest-out {}: {err}", path.display()))
            })?),
            None => None,
        },
        backup,
        budget: Arc::clone(&budget),
        source_reader: reader,
    });

    let progress = console.start_progress(Arc::clone(stats));
    // The planner's jobs go to the backlog, which hands large objects to the free
    // workers first. Both channels are bounded: the planner waits whenever the backlog is full,
    // and a job in the workers' channel is one the backlog can no longer rank.
    let (decided_tx, decided_rx) = async_channel::bounded(settings.threads);
    let (jobs_tx, jobs_rx) = async_channel::bounded(1);
    // A dry run or a verify reports in key order, and copies nothing to start early.
    let backlog = match settings.dry_run || settings.output.verify {
        true => 0,
        false => settings.backlog,
    };
    // A file waiting to be made durable and renamed holds a worker but no transfer slot:
    // as many workers again let the transfers go on meanwhile.
    let workers = match (&transfer.dest, settings.dry_run) {
        (Store::Local(_), false) => settings.threads * 2,
        _ => settings.threads,
    };
    let mut workers = transfer.spawn_workers(jobs_rx, workers);
    let planner = Planner {
        mode: settings.compare,
        pairing,
        filters: &settings.filters,
        now,
        stats,
        reporter: console.as_ref(),
        report_extras: settings.output.verify,
        budget: &budget,
    };
    let deletes = match settings.delete {
        Some(_) => Some(DeleteQueue::new().map_err(|err| {
            RunError::Setup(format!(
                "cannot create a temporary file for --delete: {err}"
            ))
        })?),
        None => None,
    };
    let pipeline = async {
        let (planned, ()) = tokio::join!(
            planner.run(join, decided_tx, deletes),
            hand_out(
                decided_rx,
                jobs_tx,
                backlog,
                settings.transfer.multipart_threshold
            )
        );
        while workers.join_next().await.is_some() {}
        let planned = planned?;
        if let Some(delete) = settings.delete {
            transfer.delete_extras(planned, delete).await;
        }
        Ok::<(), crate::plan::PlanFailed>(())
    };
    let hard_deadline = settings
        .budget
        .hard_cutoff
        .then(|| budget.deadline())
        .flatten();
    let planned = tokio::select! {
        planned = pipeline => planned,
        () = deadline(hard_deadline) => {
            // `--cutoff hard`: what is in flight is abandoned as at an interrupt.
            budget.cut_off();
            let aborted = abandon_in_flight(&uploads).await;
            finish_side_tasks(&uploads, progress, census.as_ref());
            if aborted > 0 {
                console.report(Event::Notice(&format!(
                    "--max-duration reached: {aborted} multipart upload(s) in flight were aborted"
                )));
            }
            return Ok(());
        }
        () = shutdown_signal() => {
            // A second signal ends the process at once, whatever is still being aborted.
            tokio::spawn(async {
                shutdown_signal().await;
                crate::storage::local::remove_temps_in_flight();
                std::process::exit(crate::exit::INTERRUPTED);
            });
            let aborted = abandon_in_flight(&uploads).await;
            finish_side_tasks(&uploads, progress, census.as_ref());
            return Err(RunError::Interrupted(aborted));
        }
    };
    finish_side_tasks(&uploads, progress, census.as_ref());
    if let (Some(manifest), Some(path)) = (&transfer.manifest, &settings.manifest_out) {
        manifest
            .finish()
            .map_err(|err| RunError::Setup(format!("--manifest-out {}: {err}", path.display())))?;
    }
    Ok(planned?)
}

/// A local side, with the settings that concern it.
fn local_store(path: &std::path::Path, settings: &SyncSettings) -> LocalStore {
    LocalStore::new(path.to_path_buf())
        .with_links(settings.links)
        .with_fsync_each_file(settings.fsync_each_file)
}

/// The `--backup-dir` location, on the destination's side: a bucket reached with the
/// destination's client, or a directory.
fn backup_store(settings: &SyncSettings, dest: &Store) -> Option<Backup> {
    let backup = settings.backup.as_ref()?;
    let store = match (&backup.location, dest) {
        (Location::S3(url), Store::S3(dest)) => Store::S3(dest.sibling(url.clone())),
        (Location::Local(path), Store::Local(_)) => Store::Local(local_store(path, settings)),
        _ => unreachable!("the settings put the backup dir on the destination's side"),
    };
    Some(Backup {
        store,
        suffix: backup.suffix.clone(),
    })
}

fn dest_bucket(dest: &Store) -> &str {
    match dest {
        Store::S3(s3) => s3.url().bucket(),
        Store::Local(_) => "",
    }
}

/// The keys this process handles: all of them, or its shard's range.
async fn shard_range(
    settings: &SyncSettings,
    source: &Store,
    console: &Console,
) -> Result<KeyRange, RunError> {
    let Some(sharding) = &settings.shard else {
        return Ok(KeyRange::default());
    };
    let boundaries = match &sharding.boundaries {
        Some(boundaries) => boundaries.clone(),
        None => boundaries_of(source, sharding.shard.count).await?,
    };
    let count = sharding.shard.count;
    if boundaries.len() >= count {
        return Err(RunError::Setup(format!(
            "{} shard boundaries for {count} shards, which need at most {}: the shards would \
             not cover every key; use the boundaries `plan --shards {count}` wrote",
            boundaries.len(),
            count - 1
        )));
    }
    if boundaries.len() + 1 < count {
        console.report(Event::Notice(&format!(
            "the source has too few names to split {count} ways: shards {} to {} have no keys",
            boundaries.len() + 1,
            count - 1
        )));
    }
    let range = sharding.shard.range(&boundaries);
    let show = |bound: &Option<String>| bound.as_ref().map_or("-".to_owned(), |b| format!("{b:?}"));
    console.report(Event::Notice(&format!(
        "shard {}/{}: keys from {} to {}",
        sharding.shard.index,
        sharding.shard.count,
        show(&range.start),
        show(&range.end)
    )));
    Ok(range)
}

/// The boundaries that split `source` into `count` shards (see `shard`).
pub async fn boundaries_of(source: &Store, count: usize) -> Result<Vec<String>, RunError> {
    shard::boundaries(count, |below| async move {
        source.level(&below, shard::LEVEL_LIMIT).await
    })
    .await
    .map_err(|err| RunError::Setup(format!("finding the shard boundaries: {err}")))
}

/// `plan`: the boundaries that split the source into `count` shards.
pub async fn plan(settings: SyncSettings, count: usize) -> Result<Vec<String>, RunError> {
    let requests = Arc::new(RequestCounts::default());
    let uploads = Arc::new(ActiveUploads::default());
    let (source, _, _) = open_stores(&settings, &requests, &uploads).await;
    boundaries_of(&source, count).await
}

/// Aborts what killed runs left behind in the destination bucket, and says so.
async fn abort_orphans(dest: &S3Store, console: &Console) {
    match dest.abort_orphans().await {
        Ok(0) => {}
        Ok(n) => console.report(Event::Notice(&format!(
            "aborted {n} incomplete multipart upload(s) that an interrupted earlier run left \
             in s3://{}",
            dest.url().bucket()
        ))),
        Err(err) => tracing::warn!("cannot clean up after interrupted earlier runs: {err}"),
    }
}

fn close_journal(uploads: &ActiveUploads) {
    if let Some(journal) = uploads.journal() {
        journal.close();
    }
}

/// Ends the copies in flight when the run stops before them: downloads under way never
/// reach their names (their temporary files go, before and after the aborts, since one
/// may be made meanwhile), and every multipart upload is aborted; returns how many.
async fn abandon_in_flight(uploads: &ActiveUploads) -> usize {
    crate::storage::local::remove_temps_in_flight();
    let aborted = uploads.abort_all().await;
    crate::storage::local::remove_temps_in_flight();
    aborted
}

/// Closes the record of uploads and stops the progress output and the census.
fn finish_side_tasks(
    uploads: &ActiveUploads,
    progress: crate::ui::ProgressTask,
    census: Option<&tokio::task::JoinHandle<()>>,
) {
    close_journal(uploads);
    progress.stop();
    if let Some(census) = census {
        census.abort();
    }
}

/// Resolves at `at`; never without it.
async fn deadline(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    ShutdownSignal::listen().recv().await
}

/// SIGINT and SIGTERM, caught from the moment this is made (inside a runtime): one that
/// comes before still ends the process at once.
pub(crate) struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub(crate) fn listen() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            terminate: signal(SignalKind::terminate()).expect("SIGTERM handler"),
        }
    }

    /// Waits for the first of them.
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// A local source must be a directory; a local destination must not be a file and is
/// created when missing (except in a dry run, which changes nothing).
fn prepare_local_sides(settings: &SyncSettings) -> Result<(), RunError> {
    if let Location::Local(path) = &settings.source {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(RunError::Setup(format!(
                    "source {} is not a directory",
                    path.display()
                )))
            }
            Err(err) => return Err(RunError::Setup(format!("source {}: {err}", path.display()))),
        }
    }
    if let Location::Local(path) = &settings.dest {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(RunError::Setup(format!(
                    "destination {} exists and is not a directory",
                    path.display()
                )))
            }
            Err(_) if settings.dry_run => {}
            Err(_) => std::fs::create_dir_all(path).map_err(|err| {
                RunError::Setup(format!(
                    "cannot create destination directory {}: {err}",
                    path.display()
                ))
            })?,
        }
    }
    Ok(())
}

/// Builds one client per distinct connection; two S3 sides with the same connection
/// share it, and only then can the destination copy server-side.
async fn open_stores(
    settings: &SyncSettings,
    requests: &Arc<RequestCounts>,
    uploads: &Arc<ActiveUploads>,
) -> (Store, Store, Route) {
    let shared = settings.source_client == settings.dest_client;
    let source_client = match &settings.source {
        Location::S3(_) => Some(
            build_client(
                &settings.source_client,
                Arc::clone(requests),
                &settings.pacing,
            )
            .await,
        ),
        Location::Local(_) => None,
    };
    let dest_client = match (&settings.dest, &source_client) {
        (Location::S3(_), Some(client)) if shared => Some(client.clone()),
        (Location::S3(_), _) => Some(
            build_client(
                &settings.dest_client,
                Arc::clone(requests),
                &settings.pacing,
            )
            .await,
        ),
        (Location::Local(_), _) => None,
    };
    let store = |location: &Location,
                 client: Option<aws_sdk_s3::Client>,
                 endpoint: Option<&str>,
                 as_of: Option<SystemTime>| match (location, client) {
        (Location::S3(url), Some(client)) => Store::S3(
            S3Store::new(
                client,
                url.clone(),
                settings.write.clone(),
                Arc::clone(uploads),
            )
            .with_list_width(settings.list_width)
            .with_endpoint(endpoint)
            .with_as_of(as_of),
        ),
        (Location::Local(path), _) => Store::Local(local_store(path, settings)),
        (Location::S3(_), None) => unreachable!("an S3 side always has a client"),
    };
    let route = match settings.server_side_copy {
        ServerSideCopy::Always => Route::ServerSide,
        ServerSideCopy::Never => Route::ThroughClient,
        ServerSideCopy::Auto if shared => Route::ServerSide,
        ServerSideCopy::Auto => Route::ThroughClient,
    };
    let both_s3 = settings.source.is_s3() && settings.dest.is_s3();
    (
        store(
            &settings.source,
            source_client,
            settings.source_client.endpoint_url.as_deref(),
            settings.as_of,
        ),
        store(
            &settings.dest,
            dest_client,
            settings.dest_client.endpoint_url.as_deref(),
            None,
        ),
        if both_s3 { route } else { Route::ServerSide },
    )
}
