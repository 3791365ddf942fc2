//! The gRPC server every PopugJira service runs.
//!
//! [`serve`] takes the service's routes, its bound listener and a shutdown future (so
//! tests drive it) and adds what every service needs: `grpc.health.v1` health (each
//! named service SERVING while the service is healthy — see [`ready`] — NOT_SERVING
//! otherwise and while draining), UNAVAILABLE until the service is prepared, server
//! reflection of the services it serves (grpcurl `list`/`describe`), a span per request
//! parented on the caller's `traceparent`, and the per-RPC access check.

pub mod ready;

pub use ready::{Readiness, ReadyLayer};

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use popug_auth::AuthLayer;

/// What [`serve`] needs besides the routes.
pub struct ServeOptions {
    /// Fully qualified names of the services in the routes, reported by health.
    pub service_names: Vec<&'static str>,
    /// The per-RPC access check (the policies declared in `proto/`).
    pub auth: AuthLayer,
    /// Whether the service is prepared and healthy.
    pub readiness: Readiness,
}

/// Serves `routes` on `listener` until `shutdown` resolves, then drains in-flight calls.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let follow = follow_health(
        health.clone(),
        options.service_names.clone(),
        options.readiness.healthy(),
    );
    let follow = tokio::spawn(follow);

    // Reflection lists the services served here and health (so `grpcurl list` shows it
    // and `describe` works on it), not every service the descriptors know.
    let mut reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(popug_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    let mut reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(popug_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health");
    for name in &options.service_names {
        reflection = reflection.with_service_name(*name);
        reflection_alpha = reflection_alpha.with_service_name(*name);
    }
    let reflection = reflection.build_v1().map_err(reflection_error)?;
    // Older grpcurl and grpcui only speak v1alpha.
    let reflection_alpha = reflection_alpha.build_v1alpha().map_err(reflection_error)?;

    let routes = routes
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha);

    tracing::info!(
        addr = %listener.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        services = ?options.service_names,
        "serving gRPC"
    );
    let names = options.service_names.clone();
    let shutdown = async move {
        shutdown.await;
        follow.abort();
        for name in names {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        metrics::gauge!(popug_metrics::names::SERVING).set(0.0);
        tracing::info!("shutting down: draining in-flight calls");
    };

    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .tcp_nodelay(true)
        // Outermost: one span per call, parented on the caller's trace context, so the
        // auth decision below is inside it.
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(request_span)
                // A refused call is the caller's business; server faults are logged
                // where they happen, with their cause.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        // Then grpc_server_* metrics, of every answer including the refusals below.
        .layer(metrics_layer())
        // Then, until the service is prepared, UNAVAILABLE for everything.
        .layer(ReadyLayer(options.readiness))
        // Then the token check: handlers only ever see verified callers.
        .layer(options.auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Set per accepted socket: the builder's tcp_nodelay only applies to listeners
            // tonic binds itself. Without it, a response written in two pieces waits for
            // the peer's delayed ACK (~40 ms).
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}

/// `grpc_server_*` labelled by path for the RPCs that exist (every PopugJira RPC, health
/// and reflection), `unknown` for the rest.
pub fn metrics_layer() -> popug_metrics::grpc::ServerMetricsLayer {
    let ours: Vec<String> = popug_auth::PolicyTable::popug()
        .map(|table| table.paths().map(|(path, _)| path.to_owned()).collect())
        .unwrap_or_default();
    let theirs = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    popug_metrics::grpc::ServerMetricsLayer::for_paths(
        ours.into_iter().chain(theirs.map(str::to_owned)),
    )
}

/// Reports every service named SERVING while `healthy` says so, NOT_SERVING otherwise.
async fn follow_health(
    health: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    mut healthy: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let status = if *healthy.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in &names {
            health.set_service_status(*name, status).await;
        }
        let serving = if status == ServingStatus::Serving {
            1.0
        } else {
            0.0
        };
        metrics::gauge!(popug_metrics::names::SERVING).set(serving);
        if healthy.changed().await.is_err() {
            return;
        }
    }
}

fn reflection_error(error: tonic_reflection::server::Error) -> tonic::transport::Error {
    // Only a broken build could produce an unreadable descriptor set.
    panic!("embedded file descriptor set is invalid: {error}")
}

fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        rpc = %request.uri().path(),
        otel.kind = "server",
    );
    popug_telemetry::extract_headers(&span, request.headers());
    span
}

/// A protobuf timestamp of `at`.
pub fn timestamp(at: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always in 0..1e9.
        nanos: at.nanosecond() as i32,
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
