//! What the gateway answers for paths it does not route itself: gRPC (and grpc-web, which
//! the layer below turned into gRPC) goes to the proxy; `/metrics` is the process's
//! Prometheus text (`popug_metrics`); anything else is the web client's static files, with
//! `index.html` for client-side routes.

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
            if request.uri().path() == "/metrics" {
                let body = Body::from(popug_metrics::render());
                let mut response = http::Response::new(body);
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(popug_metrics::CONTENT_TYPE),
                );
                return Ok(response);
            }
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

/// Sends grpc-web through tonic-web's translation and everything else — native gRPC, and
/// the browser's plain HTTP/1.1 requests for the UI and `/metrics` — straight on.
/// (tonic-web alone answers 400 to any HTTP/1.1 request that is not grpc-web.)
#[derive(Clone, Default)]
pub struct WebSplitLayer;

impl<S: Clone> tower::Layer<S> for WebSplitLayer {
    type Service = WebSplit<S>;

    fn layer(&self, inner: S) -> WebSplit<S> {
        WebSplit {
            web: tonic_web::GrpcWebLayer::new().layer(inner.clone()),
            inner,
        }
    }
}

/// The service of [`WebSplitLayer`].
#[derive(Clone)]
pub struct WebSplit<S> {
    web: tonic_web::GrpcWebService<S>,
    inner: S,
}

type TonicRequest = http::Request<tonic::body::Body>;
type TonicResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<TonicRequest> for WebSplit<S>
where
    S: tower::Service<TonicRequest, Response = TonicResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = TonicResponse;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<TonicResponse, S::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        // Each call readies its own clone below.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TonicRequest) -> Self::Future {
        let grpc_web = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc-web"));
        if grpc_web {
            let web = self.web.clone();
            Box::pin(web.oneshot(request))
        } else {
            let inner = self.inner.clone();
            Box::pin(inner.oneshot(request))
        }
    }
}
