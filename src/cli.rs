//! Command-line syntax, as clap parses it. Nothing outside this module and `config`
//! sees these types: `config` turns them into validated settings.

use std::ffi::OsString;
use std::time::{Duration, SystemTime};

use clap::builder::BoolishValueParser;
use clap::{
    ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
};

use crate::filter::Rule;
use crate::storage::ChecksumAlgorithm;

mod generate;

pub use generate::{completion_script, man_page};

#[derive(Debug, Parser)]
#[command(
    name = "s3mirror",
    version,
    about = "Mirror large file sets into, out of and between S3 buckets",
    after_help = "SRC and DST are s3://bucket[/prefix] or a local directory. `sync` is the default \
                  subcommand: `s3mirror SRC DST` is `s3mirror sync SRC DST`.\n\n\
                  Exit codes: 0 all done, 1 some objects failed, 2 invalid arguments, \
                  3 the run could not proceed (listing, bucket or credentials).\n\n\
                  Every option of sync, verify and plan (except --include, --exclude and -v) \
                  can also be set by the environment variable shown beside it, such as \
                  S3MIRROR_THREADS=200 or S3MIRROR_DELETE=true; the command line wins."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make DST hold every object of SRC (the default subcommand)
    Sync(Box<SyncArgs>),
    /// Compare SRC and DST and list every difference: missing, extra, size, content.
    /// Exit 0 when identical, 1 when they differ, 2 on error
    Verify(VerifyArgs),
    /// Print the boundary keys that split SRC into N shards, one per line, for
    /// --shard-boundaries
    Plan(PlanArgs),
    /// Show a bucket as a directory (FUSE); a file written there is in the bucket when
    /// close() returns
    Mount(MountArgs),
    /// Print a shell completion script (e.g. `s3mirror completions bash >
    /// /etc/bash_completion.d/s3mirror`)
    Completions(CompletionsArgs),
    /// Print the man page in roff (`s3mirror man | man -l -`); with a subcommand, that
    /// subcommand's page (s3mirror-sync(1)...)
    Man(ManArgs),
}

const SUBCOMMANDS: [&str; 7] = [
    "sync",
    "verify",
    "plan",
    "mount",
    "completions",
    "man",
    "help",
];

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The subcommand whose page to print [default: the main page, s3mirror(1)]
    #[arg(value_parser = ["sync", "verify", "plan", "mount"])]
    pub subcommand: Option<String>,
}

impl Cli {
    /// Parses the arguments, inserting `sync` when no subcommand is named (and when
    /// there are no arguments at all but S3MIRROR_SOURCE names what to mirror).
    pub fn parse_with_default<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
        let names_subcommand = SUBCOMMANDS.contains(&first)
            || matches!(first, "-h" | "--help" | "-V" | "--version")
            || (args.len() == 1 && std::env::var_os("S3MIRROR_SOURCE").is_none());
        if !names_subcommand {
            args.insert(1, "sync".into());
        }
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        let (common, name) = match &mut cli.command {
            Command::Sync(args) => (&mut args.common, "sync"),
            Command::Verify(args) => (&mut args.common, "verify"),
            Command::Plan(args) => (&mut args.common, "plan"),
            Command::Mount(_) | Command::Completions(_) | Command::Man(_) => return Ok(cli),
        };
        if let Some(sub) = matches.subcommand_matches(name) {
            common.patterns = ordered_patterns(sub);
        }
        Ok(cli)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerSideCopyArg {
    /// server-side when both sides share credentials and endpoint
    Auto,
    /// server-side with the destination's credentials, whatever the source's
    Always,
    /// every byte streamed through this machine
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CutoffArg {
    /// the copies in flight finish
    Soft,
    /// the copies in flight are aborted at the deadline
    Hard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestoreTierArg {
    /// within hours (3-5 for GLACIER, 12 for DEEP_ARCHIVE)
    Standard,
    /// the cheapest, within 5-12 hours (48 for DEEP_ARCHIVE)
    Bulk,
    /// within minutes, GLACIER only
    Expedited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompareArg {
    /// etag between buckets; mtime when a local directory is involved
    Auto,
    /// equal size means unchanged
    Size,
    /// equal size, and the destination is not older than the source
    Mtime,
    /// equal size and equal content hash (hashes local files when sizes match)
    Etag,
    /// equal size and equal S3 additional checksum (x-amz-checksum-*; a HEAD per object
    /// whose size matches)
    Checksum,
}

/// `--checksum-algorithm`: the additional checksums S3 offers, as the command line
/// spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChecksumArg {
    Crc32,
    Crc32c,
    Crc64nvme,
    Sha1,
    Sha256,
}

impl From<ChecksumArg> for ChecksumAlgorithm {
    fn from(arg: ChecksumArg) -> Self {
        match arg {
            ChecksumArg::Crc32 => ChecksumAlgorithm::Crc32,
            ChecksumArg::Crc32c => ChecksumAlgorithm::Crc32c,
            ChecksumArg::Crc64nvme => ChecksumAlgorithm::Crc64nvme,
            ChecksumArg::Sha1 => ChecksumAlgorithm::Sha1,
            ChecksumArg::Sha256 => ChecksumAlgorithm::Sha256,
        }
    }
}

/// Options of every subcommand that compares two sides: where, how fast, which keys,
/// what to print, and how to connect.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Source: s3://bucket[/prefix] or a local directory
    #[arg(env = "S3MIRROR_SOURCE")]
    pub source: String,
    /// Destination: s3://bucket[/prefix] or a local directory
    #[arg(env = "S3MIRROR_DEST")]
    pub dest: String,

    /// Objects transferred concurrently
    #[arg(
        long,
        default_value_t = 100,
        value_name = "N",
        env = "S3MIRROR_THREADS"
    )]
    pub threads: usize,

    /// ListObjectsV2 requests a bucket listing sends at once, over its common prefixes and
    /// ranges of its keys; 1 lists sequentially
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256), env = "S3MIRROR_LIST_PARALLELISM")]
    pub list_parallelism: u16,

    /// Objects to copy that the run looks ahead at, beyond those in transfer: those of
    /// --multipart-threshold or more start ahead of the smaller ones, so that large
    /// objects late in key order do not end the run alone; 0 copies in key order. Each
    /// takes a few hundred bytes of memory
    #[arg(long, default_value_t = crate::plan::DEFAULT_BACKLOG, value_name = "N", env = "S3MIRROR_MAX_BACKLOG")]
    pub max_backlog: usize,

    /// Pass over every symbolic link in a local tree (counted, never copied) instead of
    /// copying what it points to
    #[arg(long, env = "S3MIRROR_NO_FOLLOW_SYMLINKS", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub no_follow_symlinks: bool,

    /// Keep symbolic links as links: a link NAME is stored as the object NAME.rclonelink
    /// holding its target (as rclone's --links does), and such objects become links again
    /// in a local destination
    #[arg(short = 'l', long, conflicts_with = "no_follow_symlinks", env = "S3MIRROR_LINKS", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub links: bool,

    /// Make each file written to a local destination durable with its own fsync, instead
    /// of one syncfs for all the files finished meanwhile (on ext4, XFS, btrfs and f2fs):
    /// for a file system where other programs leave much unsynced data, which each syncfs
    /// would write too
    #[arg(long, env = "S3MIRROR_FSYNC_EACH_FILE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub fsync_each_file: bool,

    /// At most this many S3 requests per second, over all transfers and both sides
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), env = "S3MIRROR_MAX_RPS")]
    pub max_rps: Option<u64>,

    /// At most this many bytes per second through this machine, each way (e.g. 10MiB);
    /// server-side copies do not pass through it
    #[arg(long, value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_MAX_BANDWIDTH")]
    pub max_bandwidth: Option<u64>,

    /// Interval between stats lines when stderr is not a terminal (e.g. 10s, 1m)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION", env = "S3MIRROR_STATS_INTERVAL")]
    pub stats_interval: Duration,

    /// Print only errors
    #[arg(short, long, conflicts_with = "verbose", env = "S3MIRROR_QUIET", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub quiet: bool,

    /// Handle only shard K of N (from 0) of the key space: one of N processes that
    /// together mirror everything, each listing only its share. With N alone, K comes
    /// from JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX or SLURM_ARRAY_TASK_ID
    #[arg(long, value_name = "K/N", env = "S3MIRROR_SHARD")]
    pub shard: Option<String>,

    /// The shards' boundary keys, as `s3mirror plan --shards N` writes them (without it,
    /// each shard computes them from the source's top levels)
    #[arg(
        long,
        value_name = "FILE",
        requires = "shard",
        env = "S3MIRROR_SHARD_BOUNDARIES"
    )]
    pub shard_boundaries: Option<std::path::PathBuf>,

    /// Consider only the keys listed in FILE, one per line, relative to the prefix (e.g.
    /// the --failed-keys of an earlier run); both sides are still listed
    #[arg(long, value_name = "FILE", env = "S3MIRROR_FILES_FROM")]
    pub files_from: Option<std::path::PathBuf>,

    /// Write the keys that failed (for verify: that differ or could not be compared)
    /// to FILE, one per line, for a rerun with --files-from
    #[arg(long, value_name = "FILE", env = "S3MIRROR_FAILED_KEYS")]
    pub failed_keys: Option<std::path::PathBuf>,

    /// Append everything printed on stderr (messages, stats lines, the summary) to FILE
    /// instead, for cron and systemd
    #[arg(long, value_name = "FILE", env = "S3MIRROR_LOG_FILE")]
    pub log_file: Option<std::path::PathBuf>,

    /// Write metrics of the run to FILE in the Prometheus text format (for node_exporter's
    /// textfile collector) every --stats-interval and at the end: counts, bytes,
    /// requests, retries, duration, exit code, last success
    #[arg(long, value_name = "FILE", env = "S3MIRROR_METRICS_FILE")]
    pub metrics_file: Option<std::path::PathBuf>,

    /// The job_name label of the metrics, telling apart the jobs that share a metrics
    /// directory
    #[arg(
        long,
        value_name = "NAME",
        default_value = "s3mirror",
        env = "S3MIRROR_JOB_NAME"
    )]
    pub job_name: String,

    /// Write one JSON object per line on stdout for every object acted on, then a
    /// summary object (schema in docs/json.md); messages for people stay on stderr
    #[arg(long, env = "S3MIRROR_JSON", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub json: bool,

    /// Print every object copied; twice for debug logs
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Take back keys matching GLOB, relative to the prefix, that an earlier --exclude
    /// left out (repeatable; the last matching --include or --exclude wins; `*` matches
    /// `/` too): --exclude '*' --include '*.jpg' takes only the JPEGs
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,

    /// Leave out keys matching GLOB (repeatable; see --include)
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Leave out source entries modified longer ago than DURATION (e.g. 7d, 12h)
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", env = "S3MIRROR_MAX_AGE")]
    pub max_age: Option<Duration>,

    /// Leave out source entries modified more recently than DURATION
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", env = "S3MIRROR_MIN_AGE")]
    pub min_age: Option<Duration>,

    /// Leave out entries smaller than SIZE
    #[arg(long, value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_MIN_SIZE")]
    pub min_size: Option<u64>,

    /// Leave out entries larger than SIZE
    #[arg(long, value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_MAX_SIZE")]
    pub max_size: Option<u64>,

    /// --include and --exclude patterns in command-line order (filled after parsing).
    #[arg(skip)]
    pub patterns: Vec<(Rule, String)>,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub point_in_time: PointInTimeArgs,

    /// Where multipart uploads in progress are recorded, so that the next run aborts
    /// those a killed run left behind [default: $XDG_STATE_HOME/s3mirror or
    /// ~/.local/state/s3mirror]
    #[arg(long, value_name = "DIR", env = "S3MIRROR_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,

    /// Show what would be copied, change nothing
    #[arg(short = 'n', long, env = "S3MIRROR_DRY_RUN", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub dry_run: bool,

    /// How to decide that an object is unchanged
    #[arg(long, value_enum, default_value_t = CompareArg::Auto, env = "S3MIRROR_COMPARE")]
    pub compare: CompareArg,

    /// Write every object with this additional checksum, which the server verifies and
    /// must state back (any case: CRC32C as the AWS CLI spells it); without it, uploads of
    /// files still store a CRC32C [default with --compare checksum: crc32c]
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        value_name = "ALGORITHM",
        env = "S3MIRROR_CHECKSUM_ALGORITHM"
    )]
    pub checksum_algorithm: Option<ChecksumArg>,

    /// Upload files of at least this size in parts (e.g. 64MiB, 1GB)
    #[arg(long, default_value = "64MiB", value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_MULTIPART_THRESHOLD")]
    pub multipart_threshold: u64,

    /// Copy objects larger than this between buckets in parts (CopyObject stops at 5GiB)
    #[arg(long, default_value = "5GiB", value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_MULTIPART_COPY_THRESHOLD")]
    pub multipart_copy_threshold: u64,

    /// Part size for multipart transfers (at least 5MiB; grown so no object needs over 10,000 parts)
    #[arg(long, default_value = "16MiB", value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_PART_SIZE")]
    pub part_size: u64,

    /// Parts of one object transferred at once (all objects together stay within --threads part requests)
    #[arg(
        long,
        default_value_t = 8,
        value_name = "N",
        env = "S3MIRROR_PART_CONCURRENCY"
    )]
    pub part_concurrency: usize,

    /// Storage class of written objects (e.g. STANDARD_IA, GLACIER_IR, INTELLIGENT_TIERING)
    #[arg(long, value_name = "CLASS", env = "S3MIRROR_STORAGE_CLASS")]
    pub storage_class: Option<String>,

    /// Server-side encryption of written objects
    #[arg(long, value_name = "ALGORITHM", value_parser = ["AES256", "aws:kms", "aws:kms:dsse"], env = "S3MIRROR_SSE")]
    pub sse: Option<String>,

    /// KMS key for --sse aws:kms
    #[arg(
        long,
        value_name = "KEY_ID",
        requires = "sse",
        env = "S3MIRROR_SSE_KMS_KEY_ID"
    )]
    pub sse_kms_key_id: Option<String>,

    /// Canned ACL of written objects (e.g. private, bucket-owner-full-control)
    #[arg(long, value_name = "ACL", env = "S3MIRROR_ACL")]
    pub acl: Option<String>,

    /// Delete destination objects that are absent from the source (after the copies,
    /// and only when both listings completed without error)
    #[arg(long, env = "S3MIRROR_DELETE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub delete: bool,

    /// Let --delete proceed when the source has no objects at all
    #[arg(long, requires = "delete", env = "S3MIRROR_ALLOW_EMPTY_SOURCE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub allow_empty_source: bool,

    /// With --delete, delete nothing when more than N deletions would be needed
    #[arg(
        long,
        value_name = "N",
        requires = "delete",
        env = "S3MIRROR_MAX_DELETE"
    )]
    pub max_delete: Option<u64>,

    /// Copy nothing: write the objects the run would copy to FILE as an S3 Batch
    /// Operations CSV manifest (bucket,key), for AWS to copy them (objects up to 5GiB)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["delete", "verify"], env = "S3MIRROR_MANIFEST_OUT")]
    pub manifest_out: Option<std::path::PathBuf>,

    /// Between buckets: copy server-side (CopyObject) when both sides use the same
    /// credentials and endpoint (auto), always with the destination's credentials (the
    /// source bucket's policy must let them read it), or never (stream through here)
    #[arg(long, value_enum, default_value_t = ServerSideCopyArg::Auto, env = "S3MIRROR_SERVER_SIDE_COPY")]
    pub server_side_copy: ServerSideCopyArg,

    /// Start no new copy after this long (e.g. 4h, 90m); the copies in flight finish
    /// (see --cutoff), and the run exits 4 so that a rerun continues
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", env = "S3MIRROR_MAX_DURATION")]
    pub max_duration: Option<std::time::Duration>,

    /// Start no new copy once this many bytes were sent (e.g. 500GiB); the run exits 4
    #[arg(long, value_parser = parse_size_arg, value_name = "SIZE", env = "S3MIRROR_MAX_TRANSFER")]
    pub max_transfer: Option<u64>,

    /// At --max-duration, let the copies in flight finish (soft), or abort them and
    /// their multipart uploads at once (hard)
    #[arg(long, value_enum, default_value_t = CutoffArg::Soft, env = "S3MIRROR_CUTOFF")]
    pub cutoff: CutoffArg,

    /// Before an object of the destination is overwritten or deleted, move it here
    /// (s3://bucket/prefix on the destination's endpoint, or a directory for a local
    /// destination), under its key relative to the destination
    #[arg(long, value_name = "LOCATION", env = "S3MIRROR_BACKUP_DIR")]
    pub backup_dir: Option<String>,

    /// Append SUFFIX to the keys moved to --backup-dir (e.g. -2026-12-01)
    #[arg(
        long,
        value_name = "SUFFIX",
        requires = "backup_dir",
        allow_hyphen_values = true,
        env = "S3MIRROR_SUFFIX"
    )]
    pub suffix: Option<String>,

    /// Request a restore of each archived source object (GLACIER, DEEP_ARCHIVE) not
    /// restored yet; a later run copies it once restored. Without this, such objects are
    /// passed over and counted as archived, never failed
    #[arg(long, env = "S3MIRROR_INCLUDE_ARCHIVED", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub include_archived: bool,

    /// With --include-archived: days the restored copy is kept
    #[arg(long, default_value_t = 7, value_name = "DAYS", value_parser = clap::value_parser!(u16).range(1..=30000), env = "S3MIRROR_RESTORE_DAYS")]
    pub restore_days: u16,

    /// With --include-archived: how fast (and at what price) S3 restores
    #[arg(long, value_enum, default_value_t = RestoreTierArg::Standard, env = "S3MIRROR_RESTORE_TIER")]
    pub restore_tier: RestoreTierArg,

    /// After the copies, compare both sides again (as `s3mirror verify` does) and exit
    /// 1 if they still differ
    #[arg(long, env = "S3MIRROR_VERIFY", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub verify: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The bucket to show: s3://bucket[/prefix]
    pub bucket: String,
    /// An existing, empty directory to show it on
    pub mountpoint: std::path::PathBuf,

    /// Where object data read through the mount is kept [default: a temporary directory]
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,

    /// The most object data kept in --cache-dir, least recently used first out
    #[arg(long, default_value = "1GiB", value_parser = parse_size_arg, value_name = "SIZE")]
    pub cache_size: u64,

    /// How long file metadata and directory listings are trusted before S3 is asked
    /// again: changes made elsewhere show within this time
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub metadata_ttl: Duration,

    /// Refuse every change
    #[arg(long)]
    pub read_only: bool,

    /// Accepted for compatibility: `rm`, `rmdir` and renames delete objects unless
    /// --read-only is given
    #[arg(long)]
    pub allow_delete: bool,

    /// Let other users (and containers) use the mount; the kernel checks file modes
    #[arg(long)]
    pub allow_other: bool,

    /// Mount options as `mount -o` takes them: allow_other, ro, uid=N, gid=N
    #[arg(short = 'o', value_name = "OPTIONS", action = ArgAction::Append)]
    pub options: Vec<String>,

    /// Permission bits of objects whose metadata holds no mode (octal)
    #[arg(long, default_value = "0644", value_parser = parse_mode_arg, value_name = "MODE")]
    pub file_mode: u16,

    /// Permission bits of directories whose marker holds no mode (octal)
    #[arg(long, default_value = "0755", value_parser = parse_mode_arg, value_name = "MODE")]
    pub dir_mode: u16,

    /// Owner of objects whose metadata names none [default: the mounting user]
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,

    /// Group of objects whose metadata names none [default: the mounting user's group]
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,

    /// Where multipart uploads in progress are recorded, so that the next mount or sync
    /// aborts those of a killed mount (default as for sync)
    #[arg(long, value_name = "DIR", env = "S3MIRROR_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,

    /// Stay in the foreground (by default the command returns once the bucket is mounted)
    #[arg(long)]
    pub foreground: bool,

    /// Part size of files written through the mount, uploaded in parts while written
    #[arg(long, default_value = "8MiB", value_parser = parse_size_arg, value_name = "SIZE")]
    pub part_size: u64,

    /// Debug logs with -vv
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Append the mount's messages to FILE
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Number of shards
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000), env = "S3MIRROR_SHARDS")]
    pub shards: u32,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub point_in_time: PointInTimeArgs,

    /// Prove content equality: hash local files against ETags, compare stored
    /// checksums (HeadObject) where ETags were made differently
    #[arg(long, env = "S3MIRROR_CHECKSUM", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub checksum: bool,
}

/// The state of the source that sync and verify read.
#[derive(Debug, Args)]
pub struct PointInTimeArgs {
    /// Read an S3 source as it was at TIME, in UTC (2026-11-29T00:00:00Z, or
    /// "2026-11-30 00:00:00"): each key's version current then, listed with
    /// ListObjectVersions; keys deleted then are absent. The bucket must be versioned
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg, env = "S3MIRROR_AS_OF")]
    pub as_of: Option<SystemTime>,
}

/// A UTC time: RFC 3339 with `Z` (or `+00:00`), or with a space for the `T` and no zone;
/// fractions of a second are allowed.
fn parse_time_arg(input: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(input.trim()).map_err(|err| {
        format!("{err}; give a UTC time such as 2026-11-29T00:00:00Z or \"2026-11-30 00:00:00\"")
    })
}

/// Interleaves the --include and --exclude values in the order they were given, which
/// clap's per-option lists lose.
fn ordered_patterns(matches: &ArgMatches) -> Vec<(Rule, String)> {
    let mut patterns: Vec<(usize, Rule, String)> = Vec::new();
    for (id, rule) in [("include", Rule::Include), ("exclude", Rule::Exclude)] {
        if let (Some(indices), Some(values)) =
            (matches.indices_of(id), matches.get_many::<String>(id))
        {
            patterns.extend(indices.zip(values).map(|(i, v)| (i, rule, v.clone())));
        }
    }
    patterns.sort_by_key(|(i, _, _)| *i);
    patterns.into_iter().map(|(_, rule, v)| (rule, v)).collect()
}

fn parse_size_arg(input: &str) -> Result<u64, String> {
    crate::units::parse_size(input).map_err(|err| err.to_string())
}

/// Endpoint, region and credentials, for both sides or for each side alone.
#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// S3 endpoint for both sides (e.g. http://127.0.0.1:3900); implies path-style addressing
    #[arg(long, value_name = "URL", env = "S3MIRROR_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// S3 endpoint of the source
    #[arg(long, value_name = "URL", env = "S3MIRROR_SOURCE_ENDPOINT_URL")]
    pub source_endpoint_url: Option<String>,
    /// S3 endpoint of the destination
    #[arg(long, value_name = "URL", env = "S3MIRROR_DEST_ENDPOINT_URL")]
    pub dest_endpoint_url: Option<String>,

    /// Region for both sides
    #[arg(long, env = "S3MIRROR_REGION")]
    pub region: Option<String>,
    /// Region of the source
    #[arg(long, env = "S3MIRROR_SOURCE_REGION")]
    pub source_region: Option<String>,
    /// Region of the destination
    #[arg(long, env = "S3MIRROR_DEST_REGION")]
    pub dest_region: Option<String>,

    /// Named profile (~/.aws/config) for both sides
    #[arg(long, env = "S3MIRROR_PROFILE")]
    pub profile: Option<String>,
    /// Named profile of the source
    #[arg(long, env = "S3MIRROR_SOURCE_PROFILE")]
    pub source_profile: Option<String>,
    /// Named profile of the destination
    #[arg(long, env = "S3MIRROR_DEST_PROFILE")]
    pub dest_profile: Option<String>,

    /// Use path-style addressing (automatic with a custom endpoint)
    #[arg(long, env = "S3MIRROR_FORCE_PATH_STYLE", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub force_path_style: bool,

    /// Retries of a failed request (throttling, 5xx, timeouts, dropped connections), with
    /// exponential backoff and full jitter; also how often an object whose bytes arrived
    /// cut short or damaged, or a file that changed while read, is copied again
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=100), env = "S3MIRROR_MAX_RETRIES")]
    pub max_retries: u32,
}

/// Permission bits in octal (`0644`, `755`).
fn parse_mode_arg(value: &str) -> Result<u16, String> {
    u16::from_str_radix(value.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("{value:?} is not a mode: give octal permission bits such as 0644"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_with_default(std::iter::once("s3mirror").chain(args.iter().copied()))
    }

    fn common(args: &[&str]) -> CommonArgs {
        match parse(args).unwrap().command {
            Command::Sync(sync) => sync.common,
            Command::Verify(verify) => verify.common,
            Command::Plan(plan) => plan.common,
            _ => panic!("{args:?} has no common options"),
        }
    }

    #[test]
    fn sync_is_the_default_subcommand() {
        for args in [
            &["a", "b"][..],
            &["sync", "a", "b"],
            &["--threads", "4", "a", "b"],
        ] {
            let Command::Sync(sync) = parse(args).unwrap().command else {
                panic!("{args:?} is not a sync");
            };
            assert_eq!(
                (sync.common.source.as_str(), sync.common.dest.as_str()),
                ("a", "b"),
                "{args:?}"
            );
        }
        let Command::Verify(verify) = parse(&["verify", "--checksum", "--include", "x", "a", "b"])
            .unwrap()
            .command
        else {
            panic!("not a verify");
        };
        assert!(verify.checksum);
        assert_eq!(verify.common.patterns, [(Rule::Include, "x".to_owned())]);
        assert!(parse(&["verify", "--delete", "a", "b"]).is_err());
    }

    #[test]
    fn parses_durations_and_counts() {
        let common = common(&["-vv", "--stats-interval", "1m 30s", "a", "b"]);
        assert_eq!(common.verbose, 2);
        assert_eq!(common.stats_interval, Duration::from_secs(90));
    }

    #[test]
    fn include_and_exclude_keep_their_order() {
        let args = [
            "--exclude",
            "*",
            "--include",
            "*.txt",
            "--exclude",
            "tmp/*",
            "a",
            "b",
        ];
        let sync = common(&args);
        let want = [
            (Rule::Exclude, "*"),
            (Rule::Include, "*.txt"),
            (Rule::Exclude, "tmp/*"),
        ];
        let got: Vec<_> = sync
            .patterns
            .iter()
            .map(|(r, p)| (*r, p.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    /// The options of `environment_sets_options_and_the_command_line_wins`, checked in a
    /// process of its own: the environment is the whole process's, and the other tests
    /// parse in parallel threads.
    #[test]
    fn environment_probe() {
        if std::env::var_os("S3MIRROR_TEST_ENVIRONMENT_PROBE").is_none() {
            return;
        }
        let Command::Sync(sync) = parse(&["--threads", "9"]).unwrap().command else {
            panic!("not a sync");
        };
        let common = &sync.common;
        assert_eq!((common.source.as_str(), common.dest.as_str()), ("a", "b"));
        assert_eq!(common.threads, 9, "the command line wins");
        assert_eq!(common.stats_interval, Duration::from_secs(120));
        assert_eq!(
            common.connection.endpoint_url.as_deref(),
            Some("http://127.0.0.1:3900")
        );
        assert_eq!(common.metrics_file.as_deref(), Some("/m.prom".as_ref()));
        assert_eq!(common.job_name, "nightly");
        assert!(common.json, "S3MIRROR_JSON=1");
        assert!(!common.quiet, "S3MIRROR_QUIET=false");
        assert!(
            sync.delete && sync.dry_run,
            "S3MIRROR_DELETE=true, S3MIRROR_DRY_RUN=yes"
        );
        assert_eq!(sync.max_delete, Some(5));
        assert_eq!(sync.part_size, 8 << 20);
        assert_eq!(sync.compare, CompareArg::Size);

        let Command::Sync(sync) = parse(&[]).unwrap().command else {
            panic!("no arguments but S3MIRROR_SOURCE: a sync");
        };
        assert_eq!(sync.common.threads, 300);

        let Command::Sync(sync) = parse(&["x", "y", "--compare", "etag"]).unwrap().command else {
            panic!("not a sync");
        };
        assert_eq!(
            (sync.common.source.as_str(), sync.common.dest.as_str()),
            ("x", "y")
        );
        assert_eq!(sync.compare, CompareArg::Etag);
        let Command::Verify(verify) = parse(&["verify"]).unwrap().command else {
            panic!("not a verify");
        };
        assert!(verify.checksum, "S3MIRROR_CHECKSUM=on");
    }

    #[test]
    fn environment_sets_options_and_the_command_line_wins() {
        let vars = [
            ("S3MIRROR_SOURCE", "a"),
            ("S3MIRROR_DEST", "b"),
            ("S3MIRROR_THREADS", "300"),
            ("S3MIRROR_STATS_INTERVAL", "2m"),
            ("S3MIRROR_ENDPOINT_URL", "http://127.0.0.1:3900"),
            ("S3MIRROR_METRICS_FILE", "/m.prom"),
            ("S3MIRROR_JOB_NAME", "nightly"),
            ("S3MIRROR_JSON", "1"),
            ("S3MIRROR_QUIET", "false"),
            ("S3MIRROR_DELETE", "true"),
            ("S3MIRROR_DRY_RUN", "yes"),
            ("S3MIRROR_MAX_DELETE", "5"),
            ("S3MIRROR_PART_SIZE", "8MiB"),
            ("S3MIRROR_COMPARE", "size"),
            ("S3MIRROR_CHECKSUM", "on"),
        ];
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cli::tests::environment_probe", "--nocapture"])
            .env("S3MIRROR_TEST_ENVIRONMENT_PROBE", "1")
            .envs(vars)
            .output()
            .unwrap();
        let output = String::from_utf8_lossy(&child.stdout).into_owned()
            + &String::from_utf8_lossy(&child.stderr);
        assert!(child.status.success(), "{output}");
        assert!(output.contains("1 passed"), "the probe ran: {output}");

        let bad = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cli::tests::environment_probe"])
            .env("S3MIRROR_TEST_ENVIRONMENT_PROBE", "1")
            .envs(vars)
            .env("S3MIRROR_DELETE", "perhaps")
            .output()
            .unwrap();
        assert!(!bad.status.success(), "a flag's value must be a boolean");
    }

    #[test]
    fn help_lists_the_environment_variables() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("sync")
            .unwrap()
            .render_long_help()
            .to_string();
        for var in [
            "S3MIRROR_THREADS",
            "S3MIRROR_ENDPOINT_URL",
            "S3MIRROR_DELETE",
        ] {
            assert!(help.contains(&format!("[env: {var}=")), "{var} in {help}");
        }
    }

    #[test]
    fn as_of_reads_utc_times_in_both_spellings() {
        let as_of = |args: &[&str]| match parse(args).unwrap().command {
            Command::Sync(sync) => sync.point_in_time.as_of,
            Command::Verify(verify) => verify.point_in_time.as_of,
            _ => panic!("{args:?} has no --as-of"),
        };
        let midnight = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_910_400);
        assert_eq!(
            as_of(&["--as-of", "2026-11-29T00:00:00Z", "s3://b", "d"]),
            Some(midnight)
        );
        assert_eq!(
            as_of(&["verify", "--as-of", "2026-11-29 00:00:00", "s3://b", "d"]),
            Some(midnight)
        );
        assert_eq!(
            as_of(&["--as-of", "2026-11-29T00:00:01.5Z", "s3://b", "d"]),
            Some(midnight + Duration::from_millis(1_500))
        );
        assert_eq!(as_of(&["s3://b", "d"]), None);
        for bad in ["yesterday", "2026-11-29", "2026-11-29T00:00:00+01:00"] {
            let err = parse(&["--as-of", bad, "s3://b", "d"])
                .unwrap_err()
                .to_string();
            assert!(err.contains("such as 2026-11-29T00:00:00Z"), "{bad}: {err}");
        }
        assert!(parse(&[
            "plan",
            "--shards",
            "2",
            "--as-of",
            "2026-11-29T00:00:00Z",
            "s3://b",
            "d"
        ])
        .is_err());
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse(&["a"]).is_err());
        assert!(parse(&["--stats-interval", "soon", "a", "b"]).is_err());
        assert!(parse(&["--compare", "crc", "a", "b"]).is_err());
        assert!(parse(&["-q", "-v", "a", "b"]).is_err());
        assert!(
            parse(&["--max-delete", "5", "a", "b"]).is_err(),
            "needs --delete"
        );
        assert!(parse(&["--min-size", "big", "a", "b"]).is_err());
    }
}
