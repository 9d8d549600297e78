//! A body being read from one bucket and sent to another, checked on its way through
//! against what the source promised, for a write whose server has no digest to check
//! it by (the source states a CRC, and the copy carries no checksum).

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::error::describe_body_error;
use crate::storage::{Checksum, Expected, StreamCheck};

/// Why a checked body stopped: its bytes did not match the source's promise, fewer
/// arrived than were listed, or the source's response broke off. Found again in the
/// write's error, to name the read as the cause.
#[derive(Debug)]
pub struct SourceDamaged(pub String);

impl std::fmt::Display for SourceDamaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceDamaged {}

/// The body, checked against `expected` as it streams. Its last chunk is held back until
/// the check passes: a server stops reading once it has the announced length, so a
/// verdict given after the last byte would never reach it, and damaged bytes would land.
pub fn checked(body: ByteStream, size: u64, expected: &Expected) -> ByteStream {
    ByteStream::from_body_1_x(CheckedBody {
        inner: body.into_inner(),
        check: Some(StreamCheck::new(expected)),
        stated: expected.stated_checksum().cloned(),
        held: None,
        read: 0,
        size,
    })
}

struct CheckedBody {
    inner: SdkBody,
    /// Taken once the body has ended and passed its check.
    check: Option<StreamCheck>,
    /// The checksum the source states, to name in a mismatch the S3 client found.
    stated: Option<Checksum>,
    held: Option<Bytes>,
    read: u64,
    size: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl CheckedBody {
    /// The verdict at the end of the inner body.
    fn finish(&mut self) -> Result<(), SourceDamaged> {
        let check = self.check.take().expect("a body ends once");
        if self.read != self.size {
            return Err(SourceDamaged(format!(
                "received {} bytes where {} were listed",
                self.read, self.size
            )));
        }
        match check.finish() {
            Some(Err(why)) => Err(SourceDamaged(why)),
            _ => Ok(()),
        }
    }
}

impl Body for CheckedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.check.is_none() {
                return Poll::Ready(self.held.take().map(|data| Ok(Frame::data(data))));
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers of the source's response are not the write's.
                        continue;
                    };
                    let this = &mut *self;
                    this.read += data.len() as u64;
                    if let Some(check) = &mut this.check {
                        check.update(&data);
                    }
                    if let Some(before) = this.held.replace(data) {
                        return Poll::Ready(Some(Ok(Frame::data(before))));
                    }
                }
                Some(Err(err)) => {
                    // The S3 client's own check of a stated CRC, or a broken connection.
                    let err = std::io::Error::other(err);
                    let why = describe_body_error(&err, self.stated.as_ref());
                    return Poll::Ready(Some(Err(Box::new(SourceDamaged(why)))));
                }
                None => {
                    if let Err(damaged) = self.finish() {
                        self.held = None;
                        return Poll::Ready(Some(Err(Box::new(damaged))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.check.is_none() && self.held.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.as_ref().map_or(0, |data| data.len() as u64);
        SizeHint::with_exact(self.size.saturating_sub(self.read) + held)
    }
}

/// The damage a checked body found, if that is why a write failed.
pub fn source_damage<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a SourceDamaged> {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if let Some(damaged) = current.downcast_ref::<SourceDamaged>() {
            return Some(damaged);
        }
        cause = current.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::checksum::{digest, HashKind};
    use crate::storage::ChecksumAlgorithm;

    fn crc_of(data: &[u8]) -> Expected {
        let algorithm = ChecksumAlgorithm::Crc32c;
        Expected::Checksum {
            checksum: Checksum::full(algorithm, &digest(HashKind::Checksum(algorithm), data)),
            part_size: None,
        }
    }

    /// The chunks a checked body of `chunks` yields, up to its first error.
    async fn frames(
        chunks: &[&'static [u8]],
        size: u64,
        expected: &Expected,
    ) -> (Vec<u8>, Option<String>) {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c))))
            .collect();
        let stream = futures::stream::iter(frames);
        let inner = ByteStream::from_body_1_x(http_body_util::StreamBody::new(stream));
        let mut body = checked(inner, size, expected).into_inner();
        let mut out = vec![];
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            match frame {
                Ok(frame) => out.extend_from_slice(frame.data_ref().unwrap()),
                Err(err) => return (out, Some(err.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn bytes_that_match_pass_whole_and_damaged_ones_stop_before_their_last_chunk() {
        let chunks: [&'static [u8]; 3] = [b"first ", b"second ", b"third"];
        let whole = b"first second third";
        let (out, err) = frames(&chunks, 18, &crc_of(whole)).await;
        assert_eq!((out.as_slice(), err), (&whole[..], None));

        let (out, err) = frames(&chunks, 18, &crc_of(b"first second thirD")).await;
        assert_eq!(out, b"first second ", "the last chunk is never handed on");
        assert!(err.unwrap().contains("damaged on the way"));

        let (out, err) = frames(&chunks, 18, &Expected::Unknown).await;
        assert_eq!((out.as_slice(), err), (&whole[..], None));

        // Cut short: what came matches nothing to check, but the length says so.
        let (out, err) = frames(&chunks[..2], 18, &Expected::Unknown).await;
        assert_eq!(out, b"first ");
        assert_eq!(err.unwrap(), "received 13 bytes where 18 were listed");
    }
}
