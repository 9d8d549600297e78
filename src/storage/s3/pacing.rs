//! `--max-rps` and `--max-bandwidth`: limits shared by every worker and both sides,
//! applied where every request passes, between the S3 client and its HTTP connector,
//! so that retries and every operation count.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{tls, Connector};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Spaces out units (requests, bytes) to a rate: each reservation takes the next free
/// slot, so the long-run rate never exceeds it, whoever asks.
#[derive(Debug)]
pub struct Pacer {
    /// Time one unit takes at the rate.
    per_unit: f64,
    next_free: Mutex<Instant>,
}

impl Pacer {
    pub fn new(per_second: u64) -> Arc<Self> {
        Arc::new(Self {
            per_unit: 1.0 / per_second.max(1) as f64,
            next_free: Mutex::new(Instant::now()),
        })
    }

    /// Reserves `units` and returns how long to wait before using them.
    fn reserve(&self, units: u64) -> Duration {
        let now = Instant::now();
        let mut next = self.next_free.lock().expect("pacer lock");
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(units as f64 * self.per_unit);
        start - now
    }
}

/// The limits of a run; none by default.
#[derive(Debug, Clone, Default)]
pub struct Pacing {
    pub requests: Option<Arc<Pacer>>,
    /// Bytes per second, each way.
    pub upload: Option<Arc<Pacer>>,
    pub download: Option<Arc<Pacer>>,
}

impl Pacing {
    pub fn new(max_rps: Option<u64>, max_bandwidth: Option<u64>) -> Self {
        Self {
            requests: max_rps.map(Pacer::new),
            upload: max_bandwidth.map(Pacer::new),
            download: max_bandwidth.map(Pacer::new),
        }
    }

    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.upload.is_none() && self.download.is_none()
    }

    /// An HTTP client that applies the limits in front of `inner`, or in front of an
    /// HTTPS client like the SDK's default one (rustls, proxies from the environment).
    pub fn client(&self, inner: Option<SharedHttpClient>) -> SharedHttpClient {
        SharedHttpClient::new(PacedClient {
            inner,
            pacing: self.clone(),
            connector: OnceLock::new(),
        })
    }
}

#[derive(Debug)]
struct PacedClient {
    inner: Option<SharedHttpClient>,
    pacing: Pacing,
    /// One connector, and so one connection pool, for the client's lifetime: its
    /// settings (timeouts) are the same for every request of one client.
    connector: OnceLock<SharedHttpConnector>,
}

impl HttpClient for PacedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let inner = match &self.inner {
            Some(inner) => inner.http_connector(settings, components),
            None => self
                .connector
                .get_or_init(|| SharedHttpConnector::new(https_connector(settings, components)))
                .clone(),
        };
        SharedHttpConnector::new(PacedConnector {
            inner,
            pacing: self.pacing.clone(),
        })
    }
}

fn https_connector(settings: &HttpConnectorSettings, components: &RuntimeComponents) -> Connector {
    let mut builder = Connector::builder()
        .proxy_config(ProxyConfig::from_env())
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
    builder.set_connector_settings(Some(settings.clone()));
    builder.set_sleep_impl(components.sleep_impl());
    builder.build()
}

#[derive(Debug)]
struct PacedConnector {
    inner: SharedHttpConnector,
    pacing: Pacing,
}

impl HttpConnector for PacedConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        let (inner, pacing) = (self.inner.clone(), self.pacing.clone());
        HttpConnectorFuture::new(async move {
            if let Some(pacer) = &pacing.requests {
                tokio::time::sleep(pacer.reserve(1)).await;
            }
            if let Some(pacer) = pacing.upload {
                let body = std::mem::replace(request.body_mut(), SdkBody::taken());
                *request.body_mut() = paced(body, pacer);
            }
            let mut response = inner.call(request).await?;
            if let Some(pacer) = pacing.download {
                let body = std::mem::replace(response.body_mut(), SdkBody::taken());
                *response.body_mut() = paced(body, pacer);
            }
            Ok(response)
        })
    }
}

/// The body, with a pause after each chunk for as long as the pacer says.
fn paced(body: SdkBody, pacer: Arc<Pacer>) -> SdkBody {
    body.map_preserve_contents(move |body| {
        SdkBody::from_body_1_x(PacedBody {
            inner: body,
            pacer: Arc::clone(&pacer),
            pause: None,
        })
    })
}

struct PacedBody {
    inner: SdkBody,
    pacer: Arc<Pacer>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(pause) = &mut self.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &frame {
            if let Some(data) = frame.data_ref() {
                let wait = self.pacer.reserve(data.len() as u64);
                if !wait.is_zero() {
                    self.pause = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        Body::size_hint(&self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_spaced_at_the_rate() {
        let pacer = Pacer::new(10);
        assert_eq!(pacer.reserve(1), Duration::ZERO);
        let waits: Vec<Duration> = (0..4).map(|_| pacer.reserve(1)).collect();
        // Each waits 100 ms longer than the one before, less the time passed meanwhile.
        for (i, wait) in waits.iter().enumerate() {
            let expected = Duration::from_millis(100 * (i as u64 + 1));
            assert!(*wait <= expected && *wait + Duration::from_millis(50) > expected);
        }
        let bytes = Pacer::new(1 << 20);
        bytes.reserve(1 << 20);
        assert!(bytes.reserve(1) > Duration::from_millis(900));
    }
}
