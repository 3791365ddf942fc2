//! Telemetry for every PopugJira binary.
//!
//! - [`init`] installs structured logging (filtered by `RUST_LOG`, JSON when
//!   `LOG_FORMAT=json`, each line with its `trace_id` and `span_id`) and an OpenTelemetry
//!   tracer, exporting over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (any OTLP
//!   backend: Jaeger, Tempo, an OpenTelemetry Collector).
//! - [`inject`] / [`extract`] carry W3C trace context (`traceparent`, `tracestate`) through
//!   any string map: gRPC metadata, NATS headers, the event envelope.

mod json;

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the tracer provider alive; dropping it flushes the spans still buffered.
#[must_use = "dropping the guard shuts the tracer down"]
pub struct TelemetryGuard {
    /// Present only when OTLP export is configured.
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Nothing useful to do with a flush error while the process ends.
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging and tracing for the binary `service`. Call once, first thing in main.
/// Safe to call again (tests): later calls keep the first subscriber.
pub fn init(service: &str) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,async_nats=warn,h2=warn,tower=warn,hyper=warn")
    });
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));

    // Spans always get trace and span ids (the logs carry them); they leave the process
    // only when an exporter is configured.
    let exporting = otlp_provider(service);
    let provider = exporting.clone().unwrap_or_default();
    let otel_layer =
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service.to_owned()));

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(json::WithTraceIds::default()),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().compact())
            .try_init()
    };
    if result.is_ok() && exporting.is_some() {
        tracing::info!(service, "exporting traces over OTLP");
    }
    TelemetryGuard {
        provider: exporting,
    }
}

/// An OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the
/// standard `OTEL_*` variables itself); none otherwise.
fn otlp_provider(service: &str) -> Option<SdkTracerProvider> {
    // Set but empty (as compose passes it through) means off.
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.trim().is_empty())?;
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            eprintln!("OTLP exporter not started: {error}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Some(provider)
}

/// The W3C trace context of `span`, as `traceparent`/`tracestate` entries.
pub fn inject(span: &tracing::Span) -> HashMap<String, String> {
    let mut carrier = MapCarrier(HashMap::new());
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0
}

/// Makes the context carried in `carrier` the parent of `span` (no-op when there is none).
pub fn extract(span: &tracing::Span, carrier: &HashMap<String, String>) {
    let cx = TraceContextPropagator::new().extract(&MapExtractor(carrier));
    // Fails only when the span is already closed; then there is nothing to link.
    let _ = span.set_parent(cx);
}

/// Adds the current span's trace context to outgoing HTTP/gRPC headers.
pub fn inject_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    for (key, value) in inject(span) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}

/// Parents `span` on the trace context of incoming HTTP/gRPC headers.
pub fn extract_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let carrier = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|key| {
            let value = headers.get(key)?.to_str().ok()?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect();
    extract(span, &carrier);
}

struct MapCarrier(HashMap<String, String>);

impl Injector for MapCarrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct MapExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
