//! OpenTelemetry trace export (cargo feature `otlp`): every sampled request
//! the gateway proxies becomes one span, sent to an OTLP/HTTP collector as
//! protobuf (`POST <tracing.otlp_endpoint>/v1/traces`).
//!
//! The span is the gateway's hop of the request's W3C trace
//! (`raftgate_proxy::trace`): the trace id the client sent (or the one the
//! gateway started), the span id the gateway sent upstream in
//! `traceparent`, the client's span as parent. It is named after the route
//! id (`unmatched` when no route matched), kind SERVER, with
//! `http.request.method`, `http.route`, `http.response.status_code`,
//! `url.scheme`, `error.type` and an error status for 5xx, and
//! `raftgate.error` when the gateway answered itself. The node's id,
//! region and cluster are resource attributes of every span.
//!
//! Why this shape: the proxy crate only hands a finished span to a
//! [`SpanSink`]; the OpenTelemetry SDK's batch span processor queues it
//! (bounded: `tracing.otlp_max_queue_spans`, a full queue drops the span)
//! and exports batches on its own thread, so a request never waits on the
//! collector. The HTTP requests go through a hyper client on the node's
//! Tokio runtime (no second HTTP stack), each bounded by
//! `tracing.otlp_export_timeout_ms`. Failed exports are logged at most
//! once per [`FAILURE_LOG_INTERVAL`]; spans dropped for a full queue are
//! counted and logged at shutdown, when what is still queued is sent
//! within the export timeout.
//!
//! The standard `OTEL_EXPORTER_OTLP_HEADERS` / `_TRACES_HEADERS`
//! environment variables add request headers (a collector's API key); the
//! endpoint, timeout, protocol and batching come from the config only. No
//! compression is built in: `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` makes
//! the node refuse to start.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use raftgate_proxy::trace::{FinishedSpan, SpanSink};

use crate::config::{ConfigError, NodeConfig};

/// Failed exports are logged at most this often (the first one at once).
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Largest collector response body read; a longer one fails the export.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Idle connections to the collector are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Span name of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("OTLP export needs a Tokio runtime: start the data plane inside one")]
    NoRuntime,
    #[error("TLS for the OTLP collector: {0}")]
    Tls(String),
    #[error("cannot build the OTLP exporter for `tracing.otlp_endpoint`: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What the exporter has seen, for logs.
#[derive(Debug, Default)]
struct ExportStats {
    /// Spans handed to the batch processor.
    recorded: AtomicU64,
    /// Spans the processor passed on to the exporter (sent or failed).
    exported: AtomicU64,
    failures: Mutex<Failures>,
}

/// Failed exports not yet logged.
#[derive(Debug, Default)]
struct Failures {
    last_logged: Option<Instant>,
    batches: u64,
    spans: u64,
    failing: bool,
}

impl ExportStats {
    fn note(&self, spans: usize, result: &OTelSdkResult) {
        self.exported.fetch_add(spans as u64, Relaxed);
        let mut f = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) if f.failing => {
                tracing::info!(
                    unlogged_failed_batches = f.batches,
                    unlogged_failed_spans = f.spans,
                    "OTLP span export recovered"
                );
                *f = Failures { last_logged: f.last_logged, ..Failures::default() };
            }
            Ok(()) => {}
            Err(e) => {
                f.failing = true;
                f.batches += 1;
                f.spans += spans as u64;
                if f.last_logged.is_none_or(|t| t.elapsed() >= FAILURE_LOG_INTERVAL) {
                    tracing::warn!(
                        error = %e,
                        failed_batches = f.batches,
                        failed_spans = f.spans,
                        "OTLP span export failed; the spans of failed batches are lost (logged at most every {} s)",
                        FAILURE_LOG_INTERVAL.as_secs()
                    );
                    f.last_logged = Some(Instant::now());
                    f.batches = 0;
                    f.spans = 0;
                }
            }
        }
    }
}

/// The OTLP exporter, counting and logging what it sends.
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    stats: Arc<ExportStats>,
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let spans = batch.len();
        let sent = self.inner.export(batch);
        async move {
            let result = sent.await;
            self.stats.note(spans, &result);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Sends the exporter's HTTP requests with hyper on the node's runtime.
///
/// The batch processor exports from its own thread, outside any runtime;
/// each request is spawned onto `runtime` and awaited from there. After the
/// runtime has stopped, requests fail instead of hanging.
#[derive(Debug)]
struct RuntimeClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl RuntimeClient {
    fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, OtlpError> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        // https:// collectors are verified against the public web roots.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(raftgate_proxy::tls::provider())
            .map_err(|e| OtlpError::Tls(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Self { client, runtime, timeout })
    }
}

impl HttpClient for RuntimeClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let exchange = async {
                let response = client.request(Request::from_parts(parts, Full::new(body))).await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer from the collector within {} ms", timeout.as_millis()).into()),
            }
        });
        Box::pin(async move { task.await.map_err(|e| -> HttpError { Box::new(e) })? })
    }
}

/// Exports the gateway's sampled spans over OTLP/HTTP.
#[derive(Debug)]
pub struct OtlpSink {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    stats: Arc<ExportStats>,
    /// How long shutdown waits for the last spans to be sent.
    flush_timeout: Duration,
    url: String,
}

impl OtlpSink {
    /// The exporter `[tracing]` asks for (None without `otlp_endpoint`).
    /// Must be called inside a Tokio runtime: exports run on it.
    pub fn start(config: &NodeConfig) -> Result<Option<Arc<Self>>, OtlpError> {
        let t = &config.tracing;
        let Some(url) = t.otlp_traces_url()? else { return Ok(None) };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtlpError::NoRuntime)?;
        let timeout = Duration::from_millis(t.otlp_export_timeout_ms);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.to_string())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(timeout)
            .with_http_client(RuntimeClient::new(runtime, timeout)?)
            .build()?;
        let stats = Arc::new(ExportStats::default());
        let batching = BatchConfigBuilder::default()
            .with_max_queue_size(t.otlp_max_queue_spans)
            .with_max_export_batch_size(t.otlp_max_batch_spans)
            .with_scheduled_delay(Duration::from_millis(t.otlp_export_interval_ms))
            .build();
        let mut processor = BatchSpanProcessor::builder(Reporting { inner: exporter, stats: stats.clone() })
            .with_batch_config(batching)
            .build();
        processor.set_resource(&resource(config));
        let scope = InstrumentationScope::builder("raftgate").with_version(env!("CARGO_PKG_VERSION")).build();
        tracing::info!(
            endpoint = %url,
            max_queue_spans = t.otlp_max_queue_spans,
            max_batch_spans = t.otlp_max_batch_spans,
            export_interval_ms = t.otlp_export_interval_ms,
            export_timeout_ms = t.otlp_export_timeout_ms,
            "exporting sampled request spans over OTLP/HTTP"
        );
        Ok(Some(Arc::new(Self { processor, scope, stats, flush_timeout: timeout, url: url.to_string() })))
    }

    fn span_data(&self, span: &FinishedSpan<'_>) -> SpanData {
        let t = span.trace;
        let context = SpanContext::new(
            TraceId::from_bytes(t.trace_id),
            SpanId::from_bytes(t.span_id),
            TraceFlags::new(t.flags),
            false,
            TraceState::default(),
        );
        let mut attributes = Vec::with_capacity(7);
        match known_method(span.method) {
            Some(m) => attributes.push(KeyValue::new("http.request.method", m)),
            None => {
                attributes.push(KeyValue::new("http.request.method", "_OTHER"));
                attributes.push(KeyValue::new("http.request.method_original", span.method.as_str().to_string()));
            }
        }
        if let Some(route) = span.route {
            attributes.push(KeyValue::new("http.route", route.to_string()));
        }
        attributes.push(KeyValue::new("http.response.status_code", i64::from(span.status.as_u16())));
        attributes.push(KeyValue::new("url.scheme", span.scheme));
        let status = if span.status.is_server_error() {
            let kind = span.error.map(String::from).unwrap_or_else(|| span.status.as_str().to_string());
            attributes.push(KeyValue::new("error.type", kind.clone()));
            Status::error(kind)
        } else {
            Status::Unset
        };
        if let Some(code) = span.error {
            attributes.push(KeyValue::new("raftgate.error", code));
        }
        let name = span.route.map(|r| r.to_string().into()).unwrap_or(UNMATCHED.into());
        SpanData {
            span_context: context,
            parent_span_id: t.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: t.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name,
            start_time: span.start,
            end_time: span.start + span.duration,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }
}

impl SpanSink for OtlpSink {
    fn record(&self, span: &FinishedSpan<'_>) {
        self.stats.recorded.fetch_add(1, Relaxed);
        self.processor.on_end(self.span_data(span));
    }

    fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown_with_timeout(self.flush_timeout) {
            tracing::warn!(error = %e, endpoint = %self.url, "OTLP export did not finish sending the last spans");
        }
        let unlogged = std::mem::take(&mut *self.stats.failures.lock().unwrap_or_else(PoisonError::into_inner));
        if unlogged.batches > 0 {
            tracing::warn!(
                failed_batches = unlogged.batches,
                failed_spans = unlogged.spans,
                endpoint = %self.url,
                "OTLP span exports failed since the last report; their spans are lost"
            );
        }
        let recorded = self.stats.recorded.load(Relaxed);
        let exported = self.stats.exported.load(Relaxed);
        if recorded > exported {
            tracing::warn!(
                dropped_spans = recorded - exported,
                recorded_spans = recorded,
                "spans were dropped: the OTLP export queue (tracing.otlp_max_queue_spans) was full, or shutdown came first"
            );
        }
    }
}

/// The standard method names; any other is exported as `_OTHER` (so a
/// client cannot invent unbounded attribute values).
fn known_method(m: &Method) -> Option<&'static str> {
    Some(match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => return None,
    })
}

/// Who sends the spans: the service, this node and its cluster.
fn resource(config: &NodeConfig) -> Resource {
    Resource::builder_empty()
        .with_service_name(config.tracing.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", config.node.id.to_string()),
            KeyValue::new("service.namespace", config.node.cluster_name.clone()),
            KeyValue::new("raftgate.node.region", config.node.region.clone()),
        ])
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_method_is_exported_as_other() {
        assert_eq!(known_method(&Method::PATCH), Some("PATCH"));
        assert_eq!(known_method(&Method::from_bytes(b"PURGE").unwrap()), None);
    }

    #[test]
    fn failures_are_logged_once_per_interval_and_counted_until_then() {
        let stats = ExportStats::default();
        let failed: OTelSdkResult = Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("down".into()));
        stats.note(3, &failed);
        let first = stats.failures.lock().unwrap().last_logged;
        assert!(first.is_some(), "the first failure is logged at once");
        stats.note(4, &failed);
        {
            let f = stats.failures.lock().unwrap();
            assert_eq!((f.batches, f.spans, f.last_logged), (1, 4, first), "within the interval: counted, not logged");
        }
        stats.note(5, &Ok(()));
        let f = stats.failures.lock().unwrap();
        assert!(!f.failing && f.batches == 0);
        assert_eq!(stats.exported.load(Relaxed), 12);
    }
}
