//! `GET /metrics` over plain HTTP: the process's metrics ([`popug_metrics::render`]) for
//! Prometheus. TaskKeeper and Accounting serve it on a port of their own
//! (`<SERVICE>__METRICS_ADDR`), Account beside its JWKS, the gateway on its public port.

use std::future::Future;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use tokio::net::TcpListener;

/// A router with `GET /metrics`, to serve alone or merge into another.
pub fn router() -> Router {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics() -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, popug_metrics::CONTENT_TYPE)],
        popug_metrics::render(),
    )
}

/// Serves [`router`] on `listener` until `stop` resolves.
pub async fn serve(listener: TcpListener, stop: impl Future<Output = ()> + Send + 'static) {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "serving /metrics");
    if let Err(error) = axum::serve(listener, router())
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "the metrics server stopped");
    }
}
