//! Generic forwarding: any PopugJira RPC, by its path, to the service that owns its
//! package — after the policy check, authentication and the rate limit — with the
//! caller's authorization, trace context and remaining deadline. No code per RPC: the
//! bytes pass through, and so do the upstream's status codes.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use tonic::Status;
use tonic::transport::Channel;
use tower::{Service, ServiceExt};

use popug_auth::{Authenticator, Caller, PolicyTable};

use crate::ratelimit::RateLimiter;

/// One upstream service and the packages it serves.
#[derive(Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub packages: &'static [&'static str],
    pub channel: Channel,
}

/// Everything the proxy decides with.
pub struct ProxyState {
    pub policies: &'static PolicyTable,
    pub auth: Arc<Authenticator>,
    pub limiter: RateLimiter,
    pub upstreams: Vec<Upstream>,
    pub default_timeout: Duration,
    pub max_message_bytes: usize,
}

/// The tower service behind every path the gateway does not serve itself.
#[derive(Clone)]
pub struct Proxy(pub Arc<ProxyState>);

impl Service<http::Request<Body>> for Proxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            Ok(match state.forward(request).await {
                Ok(response) => response,
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Marks refusals made here, so clients (and the role × RPC tests) can tell them from
/// an upstream's own.
const REFUSED_BY: &str = "gateway";

pub(crate) fn refused(status: Status) -> Status {
    let mut status = status;
    if let Ok(value) = REFUSED_BY.parse() {
        status.metadata_mut().insert("x-popug-refused-by", value);
    }
    status
}

impl ProxyState {
    /// The policy check (the same [`PolicyTable::admit`] every service makes) and the
    /// rate limit of one call to `path`; the verified caller unless the RPC is public.
    /// Used for proxied and composed calls alike.
    pub async fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Option<Caller>, Status> {
        let caller = self
            .policies
            .admit(path, headers, &self.auth)
            .await
            .map_err(refused)?;
        let limit_key = match &caller {
            Some(caller) => caller.id.to_string(),
            None => peer.map_or_else(|| "anonymous".to_owned(), |addr| addr.ip().to_string()),
        };
        if !self.limiter.allow(&limit_key) {
            return Err(refused(Status::resource_exhausted(
                "rate limit exceeded; slow down",
            )));
        }
        Ok(caller)
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    async fn forward(
        &self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Body>, Status> {
        let path = request.uri().path().to_owned();
        let peer = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr());
        self.admit(&path, request.headers(), peer).await?;
        let upstream = self
            .upstreams
            .iter()
            .find(|u| {
                u.packages
                    .iter()
                    .any(|p| path.starts_with(&format!("/{p}.")))
            })
            .ok_or_else(|| refused(Status::unimplemented(format!("no upstream serves {path}"))))?;

        // The caller's deadline, capped; what is left of it travels on.
        let timeout = deadline(request.headers(), self.default_timeout);
        let headers = request.headers_mut();
        if let Ok(value) = encode_grpc_timeout(timeout).parse() {
            headers.insert("grpc-timeout", value);
        }
        popug_telemetry::inject_headers(&tracing::Span::current(), headers);

        let (parts, body) = request.into_parts();
        let body = http_body_util::Limited::new(body, self.max_message_bytes);
        let request = http::Request::from_parts(parts, tonic::body::Body::new(body));
        let mut channel = upstream.channel.clone();
        let started = tokio::time::Instant::now();
        let call = async {
            channel.ready().await?;
            channel.call(request).await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(response)) => Ok(response.map(Body::new)),
            // The channel enforces the grpc-timeout it carries, so its error at the
            // deadline is the deadline too.
            Err(_) => Err(deadline_exceeded(upstream.name, timeout)),
            Ok(Err(_)) if started.elapsed() >= timeout => {
                Err(deadline_exceeded(upstream.name, timeout))
            }
            Ok(Err(error)) => {
                tracing::warn!(upstream = upstream.name, %error, "upstream call failed");
                Err(refused(Status::unavailable(format!(
                    "{} is unavailable",
                    upstream.name
                ))))
            }
        }
    }
}

fn deadline_exceeded(upstream: &str, timeout: Duration) -> Status {
    refused(Status::deadline_exceeded(format!(
        "{upstream} did not answer within {timeout:?}"
    )))
}

/// The caller's deadline from its headers, capped at `cap` (and `cap` when it sent none).
pub fn deadline(headers: &http::HeaderMap, cap: Duration) -> Duration {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(cap, |t| t.min(cap))
}

/// `grpc-timeout` is digits and a unit: H, M, S, m (ms), u (µs), n (ns).
fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    if raw.len() < 2 || raw.len() > 9 {
        return None;
    }
    let (digits, unit) = raw.split_at(raw.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn encode_grpc_timeout(timeout: Duration) -> String {
    // At most 8 digits; milliseconds cover every deadline the gateway allows.
    format!("{}m", timeout.as_millis().clamp(1, 99_999_999))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_round_trip() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("12Q"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None, "at most 8 digits");
        assert_eq!(encode_grpc_timeout(Duration::from_secs(3)), "3000m");
        assert_eq!(encode_grpc_timeout(Duration::ZERO), "1m");
    }
}
