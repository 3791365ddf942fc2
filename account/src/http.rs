//! The internal HTTP listener: the JWKS at `/.well-known/jwks.json`, `/healthz` and the
//! metrics at `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::keys::KeyRing;

pub fn router(keys: Arc<KeyRing>) -> Router {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(keys)
        .merge(popug_service::metrics::router())
}

async fn jwks(State(keys): State<Arc<KeyRing>>) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            // Short, so a rotation reaches every verifier quickly.
            (header::CACHE_CONTROL, "public, max-age=60"),
        ],
        keys.jwks_json(),
    )
}
