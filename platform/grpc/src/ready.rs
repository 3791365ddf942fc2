//! Whether a service can take calls, and whether it is healthy.
//!
//! A service starts before its database and NATS need to be up: it is *prepared* once its
//! migrations ran, its streams exist and its own start-up work is done; until then every
//! RPC answers UNAVAILABLE ("starting") instead of meeting tables that are not there yet.
//! It is *healthy* while it is prepared and its database and NATS are reachable now;
//! `grpc.health.v1` reports SERVING then and NOT_SERVING otherwise.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tower::{Layer, Service};

/// Shared by the service's readiness worker (which sets it) and its server (which reports
/// and enforces it).
#[derive(Clone)]
pub struct Readiness {
    prepared: Arc<watch::Sender<bool>>,
    healthy: Arc<watch::Sender<bool>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::starting()
    }
}

impl Readiness {
    /// Neither prepared nor healthy yet.
    pub fn starting() -> Readiness {
        Readiness {
            prepared: Arc::new(watch::channel(false).0),
            healthy: Arc::new(watch::channel(false).0),
        }
    }

    /// Prepared and healthy from the start (nothing to wait for).
    pub fn ready() -> Readiness {
        let readiness = Readiness::starting();
        readiness.set_prepared();
        readiness.set_healthy(true);
        readiness
    }

    pub fn set_prepared(&self) {
        self.prepared.send_replace(true);
    }

    pub fn is_prepared(&self) -> bool {
        *self.prepared.borrow()
    }

    /// Resolves once the service is prepared (at once if it is).
    pub async fn wait_prepared(&self) {
        let mut prepared = self.prepared.subscribe();
        // The sender lives as long as `self`, so this only ends when prepared.
        let _ = prepared.wait_for(|p| *p).await;
    }

    /// Returns whether it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.send_if_modified(|now| {
            let changed = *now != healthy;
            *now = healthy;
            changed
        })
    }

    /// Follows health: the current value, then every change.
    pub fn healthy(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }
}

/// Paths open before the service is prepared: health checks and reflection.
const ALWAYS_OPEN: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Answers UNAVAILABLE to every RPC until the service is prepared.
#[derive(Clone)]
pub struct ReadyLayer(pub Readiness);

impl<S> Layer<S> for ReadyLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            readiness: self.0.clone(),
        }
    }
}

/// The service of [`ReadyLayer`].
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    readiness: Readiness,
}

impl<S, B, R> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        futures::future::Either<S::Future, std::future::Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if self.readiness.is_prepared() || ALWAYS_OPEN.iter().any(|p| path.starts_with(p)) {
            futures::future::Either::Left(self.inner.call(request))
        } else {
            let status =
                tonic::Status::unavailable("starting: waiting for the database and the buses");
            futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
        }
    }
}
