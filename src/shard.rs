//! `--shard K/N`: one of N processes that together mirror the whole key space, each a
//! contiguous range of keys, so that each lists only about 1/N of it too.
//!
//! The ranges come from N-1 boundary keys, chosen evenly among the source's top levels
//! (a delimiter listing, descending while there are too few names to split). Every shard
//! computes them the same way from the same listing; where the source's top levels may
//! change while the shards start, `s3mirror plan --shards N` writes them to a file once
//! and every shard reads that file (`--shard-boundaries`), so the ranges are the same by
//! construction.

use std::future::Future;

use crate::storage::KeyRange;

/// Environment variables that hold the index of a task in the engines that run arrays
/// of them: Kubernetes Indexed Jobs, AWS Batch array jobs, Slurm job arrays.
pub const INDEX_VARIABLES: [&str; 3] = [
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
    "SLURM_ARRAY_TASK_ID",
];

/// Split points wanted per shard before the search for them stops descending.
const POINTS_PER_SHARD: usize = 4;
/// Levels below the location that the search descends at most.
const MAX_DEPTH: usize = 3;
/// Names read from one level at most.
pub const LEVEL_LIMIT: usize = 10_000;

/// This process's shard: `index` of `count`, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `K/N`, or `N` with K from the first of `INDEX_VARIABLES` that is set.
    pub fn parse(spec: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |text: &str, what: &str| {
            text.trim()
                .parse::<usize>()
                .map_err(|_| format!("--shard {spec:?}: {what} {text:?} is not a number"))
        };
        let (index, count) = match spec.split_once('/') {
            Some((index, count)) => (number(index, "the index")?, number(count, "the count")?),
            None => {
                let count = number(spec, "the count")?;
                let Some((name, value)) = INDEX_VARIABLES
                    .iter()
                    .find_map(|name| env(name).map(|value| (name, value)))
                else {
                    return Err(format!(
                        "--shard {spec}: no shard index; give it as --shard K/{count}, or run \
                         where one of {} is set",
                        INDEX_VARIABLES.join(", ")
                    ));
                };
                let index = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("--shard {spec}: {name}={value:?} is not a number"))?;
                (index, count)
            }
        };
        if count == 0 || index >= count {
            return Err(format!(
                "--shard {spec}: the index must be from 0 to the count minus one (0/{count} to {}/{count})",
                count.saturating_sub(1)
            ));
        }
        Ok(Self { index, count })
    }

    /// The keys of this shard: from its boundary (the first has none) to the next one
    /// (the last has none). With fewer boundaries than shards (too few names to split
    /// on), the shards past the last boundary have no keys.
    pub fn range(&self, boundaries: &[String]) -> KeyRange {
        if self.index > boundaries.len() {
            let last = boundaries.last().cloned().unwrap_or_default();
            return KeyRange {
                start: Some(last.clone()),
                end: Some(last),
            };
        }
        KeyRange {
            start: self
                .index
                .checked_sub(1)
                .and_then(|i| boundaries.get(i))
                .cloned(),
            end: boundaries.get(self.index).cloned(),
        }
    }
}

/// N-1 increasing boundaries for `count` shards. `level(prefix)` lists the names right
/// below a relative prefix (keys, and prefixes ending in `/`) in key order.
pub async fn boundaries<F, Fut>(count: usize, level: F) -> Result<Vec<String>, String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Vec<String>, String>>,
{
    let mut points = level(String::new()).await?;
    for _ in 1..MAX_DEPTH {
        if points.len() >= count * POINTS_PER_SHARD {
            break;
        }
        let mut deeper = Vec::new();
        for point in &points {
            let children = match point.ends_with('/') {
                true => level(point.clone()).await?,
                false => Vec::new(),
            };
            match children.is_empty() {
                true => deeper.push(point.clone()),
                false => deeper.extend(children),
            }
        }
        if deeper.len() == points.len() {
            break;
        }
        points = deeper;
    }
    // A boundary is written one per line, so a name with a line break cannot be one.
    points.retain(|p| !p.contains(['\n', '\r']));
    let mut chosen: Vec<String> = Vec::new();
    for i in 1..count {
        let Some(point) = points.get(i * points.len() / count) else {
            break;
        };
        if chosen.last().is_none_or(|last| point > last) && !point.is_empty() {
            chosen.push(point.clone());
        }
    }
    Ok(chosen)
}

/// Boundaries as `plan` writes them: one key per line.
pub fn parse_boundaries(text: &str) -> Result<Vec<String>, String> {
    let keys: Vec<String> = text
        .lines()
        .map(|line| line.strip_suffix('\r').unwrap_or(line).to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    if keys.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err("the boundaries are not in increasing key order".to_owned());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn the_index_comes_from_the_spec_or_the_engine() {
        let none = env(&[]);
        assert_eq!(Shard::parse("2/4", &none), Ok(Shard { index: 2, count: 4 }));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(Shard::parse("4", &k8s), Ok(Shard { index: 3, count: 4 }));
        let batch = env(&[("AWS_BATCH_JOB_ARRAY_INDEX", "0")]);
        assert_eq!(Shard::parse("2", &batch), Ok(Shard { index: 0, count: 2 }));
        let slurm = env(&[("SLURM_ARRAY_TASK_ID", "1")]);
        assert_eq!(Shard::parse("2", &slurm), Ok(Shard { index: 1, count: 2 }));
        for (spec, vars, why) in [
            ("4/4", none_vars(), "from 0 to the count minus one"),
            ("0/0", none_vars(), "from 0 to the count minus one"),
            ("a/4", none_vars(), "the index \"a\" is not a number"),
            ("4", none_vars(), "no shard index"),
            (
                "4",
                vec![("SLURM_ARRAY_TASK_ID", "x")],
                "SLURM_ARRAY_TASK_ID=\"x\"",
            ),
        ] {
            let err = Shard::parse(spec, env(&vars)).unwrap_err();
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    fn none_vars() -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    #[test]
    fn ranges_are_contiguous_and_cover_everything() {
        let bounds = vec!["b/".to_owned(), "m".to_owned()];
        let ranges: Vec<KeyRange> = (0..3)
            .map(|index| Shard { index, count: 3 }.range(&bounds))
            .collect();
        for key in ["", "a", "b/", "b/x", "l", "m", "z/deep"] {
            let holders = ranges.iter().filter(|r| r.contains(key)).count();
            assert_eq!(holders, 1, "{key:?}");
        }
        // Fewer boundaries than shards: the extra shards hold nothing.
        for bounds in [vec![], vec!["m".to_owned()]] {
            let ranges: Vec<KeyRange> = (0..4)
                .map(|index| Shard { index, count: 4 }.range(&bounds))
                .collect();
            for key in ["", "a", "m", "z"] {
                let holders = ranges.iter().filter(|r| r.contains(key)).count();
                assert_eq!(holders, 1, "{key:?} with {bounds:?}");
            }
        }
    }

    #[tokio::test]
    async fn boundaries_descend_until_there_is_enough_to_split() {
        // One top-level prefix holding 40 "directories" of 3 keys each.
        let level = |prefix: String| async move {
            Ok::<_, String>(match prefix.as_str() {
                "" => vec!["data/".to_owned()],
                "data/" => (0..40).map(|i| format!("data/{i:02}/")).collect(),
                p => (0..3).map(|i| format!("{p}{i}")).collect(),
            })
        };
        let bounds = boundaries(4, level).await.unwrap();
        assert_eq!(bounds.len(), 3);
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        assert_eq!(bounds[0], "data/10/");
        assert_eq!(parse_boundaries(&bounds.join("\n")), Ok(bounds));
        assert!(parse_boundaries("b\na").is_err());
        // Too little to split: fewer boundaries (some shards are empty), never repeated.
        let tiny = |_prefix: String| async { Ok::<_, String>(vec!["only".to_owned()]) };
        assert_eq!(boundaries(4, tiny).await.unwrap(), ["only"]);
    }
}
