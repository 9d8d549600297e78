//! An HTTP/1.1 proxy for loopback use between an S3 client and a real S3 server. It adds
//! a fixed latency to every request (as a distant S3 region would) and, on a share of
//! requests chosen at random, injects the faults S3 clients must survive: 503 SlowDown,
//! 500 InternalError, a connection dropped before the answer, a response body cut short
//! or damaged. It can also limit the request rate as S3 throttles a prefix: requests
//! beyond the rate are answered 503 SlowDown.
//!
//! Counters record what was injected, so a test can assert that faults really happened.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, ProxyError>;
/// Errors travel as `io::Error`: a concrete type keeps the spawned futures `Send`.
type ProxyError = std::io::Error;

/// What to do to requests; each share is a probability in 0..=1, drawn per request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added before each request is forwarded.
    pub latency: Duration,
    /// Answer every write (PUT, POST, DELETE) with 500 InternalError; reads pass.
    pub fail_writes: bool,
    /// Answer every request with this status and S3 error code instead of forwarding
    /// (e.g. 400 ExpiredToken), as a server would for a condition hard to set up.
    pub answer: Option<(u16, &'static str)>,
    /// Answer 503 SlowDown instead of forwarding.
    pub slowdown: f64,
    /// Requests per second beyond which requests are answered 503 SlowDown instead of
    /// forwarded, as S3 throttles a prefix; a second's requests may come at once.
    pub rate_limit: Option<f64>,
    /// Sent as `Retry-After` (whole seconds) with each SlowDown.
    pub retry_after: Option<Duration>,
    /// Answer 500 InternalError instead of forwarding.
    pub error: f64,
    /// Close the connection without an answer.
    pub reset: f64,
    /// Forward an object GET, then cut the response body at half its length.
    pub truncate: f64,
    /// Forward an object GET, then flip one bit in the middle of a successful answer's
    /// body, keeping its length: damage only a checksum can catch.
    pub corrupt: f64,
    /// Remove every additional checksum from the server's answers (`x-amz-checksum-*`
    /// headers, `<Checksum...>` elements), as a server that keeps none would answer.
    pub strip_checksums: bool,
}

/// What the proxy did, counted per kind.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub slowdowns: AtomicU64,
    /// SlowDown answers to requests beyond `Faults::rate_limit`.
    pub rate_limited: AtomicU64,
    pub errors: AtomicU64,
    pub resets: AtomicU64,
    pub truncations: AtomicU64,
    pub corruptions: AtomicU64,
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub counters: Arc<Counters>,
    faults: Arc<Mutex<Faults>>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream`.
    pub async fn start(upstream: SocketAddr, faults: Faults) -> std::io::Result<Proxy> {
        Self::start_on("127.0.0.1:0".parse().expect("address"), upstream, faults).await
    }

    pub async fn start_on(
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: Faults,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to requests.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let state = Arc::new(State {
            upstream,
            client: Client::builder(TokioExecutor::new()).build(connector),
            faults: Arc::new(Mutex::new(faults)),
            counters: Arc::new(Counters::default()),
            bucket: Mutex::new(TokenBucket::full()),
        });
        let proxy = Proxy {
            addr,
            counters: Arc::clone(&state.counters),
            faults: Arc::clone(&state.faults),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { state.handle(req).await }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(proxy)
    }

    /// Changes the faults from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
    }

    pub fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct State {
    upstream: SocketAddr,
    client: Client<HttpConnector, Incoming>,
    faults: Arc<Mutex<Faults>>,
    counters: Arc<Counters>,
    /// The requests `Faults::rate_limit` still allows; one bucket for all connections,
    /// as the limit is the server's.
    bucket: Mutex<TokenBucket>,
}

/// Requests allowed under a rate limit: tokens flow in at the rate, a request takes one,
/// and a request finding none is refused. The bucket holds a second's requests: the limit
/// is a rate per second, and within a second the requests may come as they like.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn full() -> Self {
        Self {
            tokens: f64::INFINITY,
            refilled: Instant::now(),
        }
    }

    /// Whether a request at `now` is within `per_second`.
    fn take(&mut self, per_second: f64, now: Instant) -> bool {
        let capacity = per_second.max(1.0);
        let flowed = now.saturating_duration_since(self.refilled).as_secs_f64() * per_second;
        self.tokens = (self.tokens + flowed).min(capacity);
        self.refilled = self.refilled.max(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, ProxyError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let faults = self.faults.lock().expect("faults lock").clone();
        if !faults.latency.is_zero() {
            // tokio's timer rounds up to whole milliseconds and adds a tick; a thread's
            // sleep keeps the added latency within about 0.1 ms of the setting.
            let latency = faults.latency;
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(latency)).await;
        }
        let write = matches!(*req.method(), Method::PUT | Method::POST | Method::DELETE);
        let post = req.method() == Method::POST;
        if faults.fail_writes && write {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return Ok(s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ));
        }
        if let Some((status, code)) = faults.answer {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            return Ok(s3_error(status, code, "Answered by the fault proxy."));
        }
        if let Some(per_second) = faults.rate_limit {
            let allowed = self
                .bucket
                .lock()
                .expect("bucket lock")
                .take(per_second, Instant::now());
            if !allowed {
                self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                return Ok(slowdown(&faults));
            }
        }
        let roll = fastrand::f64();
        let mut edge = faults.slowdown;
        if roll < edge {
            self.counters.slowdowns.fetch_add(1, Ordering::Relaxed);
            return Ok(slowdown(&faults));
        }
        edge += faults.error;
        if roll < edge {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return Ok(s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ));
        }
        edge += faults.reset;
        if roll < edge {
            self.counters.resets.fetch_add(1, Ordering::Relaxed);
            // An error from the service makes hyper close the connection unanswered.
            return Err(io_error(Dropped));
        }
        // Only object reads (path-style `/bucket/key`), never listings (`/bucket` or
        // `/bucket/` with a query), are damaged.
        let object_get = req.method() == Method::GET
            && req
                .uri()
                .path()
                .trim_start_matches('/')
                .split_once('/')
                .is_some_and(|(_, key)| !key.is_empty());
        edge += faults.truncate;
        let truncate = object_get && roll < edge;
        let corrupt = object_get && !truncate && roll < edge + faults.corrupt;
        let response = match self.forward(req).await {
            Ok(response) => response,
            Err(err) => return Err(err),
        };
        if faults.strip_checksums {
            return strip_checksums(response, post).await;
        }
        let damage = truncate || (corrupt && response.status().is_success());
        if !damage {
            return Ok(response.map(|b| b.map_err(io_error).boxed()));
        }
        let (parts, body) = response.into_parts();
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => return Err(io_error(err)),
        };
        if truncate {
            self.counters.truncations.fetch_add(1, Ordering::Relaxed);
            let half = bytes.slice(..bytes.len() / 2);
            let frames = futures::stream::iter([Ok(Frame::data(half)), Err(io_error(Dropped))]);
            return Ok(Response::from_parts(parts, StreamBody::new(frames).boxed()));
        }
        let mut damaged = bytes.to_vec();
        if let Some(byte) = damaged.get_mut(bytes.len() / 2) {
            *byte ^= 0x01;
            self.counters.corruptions.fetch_add(1, Ordering::Relaxed);
        }
        let body = Full::new(Bytes::from(damaged)).map_err(|never: Infallible| match never {});
        Ok(Response::from_parts(parts, body.boxed()))
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        match format!("http://{}{path}", self.upstream).parse() {
            Ok(uri) => parts.uri = uri,
            Err(err) => return Err(io_error(err)),
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) => Ok(response),
            Err(err) => Err(io_error(err)),
        }
    }
}

/// The answer without additional checksums in its headers or its XML body (an answer
/// to a POST, such as CompleteMultipartUpload, is XML whatever its content type says).
async fn strip_checksums(
    response: Response<Incoming>,
    post: bool,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    let checksum_headers: Vec<_> = parts
        .headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-amz-checksum"))
        .cloned()
        .collect();
    for name in checksum_headers {
        parts.headers.remove(name);
    }
    let xml = parts
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().ends_with(b"xml"))
        || post;
    if !xml {
        return Ok(Response::from_parts(parts, body.map_err(io_error).boxed()));
    }
    let bytes = body.collect().await.map_err(io_error)?.to_bytes();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    while let Some(start) = text.find("<Checksum") {
        let name_end = start + text[start..].find('>').unwrap_or(0);
        let name = text[start + 1..name_end].to_owned();
        let close = format!("</{name}>");
        let Some(end) = text[start..].find(&close) else {
            break;
        };
        text.replace_range(start..start + end + close.len(), "");
    }
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    let body = Full::new(Bytes::from(text)).map_err(|never: Infallible| match never {});
    Ok(Response::from_parts(parts, body.boxed()))
}

fn io_error<E: std::error::Error + Send + Sync + 'static>(err: E) -> ProxyError {
    std::io::Error::other(err)
}

/// 503 SlowDown, with `Retry-After` when the faults ask for it.
fn slowdown(faults: &Faults) -> Response<Body> {
    let mut answer = s3_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "SlowDown",
        "Please reduce your request rate.",
    );
    if let Some(after) = faults.retry_after {
        let value = hyper::header::HeaderValue::from(after.as_secs());
        answer
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, value);
    }
    answer
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(
            Full::new(Bytes::from(xml))
                .map_err(|never: Infallible| match never {})
                .boxed(),
        )
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_the_rate_and_a_second_of_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full();
        let burst = (0..1000).filter(|_| bucket.take(400.0, start)).count();
        assert_eq!(burst, 400);
        // Ten seconds later, only a second's worth is kept.
        let later = start + Duration::from_secs(10);
        assert_eq!((0..1000).filter(|_| bucket.take(400.0, later)).count(), 400);
        // Asked at an even pace, it allows the rate.
        let allowed = (1..=4000)
            .filter(|i| bucket.take(400.0, later + Duration::from_micros(i * 1000)))
            .count();
        assert_eq!(allowed, 1600);
    }
}
