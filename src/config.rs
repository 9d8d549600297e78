//! Validated settings, built once from the command line. The rest of the crate reads
//! these types and never clap's.

use std::path::Path;

use crate::cli::{CompareArg, ConnectionArgs, SyncArgs};
use crate::location::{Location, LocationError};
use crate::plan::CompareMode;
use crate::storage::s3::ClientSettings;
use crate::ui::{OutputSettings, Verbosity};

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
    #[error("{option} {value:?} is not an http:// or https:// URL")]
    EndpointUrl { option: &'static str, value: String },
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
    pub dry_run: bool,
    pub compare: CompareMode,
    pub output: OutputSettings,
}

impl SyncSettings {
    pub fn from_args(args: SyncArgs) -> Result<Self, SettingsError> {
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
        let (source_client, dest_client) = client_settings(&args.connection)?;
        check_overlap(&source, &source_client, &dest, &dest_client)?;
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
            dry_run: args.dry_run,
            compare: match args.compare {
                CompareArg::Auto => CompareMode::Auto,
                CompareArg::Size => CompareMode::Size,
                CompareArg::Mtime => CompareMode::Mtime,
                CompareArg::Etag => CompareMode::Etag,
            },
            output: OutputSettings {
                verbosity,
                stats_interval: args.stats_interval,
            },
        })
    }
}

fn client_settings(
    args: &ConnectionArgs,
) -> Result<(ClientSettings, ClientSettings), SettingsError> {
    let endpoint =
        |option: &'static str, value: &Option<String>| -> Result<Option<String>, SettingsError> {
            match value {
                Some(url)
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || url.len() <= "https://".len() =>
                {
                    Err(SettingsError::EndpointUrl {
                        option,
                        value: url.clone(),
                    })
                }
                other => Ok(other.clone()),
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
        }
    };
    Ok((
        side(source_endpoint, &args.source_region, &args.source_profile),
        side(dest_endpoint, &args.dest_region, &args.dest_profile),
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn settings(args: &[&str]) -> Result<SyncSettings, SettingsError> {
        let cli = Cli::parse_with_default(std::iter::once("s3mirror").chain(args.iter().copied()))
            .unwrap();
        let Command::Sync(sync) = cli.command;
        SyncSettings::from_args(sync)
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
        let cases: [(&[&str], &str); 6] = [
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
        ];
        for (args, want) in cases {
            let err = settings(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn sibling_prefixes_do_not_overlap() {
        assert!(settings(&["s3://bkt/a", "s3://bkt/ab"]).is_ok());
        assert!(settings(&["s3://bkt/a", "s3://other/a"]).is_ok());
    }
}
