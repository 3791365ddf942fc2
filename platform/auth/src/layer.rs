//! The tower layer in front of every internal service's RPCs: no valid access token, no
//! call — except the public paths (login, refresh, JWKS, health, reflection).

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::claims::Caller;
use crate::verify::Verifier;

/// Paths every service leaves open: health checks and reflection.
const ALWAYS_PUBLIC: [&str; 3] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Requires a valid bearer token on every path not listed as public.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    /// Extra public path prefixes, e.g. `/popug.account.v1.AuthService/`.
    public: Arc<[String]>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<Verifier>, public: impl IntoIterator<Item = String>) -> AuthLayer {
        AuthLayer {
            verifier,
            public: public.into_iter().collect(),
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
            let public = ALWAYS_PUBLIC.iter().any(|p| path.starts_with(p))
                || layer.public.iter().any(|p| path.starts_with(p.as_str()));
            if !public {
                match authenticate(&layer.verifier, request.headers()).await {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                    }
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

/// The bearer token of `headers`, verified.
pub async fn authenticate(
    verifier: &Verifier,
    headers: &http::HeaderMap,
) -> Result<Caller, tonic::Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| tonic::Status::unauthenticated("missing access token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| tonic::Status::unauthenticated("authorization must be 'Bearer <token>'"))?
        .trim();
    let claims = verifier
        .verify(token)
        .await
        .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
    Caller::from_claims(claims, token.to_owned())
        .ok_or_else(|| tonic::Status::unauthenticated("token claims invalid"))
}

/// The verified caller of a request that went through [`AuthLayer`].
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| tonic::Status::unauthenticated("missing access token"))
}
