//! Generic forwarding: any PopugJira RPC, by its path, to the service that owns its
//! package — after the policy check, authentication and the rate limit — with the
//! caller's authorization, trace context and remaining deadline. No code per RPC: the
//! bytes pass through, and so do the upstream's status codes.

mod deadlines;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use popug_auth::{Authenticator, Caller, PolicyTable};
use popug_metrics::grpc::Call;
use popug_metrics::names;

use crate::ratelimit::RateLimiter;
use crate::upstream::Endpoints;
use deadlines::{deadline_exceeded, deadline_not_cancel, encode_grpc_timeout};

pub use deadlines::deadline;

/// One upstream service, the packages it serves and its endpoints.
#[derive(Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub packages: &'static [&'static str],
    pub endpoints: Arc<Endpoints>,
}

impl Upstream {
    /// A channel to one of its endpoints (for composed calls).
    pub fn channel(&self) -> Channel {
        self.endpoints.channel()
    }
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
            let http1 = request.version() < http::Version::HTTP_2;
            Ok(match state.forward(request).await {
                Ok(response) => response,
                Err(Refusal { status, unread }) => {
                    let mut response = status.into_http();
                    if unread && http1 {
                        // The caller's body was left unread: this HTTP/1.1 connection
                        // cannot carry another call, and the caller must know it.
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    response
                }
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
    /// Used for proxied and composed calls alike; each refusal is counted in
    /// `gateway_refused_total`.
    pub async fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Option<Caller>, Status> {
        let admitted = self.check(path, headers, peer).await;
        if let Err(status) = &admitted {
            let (reason, cause) = refusal(status);
            metrics::counter!(names::GATEWAY_REFUSED, "reason" => reason, "cause" => cause)
                .increment(1);
        }
        admitted
    }

    async fn check(
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

    /// Forwards one call: reads its body (so a refusal leaves the connection usable and
    /// a read can be sent again), admits it, and calls an endpoint of its upstream within
    /// the caller's deadline. A call whose endpoint refuses the connection is tried once
    /// more on another; so is a read (`idempotency_level = NO_SIDE_EFFECTS`) whose
    /// endpoint fails in any way; a write that may have arrived never is.
    async fn forward(&self, request: http::Request<Body>) -> Result<http::Response<Body>, Refusal> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let peer = parts
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr());
        let body = self.read_body(body, &parts.headers).await?;
        self.admit(&path, &parts.headers, peer).await?;
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
        let timeout = deadline(&parts.headers, self.default_timeout);
        let mut headers = upstream_headers(&parts.headers);
        if let Ok(value) = encode_grpc_timeout(timeout).parse() {
            headers.insert("grpc-timeout", value);
        }
        // The call to the upstream is a client span of its own, child of the gateway's
        // server span; the upstream's server span is its child.
        let client_span = tracing::info_span!(
            "upstream",
            upstream = upstream.name,
            rpc = %path,
            otel.kind = "client",
        );
        popug_telemetry::inject_headers(&client_span, &mut headers);

        let retry = self.policies.is_read(&path);
        let started = tokio::time::Instant::now();
        let mut recorded = Call::client(upstream.name, &path);
        let mut node = upstream.endpoints.pick(None);
        let mut tries = 0;
        let outcome = loop {
            tries += 1;
            let _in_flight = node.begin();
            let mut request = http::Request::new(tonic::body::Body::new(
                http_body_util::Full::new(body.clone()),
            ));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = headers.clone();
            let mut channel = node.channel.clone();
            // The whole answer (every RPC here is unary): a replica that dies after its
            // headers is then a failed call like any other — sent again elsewhere when
            // that is safe, UNAVAILABLE otherwise — never half an answer that the
            // caller's client reports as INTERNAL.
            let call = async {
                channel.ready().await?;
                let (head, body) = channel.call(request).await?.into_parts();
                let whole = body.collect().await?;
                Ok::<_, tower::BoxError>(http::Response::from_parts(head, whole))
            };
            let call = tracing::Instrument::instrument(call, client_span.clone());
            let left = timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, call).await {
                Ok(Ok(response)) => {
                    let response = deadline_not_cancel(response);
                    return Ok(match recorded.take() {
                        Some(recorded) => recorded.observe(response).map(Body::new),
                        None => response.map(Body::new),
                    });
                }
                // The channel enforces the grpc-timeout it carries, so its error at the
                // deadline is the deadline too.
                Err(_) => break Err(deadline_exceeded(upstream.name, timeout)),
                Ok(Err(_)) if started.elapsed() >= timeout => {
                    break Err(deadline_exceeded(upstream.name, timeout));
                }
                Ok(Err(error)) => {
                    tracing::warn!(upstream = upstream.name, endpoint = %node.uri, %error, "upstream call failed");
                    node.eject();
                    // Sent again elsewhere: a read whatever happened, a write only when it
                    // never left (the endpoint refused the connection).
                    if tries == 1 && (retry || never_sent(error.as_ref())) {
                        node = upstream.endpoints.pick(Some(&node));
                        continue;
                    }
                    break Err(refused(Status::unavailable(format!(
                        "{} is unavailable",
                        upstream.name
                    ))));
                }
            }
        };
        if let (Some(mut recorded), Err(status)) = (recorded, &outcome) {
            recorded.finish(status.code() as u16);
        }
        Ok(outcome?)
    }

    /// The whole request body, at most `max_message_bytes` (a gRPC call's body is one
    /// message). Larger is RESOURCE_EXHAUSTED, and the rest is left unread.
    async fn read_body(&self, body: Body, headers: &http::HeaderMap) -> Result<Bytes, Refusal> {
        let too_large = || Refusal {
            status: refused(Status::resource_exhausted(format!(
                "request larger than {} bytes",
                self.max_message_bytes
            ))),
            unread: true,
        };
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // grpc-web-text declares its base64 length: a third over the bytes it carries.
        let text = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web-text"));
        let limit = if text {
            self.max_message_bytes / 3 * 4 + 8
        } else {
            self.max_message_bytes
        };
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        match http_body_util::Limited::new(body, self.max_message_bytes)
            .collect()
            .await
        {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(error) => Err(Refusal {
                status: refused(Status::cancelled(format!(
                    "the request body broke off: {error}"
                ))),
                unread: true,
            }),
        }
    }
}

/// Whether a failed call never reached its endpoint: the connection could not be made.
fn never_sent(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// A call the gateway answers itself: its status, and whether the caller's body was left
/// unread (the HTTP/1.1 connection then has to close).
pub struct Refusal {
    pub status: Status,
    pub unread: bool,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Refusal {
        Refusal {
            status,
            unread: false,
        }
    }
}

/// The caller's headers as the upstream gets them: without those of the caller's
/// connection (the upstream call is a new HTTP/2 request; grpc-web-text's
/// `content-length` counted base64), with `te: trailers` as gRPC wants.
fn upstream_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut out = headers.clone();
    for name in [
        http::header::CONTENT_LENGTH,
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::HOST,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        out.remove(name);
    }
    out.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    out
}

/// The `reason` and `cause` labels of a refusal.
fn refusal(status: &Status) -> (&'static str, &'static str) {
    match status.code() {
        Code::Unauthenticated => {
            let message = status.message();
            let cause = if message.contains("missing") || message.starts_with("authorization") {
                "missing"
            } else if message.contains("expired") {
                "expired"
            } else if message == popug_auth::revocation::REVOKED {
                "revoked"
            } else {
                "invalid"
            };
            ("unauthenticated", cause)
        }
        Code::PermissionDenied => ("permission_denied", ""),
        Code::ResourceExhausted => ("rate_limited", ""),
        Code::Unimplemented => ("unimplemented", ""),
        _ => ("other", ""),
    }
}

/// Every `gateway_refused_total` series, at zero (an alert on increase() sees the first).
pub fn register_refusals() {
    let series = [
        ("unauthenticated", "missing"),
        ("unauthenticated", "invalid"),
        ("unauthenticated", "expired"),
        ("unauthenticated", "revoked"),
        ("permission_denied", ""),
        ("rate_limited", ""),
        ("unimplemented", ""),
    ];
    for (reason, cause) in series {
        metrics::counter!(names::GATEWAY_REFUSED, "reason" => reason, "cause" => cause)
            .increment(0);
    }
}
