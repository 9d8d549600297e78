//! Where to cut what is left of a span that turned out long: on the next character, as
//! the keys of its last page reveal the key space.
//!
//! After a full page ending at key `last`, the rest of the span falls apart, depth by depth,
//! into the keys that share `last`'s first d characters and have a greater (d+1)-th one:
//! after `f0000999` come `f00009` + more, then `f0000` + a character above `9`, then
//! `f000` + one above `0`, and so on up to the span's prefix. Each of those is a span
//! whose listing ends exactly where its keys end (its prefix, or a prefix and a start), so
//! no request reads past it. Near the depths where the page's keys differ, and at the
//! span's own first level, the keys are split further by each character the page used
//! there (`f0001`, ..., `f0009`), with a one-key probe for the characters between, or by
//! groups of characters where the page shows few keys to each; elsewhere a depth is one
//! span, which is split in turn once its own first page shows it is long.
//!
//! Any cut is exact: the pieces hold every key of the rest once and in order, whatever
//! the keys are. The characters guessed decide only how many requests the listing takes.

use super::span::{next_char, Lower, Span};

/// Keys a page must hold to tell where a span's keys differ.
pub(super) const SAMPLE_MIN: usize = 100;
/// Characters read from each key, from the depth where the page's keys begin to differ.
const ALPHABET_DEPTH: usize = 3;
/// Characters split on at one depth at most.
const ALPHABET_LIMIT: usize = 64;
/// Keys a page holds at most.
const PAGE: f64 = 1_000.0;
/// Keys wanted in a piece that groups several characters (its last request may read a
/// page past it, which a piece of one character never does).
const GROUP_TARGET: f64 = 3.0 * PAGE;

/// What a full page tells about the keys after it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    last: String,
    /// Characters the page's first and last keys share.
    common: usize,
    /// Characters the keys hold where they begin to differ, in order.
    alphabet: Vec<char>,
    /// About how many keys start with each character at depth `common`.
    keys_per_char: f64,
}

impl Sample {
    /// What `keys` (in key order) tell, if there are enough of them.
    pub fn of(keys: &[&str]) -> Option<Self> {
        let (first, last) = (keys.first()?, keys.last()?);
        if keys.len() < SAMPLE_MIN {
            return None;
        }
        let common = first
            .chars()
            .zip(last.chars())
            .take_while(|(a, b)| a == b)
            .count();
        let mut ascii: u128 = 0;
        let mut others = Vec::new();
        for c in keys
            .iter()
            .flat_map(|key| key.chars().skip(common).take(ALPHABET_DEPTH))
        {
            match u8::try_from(c) {
                Ok(byte) if byte.is_ascii() => ascii |= 1 << byte,
                _ => others.push(c),
            }
        }
        others.sort_unstable();
        others.dedup();
        let mut alphabet: Vec<char> = (0..128u8)
            .filter(|byte| ascii & (1 << byte) != 0)
            .map(char::from)
            .chain(others)
            .collect();
        if alphabet.len() > ALPHABET_LIMIT {
            alphabet = (0..ALPHABET_LIMIT)
                .map(|i| alphabet[i * alphabet.len() / ALPHABET_LIMIT])
                .collect();
        }
        // The page's keys spread over the characters from its first key's to its last's.
        let (low, high) = (first.chars().nth(common), last.chars().nth(common));
        let spread = alphabet
            .iter()
            .filter(|&&c| Some(c) >= low && Some(c) <= high)
            .count()
            .max(1);
        Some(Self {
            last: (*last).to_owned(),
            common,
            keys_per_char: keys.len() as f64 / spread as f64,
            alphabet,
        })
    }

    pub fn last(&self) -> &str {
        &self.last
    }

    /// How many characters at `depth` one piece should take, for it to hold about a few
    /// pages: one when each character starts enough keys for a page of its own. Keys are
    /// taken to spread over the alphabet alike at every depth.
    fn group_at(&self, depth: usize) -> usize {
        let levels = self.common.saturating_sub(depth).min(16) as i32;
        let per_char = self.keys_per_char * (self.alphabet.len() as f64).powi(levels);
        if per_char >= PAGE / 2.0 {
            return 1;
        }
        (GROUP_TARGET / per_char).ceil() as usize
    }
}

/// A span cut after its sample: it keeps the keys below `narrowed` (a longer prefix), and
/// the rest is in `after`, in key order.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Split {
    pub narrowed: String,
    pub after: Vec<Span>,
}

/// Cuts what is left of `span`, which has been listed up to `sample.last()`. None when the
/// sample cannot tell (its keys differ in the span's prefix, which a span's keys cannot).
pub(super) fn split(span: &Span, sample: &Sample) -> Option<Split> {
    let last = sample.last.as_str();
    let chars: Vec<(usize, char)> = last.char_indices().collect();
    let own_depth = span.prefix.chars().count();
    let deepest = sample.common;
    if deepest < own_depth || deepest >= chars.len() {
        return None;
    }
    let stem = |depth: usize| &last[..chars.get(depth).map_or(last.len(), |&(at, _)| at)];
    let mut after = Vec::new();
    for depth in (own_depth..=deepest).rev() {
        // By character near where the page's keys differ and at the span's first level;
        // elsewhere the keys the page says nothing about: one span.
        let by_character = depth + 1 >= deepest || depth == own_depth;
        let alphabet: &[char] = if by_character { &sample.alphabet } else { &[] };
        after.extend(pieces_above(
            span.delimited,
            stem(depth),
            chars[depth].1,
            alphabet,
            sample.group_at(depth),
        ));
    }
    if let Some(upper) = &span.upper {
        after.retain(|piece| piece.lowest() < upper.as_str());
        for piece in &mut after {
            if piece.upper.as_ref().is_none_or(|own| own > upper) {
                piece.upper = Some(upper.clone());
            }
        }
    }
    Some(Split {
        narrowed: stem(deepest + 1).to_owned(),
        after,
    })
}

/// The spans of the keys that start with `base` and a character above `above`, in key
/// order: a span for each character of `alphabet` above it (the characters between them
/// probed), or for each `group` of them, and one for the characters above the last; with
/// no alphabet, one span.
fn pieces_above(
    delimited: bool,
    base: &str,
    above: char,
    alphabet: &[char],
    group: usize,
) -> Vec<Span> {
    let span = |prefix: String, from: char, upper: Option<char>| Span {
        lower: Lower::From(format!("{base}{from}")),
        upper: upper.map(|upper| format!("{base}{upper}")),
        prefix,
        delimited,
        probe: false,
    };
    let above_chars: Vec<char> = alphabet.iter().copied().filter(|&c| c > above).collect();
    let mut pieces = Vec::new();
    // The first character no piece holds yet.
    let mut next = next_char(above);
    if group > 1 {
        for &bound in above_chars.iter().skip(group).step_by(group) {
            let Some(from) = next else { break };
            pieces.push(span(base.to_owned(), from, Some(bound)));
            next = Some(bound);
        }
    } else {
        for &c in &above_chars {
            let Some(from) = next else { break };
            if from < c {
                pieces.push(Span {
                    probe: true,
                    ..span(base.to_owned(), from, Some(c))
                });
            }
            pieces.push(span(format!("{base}{c}"), c, None));
            next = next_char(c);
        }
    }
    if let Some(from) = next {
        pieces.push(span(base.to_owned(), from, None));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(keys: &[String]) -> Sample {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        Sample::of(&keys).expect("enough keys")
    }

    fn everything_after(last: &str) -> Span {
        Span {
            prefix: String::new(),
            lower: Lower::After(last.to_owned()),
            upper: None,
            delimited: true,
            probe: false,
        }
    }

    /// A piece as `prefix [from, upper)`, for reading a split at a glance.
    fn shown(piece: &Span) -> String {
        let Lower::From(from) = &piece.lower else {
            unreachable!("pieces start from a key")
        };
        let upper = piece.upper.as_deref().unwrap_or("");
        format!("{} [{from}, {upper})", piece.prefix)
    }

    #[test]
    fn numbered_keys_split_by_digit_near_where_they_differ() {
        let page: Vec<String> = (0..1000).map(|i| format!("f{i:07}")).collect();
        let cut = split(&everything_after("f0000999"), &sample(&page)).unwrap();
        assert_eq!(cut.narrowed, "f00009");
        let shown: Vec<String> = cut.after.iter().map(shown).collect();
        let mut want = vec!["f0000 [f0000:, )".to_owned()];
        want.extend((1..=9).map(|d| format!("f000{d} [f000{d}, )")));
        want.extend(
            [
                "f000 [f000:, )",
                // Depths where the page's keys agree: one span each, split once listed.
                "f00 [f001, )",
                "f0 [f01, )",
                "f [f1, )",
                // The span's own first level: no character of the page is above `f`.
                " [g, )",
            ]
            .map(String::from),
        );
        assert_eq!(shown, want);
        assert!(cut.after.iter().all(|piece| piece.delimited));
    }

    fn hex() -> Vec<char> {
        ('0'..='9').chain('a'..='f').collect()
    }

    #[test]
    fn characters_between_those_the_page_used_are_probed() {
        // Below `x/`, listed up to `x/8f`, many keys to each first character.
        let sample = Sample {
            last: "x/8f".into(),
            common: 2,
            alphabet: hex(),
            keys_per_char: 800.0,
        };
        let span = Span {
            prefix: "x/".into(),
            delimited: false,
            ..everything_after("x/8f")
        };
        let cut = split(&span, &sample).unwrap();
        assert_eq!(cut.narrowed, "x/8");
        let shown: Vec<String> = cut.after.iter().map(shown).collect();
        let mut want = vec!["x/9 [x/9, )".to_owned(), "x/ [x/:, x/a)".to_owned()];
        want.extend(('a'..='f').map(|c| format!("x/{c} [x/{c}, )")));
        want.push("x/ [x/g, )".to_owned());
        assert_eq!(shown, want);
        assert!(cut.after[1].probe && !cut.after[0].probe && !cut.after[2].probe);
    }

    #[test]
    fn characters_with_few_keys_each_are_grouped() {
        let sample = Sample {
            last: "x/5f".into(),
            common: 2,
            alphabet: hex(),
            keys_per_char: 400.0,
        };
        let span = Span {
            prefix: "x/".into(),
            ..everything_after("x/5f")
        };
        let cut = split(&span, &sample).unwrap();
        let shown: Vec<String> = cut.after.iter().map(shown).collect();
        assert_eq!(shown, ["x/ [x/6, x/e)", "x/ [x/e, )"]);
        assert!(cut.after.iter().all(|piece| !piece.probe));
    }

    #[test]
    fn a_page_tells_how_many_keys_start_with_each_character() {
        // 1,000 keys over 4 of 16 hex digits: 250 to each.
        let page: Vec<String> = (0..1000).map(|i| format!("{:04x}", i * 16)).collect();
        let sample = sample(&page);
        assert_eq!((sample.common, sample.alphabet.clone()), (0, hex()));
        assert_eq!(sample.keys_per_char, 250.0);
        assert_eq!(sample.group_at(0), 12);
        // A level up, each character starts 16 times as many.
        let deeper = Sample {
            common: 1,
            ..sample
        };
        assert_eq!(deeper.group_at(0), 1);
    }

    /// Keys of every kind, with keys that are prefixes of each other.
    fn universe() -> Vec<String> {
        let alphabet = [
            'a',
            'b',
            'z',
            '0',
            '9',
            '/',
            '-',
            '\u{1}',
            '\0',
            'é',
            '日',
            '\u{10FFFF}',
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut keys: Vec<String> = ["", "a", "a0", "a\u{1}", "a/", "ab", "b", "é"]
            .map(String::from)
            .to_vec();
        while keys.len() < 6_000 {
            let len = 1 + (next() % 7) as usize;
            let key: String = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            keys.push(key);
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Splits `span` after the `SAMPLE_MIN` keys it holds from `skip` on, checks that the
    /// pieces hold every key of the rest once and in order, and returns them.
    fn checked_split(keys: &[String], span: &Span, skip: usize) -> Vec<Span> {
        let held: Vec<&String> = keys.iter().filter(|key| span.holds(key)).collect();
        let Some(page) = held.get(skip..skip + SAMPLE_MIN) else {
            return Vec::new();
        };
        let page: Vec<String> = page.iter().map(|key| key.to_string()).collect();
        let sample = sample(&page);
        let listed = Span {
            lower: Lower::After(sample.last().to_owned()),
            ..span.clone()
        };
        let Some(cut) = split(&listed, &sample) else {
            return Vec::new();
        };
        let mut pieces = vec![Span {
            prefix: cut.narrowed.clone(),
            ..listed.clone()
        }];
        pieces.extend(cut.after);
        let mut last_piece = 0;
        for key in keys {
            let owners: Vec<usize> = (0..pieces.len())
                .filter(|&i| pieces[i].holds(key))
                .collect();
            let in_rest = listed.holds(key);
            assert_eq!(owners.len(), usize::from(in_rest), "{key:?} in {owners:?}");
            if let Some(&owner) = owners.first() {
                assert!(owner >= last_piece, "{key:?} out of order");
                last_piece = owner;
            }
        }
        pieces
    }

    #[test]
    fn the_pieces_hold_every_key_of_the_rest_once_and_in_order() {
        let keys = universe();
        let everything = Span::of_range(&Default::default());
        let bounded = Span {
            upper: Some("b\u{1}".into()),
            ..everything.clone()
        };
        for span in [everything, bounded] {
            for skip in [0, 7, 500, 2_000, 4_000] {
                // And the pieces of the pieces.
                for piece in checked_split(&keys, &span, skip) {
                    checked_split(&keys, &piece, 0);
                }
            }
        }
    }
}
