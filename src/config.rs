//! Validated settings, built once from the command line. The rest of the crate reads
//! these types and never clap's.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use aws_sdk_s3::types::{ObjectCannedAcl, ServerSideEncryption, StorageClass};

use crate::cli::{
    CommonArgs, CompareArg, ConnectionArgs, CutoffArg, PlanArgs, PointInTimeArgs, RestoreTierArg,
    ServerSideCopyArg, SyncArgs, VerifyArgs,
};
use crate::filter::{Filters, PatternError};
use crate::keylist::read_keys;
use crate::location::{Location, LocationError};
use crate::plan::CompareMode;
use crate::shard::{parse_boundaries, Shard};
use crate::storage::local::LinkMode;
use crate::storage::s3::{
    ClientSettings, Pacing, Restore, RestoreTier, WriteOptions, MIN_PART_SIZE,
};
use crate::storage::ChecksumAlgorithm;
use crate::ui::{MetricsSettings, OutputSettings, Verbosity};

pub const MAX_THREADS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{side}: {source}")]
    Location {
        side: &'static str,
        source: LocationError,
    },
    #[error("--threads must be between 1 and {MAX_THREADS}, not {0}")]
    Threads(usize),
    #[error("--stats-interval must be longer than zero")]
    StatsInterval,
    #[error("{0}")]
    Shard(String),
    #[error("--manifest-out needs an S3 source: S3 Batch Operations copies from a bucket")]
    ManifestSource,
    #[error("--server-side-copy always {0}")]
    ServerSideCopy(&'static str),
    #[error("--backup-dir {dir}: {why}")]
    Backup { dir: String, why: String },
    #[error("--files-from {}: {cause}", path.display())]
    FilesFrom { path: PathBuf, cause: String },
    #[error("{option} {value:?}: {why}; expected http(s)://HOST[:PORT][/PATH]")]
    EndpointUrl {
        option: &'static str,
        /// Without any user or password the URL held.
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Pattern(#[from] PatternError),
    #[error("--part-size must be at least 5MiB (the S3 minimum), not {0} bytes")]
    PartSize(u64),
    #[error("--part-concurrency must be between 1 and {MAX_THREADS}, not {0}")]
    PartConcurrency(usize),
    #[error("--{option} {value:?} is not one of: {allowed}")]
    Choice {
        option: &'static str,
        value: String,
        allowed: String,
    },
    #[error(
        "--as-of reads earlier versions of the objects of an S3 source; the source {0} is a \
         local directory"
    )]
    AsOfLocalSource(String),
    #[error(
        "source {source_loc} and destination {dest} overlap; a mirror into itself would never end"
    )]
    Overlap { source_loc: String, dest: String },
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub source: Location,
    pub dest: Location,
    pub source_client: ClientSettings,
    pub dest_client: ClientSettings,
    pub threads: usize,
    /// `--max-rps` and `--max-bandwidth`.
    pub pacing: Pacing,
    pub dry_run: bool,
    /// `--verify`: compare both sides again after the copies.
    pub verify_after: bool,
    pub compare: CompareMode,
    /// ListObjectsV2 requests a bucket listing sends at once.
    pub list_width: usize,
    /// `--max-backlog`: jobs decided ahead of the workers, handed out largest first.
    pub backlog: usize,
    /// What local walks do with symbolic links, and whether links are made again.
    pub links: LinkMode,
    /// `--fsync-each-file`: no syncfs of a local destination's file system.
    pub fsync_each_file: bool,
    /// Where uploads in progress are recorded; `None` when no directory is known.
    pub state_dir: Option<PathBuf>,
    pub transfer: TransferSettings,
    pub write: WriteOptions,
    pub filters: Filters,
    /// Present with `--delete`.
    pub delete: Option<DeleteSettings>,
    pub output: OutputSettings,
    /// `--shard`: this process's share of the keys.
    pub shard: Option<ShardSettings>,
    /// `--manifest-out` (the run is then a dry run).
    pub manifest_out: Option<PathBuf>,
    /// `--backup-dir` and `--suffix`.
    pub backup: Option<BackupSettings>,
    /// `--as-of`: the S3 source is read as it was at this time.
    pub as_of: Option<SystemTime>,
    /// `--max-duration`, `--max-transfer` and `--cutoff`.
    pub budget: BudgetSettings,
    /// `--server-side-copy`.
    pub server_side_copy: ServerSideCopy,
}

/// When a copy between buckets is made server-side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerSideCopy {
    /// When both sides share a connection (endpoint and credentials).
    #[default]
    Auto,
    /// With the destination's credentials, whatever the source's.
    Always,
    Never,
}

/// The run's budgets; none by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetSettings {
    pub max_duration: Option<std::time::Duration>,
    pub max_transfer: Option<u64>,
    /// At the deadline, abort the copies in flight instead of letting them finish.
    pub hard_cutoff: bool,
}

/// Where a run moves what it would overwrite or delete in the destination.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub location: Location,
    pub suffix: String,
}

#[derive(Debug, Clone)]
pub struct ShardSettings {
    pub shard: Shard,
    /// From `--shard-boundaries`; computed from the source when absent.
    pub boundaries: Option<Vec<String>>,
}

/// When `--delete` may remove destination objects absent from the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteSettings {
    pub allow_empty_source: bool,
    pub max_delete: Option<u64>,
}

/// Sizes that decide how objects are split into parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferSettings {
    pub multipart_threshold: u64,
    pub multipart_copy_threshold: u64,
    pub part_size: u64,
    pub part_concurrency: usize,
    /// Times an object is copied again from the start after a transient failure.
    pub object_retries: u32,
    /// `--include-archived`: how archived objects that are not restored get restored.
    pub restore: Option<Restore>,
}

impl SyncSettings {
    pub fn from_args(args: SyncArgs) -> Result<Self, SettingsError> {
        let mut settings = Self::from_common(&args.common)?;
        settings.as_of = point_in_time(&settings.source, &args.point_in_time)?;
        if args.part_size < MIN_PART_SIZE {
            return Err(SettingsError::PartSize(args.part_size));
        }
        if args.part_concurrency == 0 || args.part_concurrency > MAX_THREADS {
            return Err(SettingsError::PartConcurrency(args.part_concurrency));
        }
        settings.write = write_options(&args)?;
        settings.state_dir = args.state_dir.clone().or_else(default_state_dir);
        settings.dry_run = args.dry_run || args.manifest_out.is_some();
        settings.verify_after = args.verify;
        if args.manifest_out.is_some() && !settings.source.is_s3() {
            return Err(SettingsError::ManifestSource);
        }
        settings.manifest_out = args.manifest_out.clone();
        settings.compare = match args.compare {
            CompareArg::Auto => CompareMode::Auto,
            CompareArg::Size => CompareMode::Size,
            CompareArg::Mtime => CompareMode::Mtime,
            CompareArg::Etag => CompareMode::Etag,
            CompareArg::Checksum => CompareMode::Checksum,
        };
        settings.transfer = TransferSettings {
            multipart_threshold: args.multipart_threshold.max(1),
            multipart_copy_threshold: args.multipart_copy_threshold,
            part_size: args.part_size,
            part_concurrency: args.part_concurrency,
            object_retries: args.common.connection.max_retries,
            restore: args.include_archived.then_some(Restore {
                days: args.restore_days,
                tier: match args.restore_tier {
                    RestoreTierArg::Standard => RestoreTier::Standard,
                    RestoreTierArg::Bulk => RestoreTier::Bulk,
                    RestoreTierArg::Expedited => RestoreTier::Expedited,
                },
            }),
        };
        settings.delete = args.delete.then_some(DeleteSettings {
            allow_empty_source: args.allow_empty_source,
            max_delete: args.max_delete,
        });
        settings.server_side_copy = match args.server_side_copy {
            ServerSideCopyArg::Auto => ServerSideCopy::Auto,
            ServerSideCopyArg::Never => ServerSideCopy::Never,
            ServerSideCopyArg::Always => {
                if !(settings.source.is_s3() && settings.dest.is_s3()) {
                    return Err(SettingsError::ServerSideCopy(
                        "copies server-side between two buckets; one side here is a local directory",
                    ));
                }
                if settings.source_client.endpoint_url != settings.dest_client.endpoint_url {
                    return Err(SettingsError::ServerSideCopy(
                        "needs both buckets on one endpoint: CopyObject cannot read from another server; use auto or never",
                    ));
                }
                ServerSideCopy::Always
            }
        };
        settings.budget = BudgetSettings {
            max_duration: args.max_duration,
            max_transfer: args.max_transfer,
            hard_cutoff: args.cutoff == CutoffArg::Hard,
        };
        settings.backup = match &args.backup_dir {
            Some(dir) => Some(backup_settings(&settings, dir, args.suffix.as_deref())?),
            None => None,
        };
        Ok(settings)
    }

    /// A comparison that changes nothing: every difference is reported, extras too.
    /// `--checksum` hashes local files against ETags where sizes match.
    pub fn for_verify(args: VerifyArgs) -> Result<Self, SettingsError> {
        let mut settings = Self::from_common(&args.common)?;
        settings.as_of = point_in_time(&settings.source, &args.point_in_time)?;
        settings.dry_run = true;
        settings.output.verify = true;
        settings.compare = if args.checksum {
            CompareMode::Etag
        } else {
            CompareMode::Auto
        };
        Ok(settings)
    }

    /// Settings for `plan`: the source and how to reach it.
    pub fn for_plan(args: PlanArgs) -> Result<Self, SettingsError> {
        Self::from_common(&args.common)
    }

    /// The settings a verify after this sync runs with.
    pub fn verify_settings(&self) -> Self {
        let mut settings = self.clone();
        settings.dry_run = true;
        settings.verify_after = false;
        settings.delete = None;
        settings.output.verify = true;
        settings.compare = CompareMode::Auto;
        settings
    }

    /// Settings from the options every subcommand shares; the rest at their defaults.
    fn from_common(args: &CommonArgs) -> Result<Self, SettingsError> {
        let source = Location::parse(&args.source).map_err(|source| SettingsError::Location {
            side: "source",
            source,
        })?;
        let dest = Location::parse(&args.dest).map_err(|source| SettingsError::Location {
            side: "destination",
            source,
        })?;
        if args.threads == 0 || args.threads > MAX_THREADS {
            return Err(SettingsError::Threads(args.threads));
        }
        if args.stats_interval.is_zero() {
            return Err(SettingsError::StatsInterval);
        }
        let mut filters = Filters::default()
            .with_patterns(args.patterns.iter().map(|(rule, p)| (*rule, p.as_str())))?;
        filters.min_size = args.min_size;
        filters.max_size = args.max_size;
        filters.max_age = args.max_age;
        filters.min_age = args.min_age;
        if let Some(path) = &args.files_from {
            let keys = read_keys(path).map_err(|err| SettingsError::FilesFrom {
                path: path.clone(),
                cause: err.to_string(),
            })?;
            filters.only = Some(Arc::new(keys));
        }
        let (source_client, dest_client) = client_settings(&args.connection)?;
        check_overlap(&source, &source_client, &dest, &dest_client)?;
        let shard = match &args.shard {
            None => None,
            Some(spec) => Some(ShardSettings {
                shard: Shard::parse(spec, |name| std::env::var(name).ok())
                    .map_err(SettingsError::Shard)?,
                boundaries: match &args.shard_boundaries {
                    None => None,
                    Some(path) => Some(
                        std::fs::read_to_string(path)
                            .map_err(|err| err.to_string())
                            .and_then(|text| parse_boundaries(&text))
                            .map_err(|why| {
                                SettingsError::Shard(format!(
                                    "--shard-boundaries {}: {why}",
                                    path.display()
                                ))
                            })?,
                    ),
                },
            }),
        };
        let verbosity = match (args.quiet, args.verbose) {
            (true, _) => Verbosity::Quiet,
            (false, 0) => Verbosity::Normal,
            (false, _) => Verbosity::Verbose,
        };
        Ok(Self {
            source,
            dest,
            source_client,
            dest_client,
            threads: args.threads,
            pacing: Pacing::new(args.max_rps, args.max_bandwidth.filter(|&b| b > 0)),
            list_width: usize::from(args.list_parallelism),
            backlog: args.max_backlog,
            links: match (args.links, args.no_follow_symlinks) {
                (true, _) => LinkMode::Store,
                (false, true) => LinkMode::Skip,
                (false, false) => LinkMode::Follow,
            },
            fsync_each_file: args.fsync_each_file,
            state_dir: None,
            dry_run: false,
            verify_after: false,
            compare: CompareMode::Auto,
            transfer: TransferSettings {
                multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
                multipart_copy_threshold: MAX_COPY_OBJECT,
                part_size: DEFAULT_PART_SIZE,
                part_concurrency: DEFAULT_PART_CONCURRENCY,
                object_retries: args.connection.max_retries,
                restore: None,
            },
            write: WriteOptions::default(),
            filters,
            delete: None,
            output: OutputSettings {
                verbosity,
                stats_interval: args.stats_interval,
                verify: false,
                json: args.json,
                failed_keys: args.failed_keys.clone(),
                metrics: args.metrics_file.clone().map(|path| MetricsSettings {
                    path,
                    job_name: args.job_name.clone(),
                }),
            },
            shard,
            manifest_out: None,
            backup: None,
            budget: BudgetSettings::default(),
            server_side_copy: ServerSideCopy::Auto,
            as_of: None,
        })
    }
}

/// `--as-of`, which only an S3 source has versions for.
fn point_in_time(
    source: &Location,
    args: &PointInTimeArgs,
) -> Result<Option<SystemTime>, SettingsError> {
    match (args.as_of, source) {
        (Some(_), Location::Local(path)) => {
            Err(SettingsError::AsOfLocalSource(path.display().to_string()))
        }
        (as_of, _) => Ok(as_of),
    }
}

/// Defaults of the sync options, for a verify that has none of them.
const DEFAULT_MULTIPART_THRESHOLD: u64 = 64 << 20;
const MAX_COPY_OBJECT: u64 = 5 << 30;
const DEFAULT_PART_SIZE: u64 = 16 << 20;
const DEFAULT_PART_CONCURRENCY: usize = 8;

/// Storage class and canned ACL are checked against the SDK's known values, so a typo
/// fails before any object is written.
fn write_options(args: &SyncArgs) -> Result<WriteOptions, SettingsError> {
    fn choice<T: FromStr + std::fmt::Debug>(
        option: &'static str,
        value: &Option<String>,
        known: &[&str],
    ) -> Result<Option<T>, SettingsError> {
        match value {
            None => Ok(None),
            Some(v) if known.contains(&v.as_str()) => Ok(v.parse().ok()),
            Some(v) => Err(SettingsError::Choice {
                option,
                value: v.clone(),
                allowed: known.join(", "),
            }),
        }
    }
    Ok(WriteOptions {
        storage_class: choice::<StorageClass>(
            "storage-class",
            &args.storage_class,
            StorageClass::values(),
        )?,
        sse: choice::<ServerSideEncryption>("sse", &args.sse, ServerSideEncryption::values())?,
        sse_kms_key_id: args.sse_kms_key_id.clone(),
        acl: choice::<ObjectCannedAcl>("acl", &args.acl, ObjectCannedAcl::values())?,
        checksum: match (args.checksum_algorithm, args.compare) {
            (Some(algorithm), _) => Some(algorithm.into()),
            (None, CompareArg::Checksum) => Some(ChecksumAlgorithm::Crc32c),
            (None, _) => None,
        },
    })
}

/// The connection of a command with one S3 side (`mount`): the shared and source options.
pub fn connection_settings(args: &ConnectionArgs) -> Result<ClientSettings, SettingsError> {
    client_settings(args).map(|(source, _)| source)
}

fn client_settings(
    args: &ConnectionArgs,
) -> Result<(ClientSettings, ClientSettings), SettingsError> {
    let endpoint =
        |option: &'static str, value: &Option<String>| -> Result<Option<String>, SettingsError> {
            match value {
                Some(url) => match check_endpoint(url) {
                    Ok(()) => Ok(Some(url.clone())),
                    Err(why) => Err(SettingsError::EndpointUrl {
                        option,
                        value: without_userinfo(url),
                        why,
                    }),
                },
                None => Ok(None),
            }
        };
    let shared = endpoint("--endpoint-url", &args.endpoint_url)?;
    let source_endpoint = endpoint("--source-endpoint-url", &args.source_endpoint_url)?;
    let dest_endpoint = endpoint("--dest-endpoint-url", &args.dest_endpoint_url)?;
    let side = |endpoint: Option<String>, region: &Option<String>, profile: &Option<String>| {
        ClientSettings {
            endpoint_url: endpoint.or_else(|| shared.clone()),
            region: region.clone().or_else(|| args.region.clone()),
            profile: profile.clone().or_else(|| args.profile.clone()),
            force_path_style: args.force_path_style,
            max_retries: args.max_retries,
        }
    };
    Ok((
        side(source_endpoint, &args.source_region, &args.source_profile),
        side(dest_endpoint, &args.dest_region, &args.dest_profile),
    ))
}

/// Checks an endpoint URL's shape, so that a typo gets one clear line rather than an
/// error from deep in the HTTP stack.
fn check_endpoint(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("not an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials do not belong in the URL; use the AWS credential chain");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if !host.chars().all(allowed) {
        return Err("the host has characters no host name has");
    }
    match port.map(str::parse::<u16>) {
        Some(Err(_)) | Some(Ok(0)) => Err("the port is not a number from 1 to 65535"),
        _ => Ok(()),
    }
}

/// The URL with any `user:password@` removed, for messages.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `$XDG_STATE_HOME/s3mirror`, else `~/.local/state/s3mirror`.
pub fn default_state_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty());
    match xdg {
        Some(dir) => Some(PathBuf::from(dir).join("s3mirror")),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".local/state/s3mirror")),
    }
}

/// Refuses a destination inside the source or the other way round: each run would copy
/// its own output again.
fn check_overlap(
    source: &Location,
    source_client: &ClientSettings,
    dest: &Location,
    dest_client: &ClientSettings,
) -> Result<(), SettingsError> {
    let overlap = match (source, dest) {
        (Location::S3(s), Location::S3(d)) => {
            source_client.endpoint_url == dest_client.endpoint_url
                && s.bucket() == d.bucket()
                && (s.prefix().starts_with(d.prefix()) || d.prefix().starts_with(s.prefix()))
        }
        (Location::Local(s), Location::Local(d)) => {
            let (s, d) = (absolute(s), absolute(d));
            s.starts_with(&d) || d.starts_with(&s)
        }
        _ => false,
    };
    if overlap {
        return Err(SettingsError::Overlap {
            source_loc: source.to_string(),
            dest: dest.to_string(),
        });
    }
    Ok(())
}

fn absolute(path: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// `--backup-dir`: on the destination's side (a bucket on its endpoint, or a directory
/// for a local destination), holding neither the destination nor the source, nor held
/// by them: a move would otherwise land in what the run lists or overwrites.
fn backup_settings(
    settings: &SyncSettings,
    dir: &str,
    suffix: Option<&str>,
) -> Result<BackupSettings, SettingsError> {
    let refuse = |why: String| SettingsError::Backup {
        dir: dir.to_owned(),
        why,
    };
    let location = Location::parse(dir).map_err(|err| refuse(err.to_string()))?;
    if location.is_s3() != settings.dest.is_s3() {
        return Err(refuse(match settings.dest.is_s3() {
            true => "the destination is a bucket, so the backup dir must be one too (s3://bucket/prefix), on the same endpoint".to_owned(),
            false => "the destination is a local directory, so the backup dir must be one too".to_owned(),
        }));
    }
    if location.overlaps(&settings.dest) {
        return Err(refuse(
            "it overlaps the destination: the backup dir must be outside it (e.g. s3://bucket/current as destination, s3://bucket/changed/DATE as backup dir)".to_owned(),
        ));
    }
    let same_connection = !location.is_s3() || settings.source_client == settings.dest_client;
    if same_connection && location.overlaps(&settings.source) {
        return Err(refuse("it overlaps the source".to_owned()));
    }
    let suffix = suffix.unwrap_or_default();
    if suffix.contains('/') || suffix.contains('\0') {
        return Err(refuse(format!(
            "--suffix {suffix:?}: a suffix cannot hold '/' or NUL"
        )));
    }
    Ok(BackupSettings {
        location,
        suffix: suffix.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn settings(args: &[&str]) -> Result<SyncSettings, SettingsError> {
        let cli = Cli::parse_with_default(std::iter::once("s3mirror").chain(args.iter().copied()))
            .unwrap();
        match cli.command {
            Command::Sync(sync) => SyncSettings::from_args(*sync),
            Command::Verify(verify) => SyncSettings::for_verify(verify),
            Command::Plan(plan) => SyncSettings::for_plan(plan),
            _ => panic!("not a sync"),
        }
    }

    #[test]
    fn per_side_options_override_shared_ones() {
        let s = settings(&[
            "--endpoint-url",
            "http://127.0.0.1:3900",
            "--dest-endpoint-url",
            "https://s3.example.com",
            "--region",
            "garage",
            "--source-profile",
            "old",
            "s3://src-b",
            "s3://dst-b",
        ])
        .unwrap();
        assert_eq!(
            s.source_client.endpoint_url.as_deref(),
            Some("http://127.0.0.1:3900")
        );
        assert_eq!(
            s.dest_client.endpoint_url.as_deref(),
            Some("https://s3.example.com")
        );
        assert_eq!(s.source_client.region.as_deref(), Some("garage"));
        assert_eq!(s.dest_client.region.as_deref(), Some("garage"));
        assert_eq!(s.source_client.profile.as_deref(), Some("old"));
        assert_eq!(s.dest_client.profile, None);
    }

    #[test]
    fn invalid_settings_say_what_is_wrong() {
        let cases: [(&[&str], &str); 11] = [
            (
                &["--part-size", "1MiB", "a", "b"],
                "--part-size must be at least 5MiB",
            ),
            (
                &["--storage-class", "COLD", "a", "b"],
                "--storage-class \"COLD\" is not one of: AWS_BACKUP",
            ),
            (
                &["--acl", "public", "a", "b"],
                "--acl \"public\" is not one of",
            ),
            (&["--threads", "0", "a", "b"], "--threads must be between"),
            (&["--stats-interval", "0s", "a", "b"], "--stats-interval"),
            (
                &["--endpoint-url", "127.0.0.1:3900", "a", "s3://bkt"],
                "not an http:// or https:// URL",
            ),
            (&["s3://bkt/a", "s3://bkt/a/b"], "overlap"),
            (&["s3://bkt", "s3://bkt/x"], "overlap"),
            (
                &["gs://bkt", "b"],
                "source: \"gs://bkt\": unsupported scheme",
            ),
            (
                &["--as-of", "2026-11-29T00:00:00Z", "dir", "s3://bkt"],
                "--as-of reads earlier versions of the objects of an S3 source; the source dir",
            ),
            (
                &[
                    "verify",
                    "--as-of",
                    "2026-11-29T00:00:00Z",
                    "dir",
                    "s3://bkt",
                ],
                "the source dir is a local directory",
            ),
        ];
        for (args, want) in cases {
            let err = settings(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn endpoint_urls_are_checked_and_never_echo_credentials() {
        for good in [
            "http://127.0.0.1:3900",
            "https://s3.eu-west-1.amazonaws.com",
            "http://[::1]:9000/",
            "http://minio:9000/base",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("http://", "the host is missing"),
            ("http://:9000", "the host is missing"),
            ("http://host:port", "the port is not a number"),
            ("http://host:70000", "the port is not a number"),
            ("http://ho st", "characters no host name has"),
            ("http://[::1", "unclosed"),
            ("ftp://host", "not an http"),
        ] {
            assert!(check_endpoint(bad).unwrap_err().contains(why), "{bad}");
        }
        let err = settings(&[
            "--endpoint-url",
            "http://AKIAKEY:SECRETVALUE@host:9000/x",
            "a",
            "s3://bkt",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("credentials do not belong"), "{err}");
        assert!(
            !err.contains("SECRETVALUE") && !err.contains("AKIAKEY"),
            "{err}"
        );
        assert!(err.contains("\"http://host:9000/x\""), "{err}");
    }

    #[test]
    fn sizes_and_write_options_are_typed() {
        let s = settings(&[
            "--part-size",
            "32MiB",
            "--multipart-threshold",
            "1GB",
            "--storage-class",
            "STANDARD_IA",
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            "k1",
            "--acl",
            "bucket-owner-full-control",
            "a",
            "b",
        ])
        .unwrap();
        assert_eq!(
            (s.transfer.part_size, s.transfer.multipart_threshold),
            (32 << 20, 1_000_000_000)
        );
        assert_eq!(s.write.storage_class, Some(StorageClass::StandardIa));
        assert_eq!(s.write.sse, Some(ServerSideEncryption::AwsKms));
        assert_eq!(s.write.acl, Some(ObjectCannedAcl::BucketOwnerFullControl));
    }

    #[test]
    fn sibling_prefixes_do_not_overlap() {
        assert!(settings(&["s3://bkt/a", "s3://bkt/ab"]).is_ok());
        assert!(settings(&["s3://bkt/a", "s3://other/a"]).is_ok());
    }
}
