//! Prometheus metrics for every PopugJira process.
//!
//! Code records through the `metrics` facade (`metrics::counter!` and friends), so a
//! library (the event bus, the verifier) carries no exporter; each process installs the
//! one recorder with [`install`] and serves [`render`] at `GET /metrics` in the
//! Prometheus text format. What is recorded where:
//!
//! - [`grpc`] — `grpc_server_*` by a layer in front of every service (handlers carry no
//!   metric code) and `grpc_client_*` for the gateway's upstream calls, named like the
//!   grpc-ecosystem interceptors so existing dashboards fit
//! - [`process`] — CPU, memory, open files, read from `/proc` at each scrape (written by
//!   hand: its CPU counter is fractional)
//! - [`names`] — every metric name and its help text, in one place
//!
//! Histograms (every `*_seconds` metric) share one set of buckets, 0.5 ms to 10 s.

pub mod grpc;
pub mod names;
pub mod process;

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of every `*_seconds` histogram.
pub const SECONDS_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle) and
/// records `popug_build_info{service,version}`. Histograms are drained every few seconds
/// by a task on the current tokio runtime, if there is one, and at every render.
pub fn install(service: &'static str) -> &'static PrometheusHandle {
    let handle = HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics stays empty");
        }
        names::describe();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            runtime.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    });
    metrics::gauge!(names::BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    handle
}

/// Everything recorded so far, in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    let Some(handle) = HANDLE.get() else {
        return String::new();
    };
    handle.run_upkeep();
    let mut text = handle.render();
    process::write(&mut text);
    text
}

/// gRPC status codes as numbers (the `grpc-status` header), named as grpc-go spells
/// them in `grpc_code`.
pub mod code {
    /// A `grpc-status` value.
    pub type Code = u16;

    pub const OK: Code = 0;
    pub const CANCELED: Code = 1;
    pub const UNKNOWN: Code = 2;

    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];

    /// Its name; `Unknown` for a number outside the spec.
    pub fn name(code: Code) -> &'static str {
        NAMES.get(usize::from(code)).copied().unwrap_or("Unknown")
    }

    /// The code a `grpc-status` header value names (`Unknown` when it names none).
    pub fn parse(value: &[u8]) -> Code {
        std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_follow_grpc_go() {
        assert_eq!(code::name(0), "OK");
        assert_eq!(code::name(3), "InvalidArgument");
        assert_eq!(code::name(14), "Unavailable");
        assert_eq!(code::name(16), "Unauthenticated");
        assert_eq!(code::name(99), "Unknown");
        assert_eq!(code::parse(b"14"), 14);
        assert_eq!(code::parse(b"x"), code::UNKNOWN);
    }
}
