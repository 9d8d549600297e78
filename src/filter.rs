//! Which keys a run considers: `--include`/`--exclude` globs on the key relative to the
//! prefix (the last matching pattern wins, as in the AWS CLI), and size and age limits.
//!
//! Invariant: a key the filters reject is invisible on both sides: it is neither copied
//! nor deleted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use globset::{Glob, GlobMatcher};

use crate::storage::Entry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Include,
    Exclude,
}

#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("invalid pattern {pattern:?}: {cause}")]
    Invalid { pattern: String, cause: String },
    /// An include before every exclude: every key is included already, so it leaves
    /// nothing out, though a user of rclone would expect it to.
    #[error(
        "--include {0:?} comes before any --exclude, so it leaves no key out (every key is \
         included unless an --exclude leaves it out, and the last matching pattern wins, as in \
         the AWS CLI); to take only the keys it matches, put --exclude '*' before it"
    )]
    IncludeFirst(String),
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    patterns: Vec<(Rule, GlobMatcher)>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Entries modified longer ago than this are left out.
    pub max_age: Option<Duration>,
    /// Entries modified more recently than this are left out.
    pub min_age: Option<Duration>,
    /// `--files-from`: only these keys.
    pub only: Option<Arc<HashSet<String>>>,
}

impl Filters {
    /// Adds patterns in command-line order. `*` matches any characters, `/` included.
    /// An include that comes before every exclude is refused: it would change nothing.
    pub fn with_patterns<'a>(
        mut self,
        rules: impl IntoIterator<Item = (Rule, &'a str)>,
    ) -> Result<Self, PatternError> {
        for (rule, pattern) in rules {
            let excluding = self.patterns.iter().any(|(rule, _)| *rule == Rule::Exclude);
            if rule == Rule::Include && !excluding {
                return Err(PatternError::IncludeFirst(pattern.to_owned()));
            }
            let glob = Glob::new(pattern).map_err(|err| PatternError::Invalid {
                pattern: pattern.to_owned(),
                cause: err.kind().to_string(),
            })?;
            self.patterns.push((rule, glob.compile_matcher()));
        }
        Ok(self)
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
            && self.min_size.is_none()
            && self.max_size.is_none()
            && self.max_age.is_none()
            && self.min_age.is_none()
            && self.only.is_none()
    }

    /// Whether the key list and the patterns let this relative key through.
    pub fn key_selected(&self, key: &str) -> bool {
        if self.only.as_ref().is_some_and(|only| !only.contains(key)) {
            return false;
        }
        self.patterns
            .iter()
            .rev()
            .find(|(_, matcher)| matcher.is_match(key))
            .is_none_or(|(rule, _)| *rule == Rule::Include)
    }

    /// Whether the patterns, size and age limits let this entry through.
    pub fn selects(&self, entry: &Entry, now: SystemTime) -> bool {
        if !self.key_selected(&entry.key) {
            return false;
        }
        if self.min_size.is_some_and(|min| entry.size < min)
            || self.max_size.is_some_and(|max| entry.size > max)
        {
            return false;
        }
        let age = now.duration_since(entry.mtime).unwrap_or(Duration::ZERO);
        !(self.max_age.is_some_and(|max| age > max) || self.min_age.is_some_and(|min| age < min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn filters(rules: &[(Rule, &str)]) -> Filters {
        Filters::default()
            .with_patterns(rules.iter().copied())
            .unwrap()
    }

    #[test]
    fn the_last_matching_pattern_wins() {
        use Rule::*;
        let f = filters(&[(Exclude, "*"), (Include, "*.txt"), (Exclude, "tmp/*")]);
        assert!(f.key_selected("a.txt"));
        assert!(f.key_selected("deep/dir/b.txt"), "* crosses /");
        assert!(!f.key_selected("tmp/c.txt"));
        assert!(!f.key_selected("d.jpg"));
        assert!(filters(&[]).key_selected("anything"));
        assert!(!filters(&[(Exclude, "logs/*")]).key_selected("logs/2024/x"));
        assert!(filters(&[(Exclude, "[ab]?.log")]).key_selected("c1.log"));
    }

    #[test]
    fn size_and_age_limits() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let entry = |size, age_secs| Entry {
            key: "k".into(),
            size,
            mtime: now - Duration::from_secs(age_secs),
            etag: None,
            skip: None,
            storage_class: None,
            version: None,
        };
        let f = Filters {
            min_size: Some(10),
            max_size: Some(100),
            max_age: Some(Duration::from_secs(3600)),
            min_age: Some(Duration::from_secs(60)),
            ..Filters::default()
        };
        assert!(f.selects(&entry(50, 600), now));
        assert!(!f.selects(&entry(5, 600), now), "too small");
        assert!(!f.selects(&entry(500, 600), now), "too large");
        assert!(!f.selects(&entry(50, 7200), now), "too old");
        assert!(!f.selects(&entry(50, 10), now), "too recent");
    }

    #[test]
    fn invalid_patterns_are_errors() {
        let err = Filters::default()
            .with_patterns([(Rule::Exclude, "a[")])
            .unwrap_err();
        assert!(err.to_string().contains("invalid pattern \"a[\""), "{err}");
    }

    #[test]
    fn an_include_before_every_exclude_is_refused_with_the_fix() {
        use Rule::*;
        for rules in [
            &[(Include, "*.jpg")][..],
            &[(Include, "a/*"), (Exclude, "*")],
        ] {
            let err = Filters::default()
                .with_patterns(rules.iter().copied())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("--include \""), "{err}");
            assert!(err.contains("put --exclude '*' before it"), "{err}");
        }
        let f = filters(&[(Exclude, "*"), (Include, "*.jpg")]);
        assert!(f.key_selected("a.jpg") && !f.key_selected("a.png"));
    }
}
