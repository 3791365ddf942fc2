//! The tower layer in front of every internal service's RPCs: each call is decided by
//! [`PolicyTable::admit`] — the policy declared next to its RPC in `proto/`, the same
//! check the gateway makes — and handlers get the verified [`Caller`]. Health checks and
//! reflection stay open.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::authn::Authenticator;
use crate::claims::Caller;
use crate::policy::PolicyTable;

/// Paths every service leaves open: health checks and reflection.
const ALWAYS_PUBLIC: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Admits each call by its RPC's declared policy.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Arc<Authenticator>,
    policies: &'static PolicyTable,
}

impl AuthLayer {
    pub fn new(authenticator: Arc<Authenticator>, policies: &'static PolicyTable) -> AuthLayer {
        AuthLayer {
            authenticator,
            policies,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the router.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, R> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = crate::verify::BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let path = request.uri().path();
            if !ALWAYS_PUBLIC.iter().any(|p| path.starts_with(p)) {
                let admitted = layer
                    .policies
                    .admit(path, request.headers(), &layer.authenticator)
                    .await;
                match admitted {
                    Ok(Some(caller)) => {
                        request.extensions_mut().insert(caller);
                    }
                    Ok(None) => {}
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// The verified caller of a request that went through [`AuthLayer`]; UNAUTHENTICATED for
/// a public RPC, which has none.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| tonic::Status::unauthenticated("missing access token"))
}
