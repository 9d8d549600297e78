//! What a downloaded object's bytes must hash to, as far as the server lets anyone know,
//! so that a download damaged on the way is caught before it reaches its final name.

use super::checksum::{HashKind, Hasher, PartHasher};
use super::local::{DigestRequest, Digests};
use super::{Checksum, ETag};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Nothing to check against: an SSE-KMS or SSE-C ETag without a recorded MD5, or a
    /// multipart ETag whose part layout is unknown. Only the length is checked.
    Unknown,
    /// The MD5 of the whole content: a plain ETag, or the `md5chksum` recorded at upload.
    Md5 {
        digest: [u8; 16],
        from: &'static str,
    },
    /// A multipart ETag, and the part size that produced it.
    PartMd5s { etag: ETag, part_size: u64 },
    /// An additional checksum: of the whole object, or of parts of `part_size`.
    Checksum {
        checksum: Checksum,
        part_size: Option<u64>,
    },
}

impl Expected {
    /// What the object's plain or multipart ETag promises, with the part size for a
    /// multipart one when it is known.
    pub fn from_etag(etag: &ETag, part_size: Option<u64>) -> Self {
        if etag.is_plain_md5() {
            let mut digest = [0; 16];
            if hex::decode_to_slice(etag.as_str(), &mut digest).is_ok() {
                return Expected::Md5 {
                    digest,
                    from: "ETag",
                };
            }
        }
        match (etag.parts(), part_size) {
            (Some(_), Some(part_size)) if part_size > 0 => Expected::PartMd5s {
                etag: etag.clone(),
                part_size,
            },
            _ => Expected::Unknown,
        }
    }

    /// Whether the promise is about parts, so that only bytes cut the same way (a
    /// stream checked as it is cut into parts) can be checked against it.
    pub fn needs_parts(&self) -> bool {
        matches!(
            self,
            Expected::PartMd5s { .. }
                | Expected::Checksum {
                    part_size: Some(_),
                    ..
                }
        )
    }

    /// What to compute over the written file, or `None` when there is nothing to check.
    pub fn request(&self) -> Option<DigestRequest> {
        let (kind, part_sizes) = match self {
            Expected::Unknown => return None,
            Expected::Md5 { .. } => (HashKind::Md5, vec![]),
            Expected::PartMd5s { part_size, .. } => (HashKind::Md5, vec![*part_size]),
            Expected::Checksum {
                checksum,
                part_size,
            } => (
                HashKind::Checksum(checksum.algorithm),
                part_size.iter().copied().collect(),
            ),
        };
        Some(DigestRequest::parts(kind, part_sizes))
    }

    /// Compares digests computed as `request` asked with what the server promised; the
    /// error says what differed.
    pub fn check(&self, digests: &Digests) -> Result<(), String> {
        let (expected, got) = match self {
            Expected::Unknown => return Ok(()),
            Expected::Md5 { digest, from } => {
                if digests.whole == digest {
                    return Ok(());
                }
                (
                    format!("{from} MD5 {}", hex::encode(digest)),
                    hex::encode(&digests.whole),
                )
            }
            Expected::PartMd5s { etag, .. } => {
                let got = ETag::multipart(digests.parts.first().map_or(&[][..], |p| p));
                if got == *etag {
                    return Ok(());
                }
                (format!("ETag {etag}"), got.to_string())
            }
            Expected::Checksum {
                checksum,
                part_size,
            } => {
                let got = match part_size {
                    None => Checksum::full(checksum.algorithm, &digests.whole),
                    Some(_) => Checksum::composite(
                        checksum.algorithm,
                        digests.parts.first().map_or(&[][..], |p| p),
                    ),
                };
                if got == *checksum {
                    return Ok(());
                }
                (format!("checksum {checksum}"), got.to_string())
            }
        };
        Err(format!(
            "the bytes received do not match the object's {expected} (got {got}); they were \
             damaged on the way"
        ))
    }
}

/// How the ranges of a download are checked as each streams in, so that the file need
/// not be read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeCheck {
    /// A CRC of the whole object: the ranges' CRCs, combined in order.
    Combined(HashKind),
    /// Digests of parts as large as the ranges: each range's digest is its part's.
    Parts(HashKind),
}

impl RangeCheck {
    pub fn kind(self) -> HashKind {
        match self {
            RangeCheck::Combined(kind) | RangeCheck::Parts(kind) => kind,
        }
    }
}

impl Expected {
    /// The full-object checksum the bytes are held to, if that is the check.
    pub fn stated_checksum(&self) -> Option<&Checksum> {
        match self {
            Expected::Checksum {
                checksum,
                part_size: None,
            } => Some(checksum),
            _ => None,
        }
    }

    /// The part size a promise about parts was made for.
    pub fn part_size(&self) -> Option<u64> {
        match self {
            Expected::PartMd5s { part_size, .. }
            | Expected::Checksum {
                part_size: Some(part_size),
                ..
            } => Some(*part_size),
            _ => None,
        }
    }

    /// How ranges of `range_size` bytes can be checked one by one, if they can: a whole
    /// object's CRC by combining theirs, a promise about parts of that size by theirs. An
    /// MD5 of the whole object needs the bytes in order, so the file is read as its ranges
    /// land.
    pub fn by_ranges(&self, range_size: u64) -> Option<RangeCheck> {
        match self {
            Expected::Checksum {
                checksum,
                part_size: None,
            } if checksum.algorithm.is_crc() => {
                Some(RangeCheck::Combined(HashKind::Checksum(checksum.algorithm)))
            }
            Expected::Checksum {
                checksum,
                part_size: Some(part_size),
            } if *part_size == range_size => {
                Some(RangeCheck::Parts(HashKind::Checksum(checksum.algorithm)))
            }
            Expected::PartMd5s { part_size, .. } if *part_size == range_size => {
                Some(RangeCheck::Parts(HashKind::Md5))
            }
            _ => None,
        }
    }

    /// The verdict on the states of ranges hashed as `how` says, in key order.
    pub fn check_ranges(&self, how: RangeCheck, ranges: Vec<Hasher>) -> Result<(), String> {
        let digests = match how {
            RangeCheck::Combined(kind) => {
                let mut ranges = ranges.into_iter();
                let mut whole = ranges.next().unwrap_or_else(|| Hasher::new(kind));
                for next in ranges {
                    let combined = whole.combine(&next);
                    debug_assert!(combined, "by_ranges combines CRCs only");
                }
                Digests {
                    whole: whole.finalize_reset(),
                    parts: vec![],
                }
            }
            RangeCheck::Parts(_) => Digests {
                whole: vec![],
                parts: vec![ranges.into_iter().map(|mut h| h.finalize_reset()).collect()],
            },
        };
        self.check(&digests)
    }
}

/// The check of bytes as they stream in, in order.
pub struct StreamCheck {
    expected: Expected,
    whole: Option<Hasher>,
    parts: Option<PartHasher>,
}

impl StreamCheck {
    /// Hashes what the promise is about: the whole content, or its parts.
    pub fn new(expected: &Expected) -> Self {
        let request = expected.request();
        let (whole, parts) = match request {
            Some(DigestRequest {
                kind, whole: true, ..
            }) => (Some(Hasher::new(kind)), None),
            Some(DigestRequest {
                kind, part_sizes, ..
            }) => (None, Some(PartHasher::new(kind, part_sizes[0]))),
            None => (None, None),
        };
        Self {
            expected: expected.clone(),
            whole,
            parts,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(hasher) = &mut self.whole {
            hasher.update(data);
        }
        if let Some(hasher) = &mut self.parts {
            hasher.update(data);
        }
    }

    /// The verdict, or `None` when there is nothing to check.
    pub fn finish(self) -> Option<Result<(), String>> {
        let digests = match (self.whole, self.parts) {
            (Some(mut whole), _) => Digests {
                whole: whole.finalize_reset(),
                parts: vec![],
            },
            (None, Some(parts)) => Digests {
                whole: vec![],
                parts: vec![parts.finish()],
            },
            (None, None) => return None,
        };
        Some(self.expected.check(&digests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::checksum::digest;
    use crate::storage::ChecksumAlgorithm;

    fn digests_of(request: &DigestRequest, data: &[u8]) -> Digests {
        Digests {
            whole: digest(request.kind, data),
            parts: request
                .part_sizes
                .iter()
                .map(|&size| {
                    data.chunks(size as usize)
                        .map(|chunk| digest(request.kind, chunk))
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn each_promise_accepts_its_bytes_and_refuses_others() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut damaged = data.clone();
        damaged[500] ^= 1;
        let md5 = |d: &[u8]| -> [u8; 16] { digest(HashKind::Md5, d).try_into().unwrap() };
        let part_md5s: Vec<Vec<u8>> = data.chunks(300).map(|c| digest(HashKind::Md5, c)).collect();
        let crc = ChecksumAlgorithm::Crc32c;
        let part_crcs: Vec<Vec<u8>> = data
            .chunks(300)
            .map(|c| digest(HashKind::Checksum(crc), c))
            .collect();
        let promises = [
            Expected::from_etag(&ETag::from_md5(&md5(&data)), None),
            Expected::from_etag(&ETag::multipart(&part_md5s), Some(300)),
            Expected::Checksum {
                checksum: Checksum::full(crc, &digest(HashKind::Checksum(crc), &data)),
                part_size: None,
            },
            Expected::Checksum {
                checksum: Checksum::composite(crc, &part_crcs),
                part_size: Some(300),
            },
        ];
        for expected in promises {
            let request = expected.request().unwrap();
            assert_eq!(expected.check(&digests_of(&request, &data)), Ok(()));
            let err = expected.check(&digests_of(&request, &damaged)).unwrap_err();
            assert!(err.contains("damaged on the way"), "{err}");
            for (bytes, verdict) in [(&data, true), (&damaged, false)] {
                let mut stream = StreamCheck::new(&expected);
                stream.update(&bytes[..10]);
                stream.update(&bytes[10..]);
                assert_eq!(stream.finish().map(|v| v.is_ok()), Some(verdict));
            }
            // Ranges of the part size, hashed one by one where the promise allows it.
            match expected.by_ranges(300) {
                None => assert!(matches!(expected, Expected::Md5 { .. })),
                Some(how) => {
                    for (bytes, verdict) in [(&data, true), (&damaged, false)] {
                        let ranges = bytes
                            .chunks(300)
                            .map(|range| {
                                let mut hasher = Hasher::new(how.kind());
                                hasher.update(range);
                                hasher
                            })
                            .collect();
                        let checked = expected.check_ranges(how, ranges);
                        assert_eq!(checked.is_ok(), verdict, "{expected:?}: {checked:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn ranges_of_another_size_than_the_parts_are_read_back() {
        let promise = Expected::from_etag(&ETag::multipart(&[vec![0; 16], vec![1; 16]]), Some(300));
        assert_eq!(
            promise.by_ranges(300),
            Some(RangeCheck::Parts(HashKind::Md5))
        );
        assert_eq!(promise.by_ranges(400), None);
        let sha = Checksum::full(ChecksumAlgorithm::Sha256, &[0; 32]);
        let promise = Expected::Checksum {
            checksum: sha,
            part_size: None,
        };
        assert_eq!(promise.by_ranges(300), None, "only CRCs combine");
    }

    #[test]
    fn unknown_layouts_check_nothing() {
        let multipart = ETag::parse("\"0123456789abcdef0123456789abcdef-3\"");
        assert_eq!(Expected::from_etag(&multipart, None), Expected::Unknown);
        assert_eq!(
            Expected::from_etag(&ETag::parse("not-an-md5"), None),
            Expected::Unknown
        );
        assert!(Expected::Unknown.request().is_none());
        assert_eq!(StreamCheck::new(&Expected::Unknown).finish(), None);
    }
}
