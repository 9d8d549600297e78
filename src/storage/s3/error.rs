//! Turns SDK errors into one line that names the cause and, where it is obvious, the fix.
//!
//! Only the error code, the server's message and the chain of transport causes are
//! shown: never request URLs (they may be presigned) nor headers (they carry signatures).

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_checksums::body::validate::Error as ChecksumError;
use aws_smithy_runtime_api::http::Response;

use crate::storage::checksum::b64;
use crate::storage::{Checksum, ObjectError};

pub fn describe_sdk_error<E>(err: &SdkError<E, Response>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code();
            let message = service.err().message().unwrap_or_default();
            let head = match code {
                Some(code) if message.is_empty() => format!("{code} (HTTP {status})"),
                Some(code) => format!("{code}: {message} (HTTP {status})"),
                // A success whose body could not be read (XML the parser refuses).
                None if status < 300 => format!(
                    "the server's answer (HTTP {status}) could not be read: {}",
                    unreadable(service.err())
                ),
                None => format!("HTTP {status}"),
            };
            match hint(code, status) {
                Some(hint) => format!("{head}; {hint}"),
                None => head,
            }
        }
        SdkError::TimeoutError(_) => "the request timed out".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_io() => {
            format!("connection failed: {}", chain(err))
        }
        _ => {
            let text = chain(err);
            if text.contains("credentials") {
                format!("{text}; configure credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, --profile, SSO or an instance role)")
            } else {
                text
            }
        }
    }
}

/// The failure of a request that reads an object's bytes (GetObject, CopyObject,
/// UploadPartCopy). One refused because the object sits in an archive tier and has no
/// restored copy (GetObject: InvalidObjectState; the copies: ObjectNotInActiveTierError)
/// is marked as such: it is passed over and counted, not failed.
pub fn read_error<E>(op: &'static str, target: String, err: &SdkError<E, Response>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let archived = matches!(
        err.as_service_error().and_then(|e| e.code()),
        Some("InvalidObjectState" | "ObjectNotInActiveTierError")
    );
    ObjectError {
        archived,
        ..ObjectError::new(op, target, describe_sdk_error(err))
    }
}

/// Whether a write failed because the bytes sent were damaged or cut short on the way
/// (the server refused their digest, or the stream feeding them broke): sending the
/// object again may succeed, though the S3 client could not retry a streamed body.
pub fn damaged_in_transit<E>(err: &SdkError<E, Response>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(service) => matches!(
            service.err().code(),
            Some("BadDigest" | "IncompleteBody" | "InvalidDigest" | "XAmzContentSHA256Mismatch")
        ),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        _ => false,
    }
}

/// Why the bytes of a body stopped arriving. The SDK checks a full-object checksum the
/// server states as the body streams and ends it with an opaque "streaming error" when
/// the bytes do not match: that is named as the mismatch it is, with both values. Any
/// other cause is told with the errors beneath it ("streaming error: end of file before
/// message length reached").
pub fn describe_body_error(err: &std::io::Error, stated: Option<&Checksum>) -> String {
    let mut text = err.to_string();
    // An io::Error's source() skips the error it wraps, so the walk starts at that one.
    let mut cause = err
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(current) = cause {
        let message = current.to_string();
        if !text.contains(&message) {
            text = format!("{text}: {message}");
        }
        if let Some(ChecksumError::ChecksumMismatch { expected, actual }) =
            current.downcast_ref::<ChecksumError>()
        {
            let (expected, actual) = (b64(expected), b64(actual));
            return match stated {
                Some(stated) => format!(
                    "checksum mismatch: the server states {} {expected}, the bytes received hash to {actual}",
                    stated.algorithm.name()
                ),
                None => format!(
                    "checksum mismatch: the server states {expected}, the bytes received hash to {actual}"
                ),
            };
        }
        cause = current.source();
    }
    text
}

/// Why an answer could not be parsed: the deepest cause, which names the problem (an
/// invalid character, a missing element) without the body.
fn unreadable(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The error and its causes, as the SDK renders them (codes and messages, no URLs).
/// The error and its causes, each as it displays itself ("a: b: c"). Never their Debug
/// forms, which carry whole responses (headers, bodies) and requests.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let said = next.to_string();
        // Some errors repeat their cause in their own text.
        if !said.is_empty() && !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = next.source();
    }
    text
}

fn hint(code: Option<&str>, status: u16) -> Option<&'static str> {
    Some(match (code, status) {
        (Some("NoSuchBucket"), _) => "check the bucket name, --region and --endpoint-url",
        (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch"), _) => {
            "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile)"
        }
        (Some("ExpiredToken" | "TokenRefreshRequired"), _) => "refresh the credentials",
        (Some("AuthorizationHeaderMalformed" | "PermanentRedirect"), _) | (None, 301) => {
            "the bucket is in another region: pass --region (or --source-region/--dest-region)"
        }
        (Some("AccessDenied"), _) | (None, 403) => {
            "check that these credentials may perform this operation on this bucket"
        }
        (Some("SlowDown"), _) | (None, 503) => "the server is throttling requests; lower --threads",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;
    use aws_sdk_s3::primitives::SdkBody;
    use aws_smithy_runtime_api::http::StatusCode;

    #[test]
    fn a_chain_of_causes_is_shown_by_display_alone() {
        // The third field stands for what only the Debug form shows (headers, URLs).
        #[derive(Debug)]
        struct Failure(
            &'static str,
            Option<Box<Failure>>,
            #[allow(dead_code)] &'static str,
        );
        impl std::fmt::Display for Failure {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Failure {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let root = Failure("refused", None, "x-amz-security-token: SECRET");
        let middle = Failure("loading credentials: refused", Some(Box::new(root)), "");
        let top = Failure(
            "dispatch failure",
            Some(Box::new(middle)),
            "https://b/k?X-Amz-Signature=1",
        );
        // The middle one repeats its cause, which is not said twice.
        assert_eq!(
            chain(&top),
            "dispatch failure: loading credentials: refused"
        );
        let debug = format!("{top:?}");
        assert!(debug.contains("SECRET") && debug.contains("Signature"));
    }

    #[test]
    fn a_body_failing_its_checksum_says_so_with_both_values() {
        let mismatch = ChecksumError::ChecksumMismatch {
            expected: vec![0, 0, 0, 1].into(),
            actual: vec![0, 0, 0, 2].into(),
        };
        let err = std::io::Error::other(mismatch);
        let stated = Checksum::parse(crate::storage::ChecksumAlgorithm::Crc32c, "AAAAAQ==");
        assert_eq!(
            describe_body_error(&err, Some(&stated)),
            "checksum mismatch: the server states CRC32C AAAAAQ==, the bytes received hash to AAAAAg=="
        );
        let other = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "cut short");
        assert_eq!(describe_body_error(&other, Some(&stated)), "cut short");

        #[derive(Debug)]
        struct Streaming(std::io::Error);
        impl std::fmt::Display for Streaming {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("streaming error")
            }
        }
        impl std::error::Error for Streaming {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "end of file");
        let cut = std::io::Error::other(Streaming(eof));
        assert_eq!(
            describe_body_error(&cut, None),
            "streaming error: end of file"
        );
    }

    #[test]
    fn an_unreadable_success_names_why_it_could_not_be_read() {
        let cause = "invalid character data U+0001 at 1:246";
        let err =
            ListObjectsV2Error::unhandled(Box::<dyn std::error::Error + Send + Sync>::from(cause));
        let raw = Response::new(StatusCode::try_from(200).unwrap(), SdkBody::empty());
        let described = describe_sdk_error(&SdkError::service_error(err, raw));
        assert_eq!(
            described,
            format!("the server's answer (HTTP 200) could not be read: {cause}")
        );
    }
}
