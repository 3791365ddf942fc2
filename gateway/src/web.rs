//! What the gateway answers for paths it does not route itself: gRPC (and grpc-web, which
//! the layer below turned into gRPC) goes to the proxy; anything else is the web client's
//! static files, with `index.html` for client-side routes.

use std::convert::Infallible;
use std::path::PathBuf;

use axum::body::Body;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_http::services::{ServeDir, ServeFile};

use crate::proxy::Proxy;

type Fallback = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

pub fn fallback(web_dir: PathBuf, proxy: Proxy) -> Fallback {
    let index = web_dir.join("index.html");
    let files = ServeDir::new(&web_dir).fallback(ServeFile::new(index));
    BoxCloneSyncService::new(tower::service_fn(move |request: http::Request<Body>| {
        let proxy = proxy.clone();
        let files = files.clone();
        async move {
            let grpc = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/grpc"));
            if grpc {
                proxy.oneshot(request).await
            } else {
                match files.oneshot(request).await {
                    Ok(response) => Ok(response.map(Body::new)),
                    Err(never) => match never {},
                }
            }
        }
    }))
}
