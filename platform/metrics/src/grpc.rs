//! gRPC metrics recorded around the call, so handlers carry none: [`ServerMetricsLayer`]
//! in front of a server, [`Call`] around the gateway's upstream calls.
//!
//! A call's status is its `grpc-status`: in the response headers when the answer is
//! "trailers only" (every error tonic returns), otherwise in the trailers at the end of
//! the body. [`Observed`] passes the body through untouched and records the call when
//! it sees the status; a body dropped before its end (the caller went away) is recorded
//! as `Canceled`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::code::{self, Code};
use crate::names;

/// Which side of a call is recorded, with what extra labels.
#[derive(Debug, Clone)]
enum Side {
    Server,
    /// The gateway calling upstream `name`.
    Client {
        upstream: &'static str,
    },
}

/// One call being recorded: started when made, finished once with its code (or as
/// `Canceled` when dropped unfinished). Counts `*_started_total` and the in-flight gauge
/// at once, `*_handled_total` and the histogram when finished.
#[derive(Debug)]
pub struct Call {
    side: Side,
    service: String,
    method: String,
    kind: &'static str,
    started: Instant,
    done: bool,
}

impl Call {
    /// A server-side call of `path` (`/package.Service/Method`); `None` for anything that
    /// is not an RPC path.
    pub fn server(path: &str) -> Option<Call> {
        Call::start(Side::Server, path)
    }

    /// A server-side call of `path`, labelled `unknown` unless it is in `known`: a caller
    /// must not be able to invent label values (each would be a new series).
    fn server_of(path: &str, known: &HashSet<String>) -> Option<Call> {
        if known.is_empty() || known.contains(path) {
            Call::server(path)
        } else {
            Call::server("/unknown/unknown")
        }
    }

    /// The gateway's call of `path` to `upstream`.
    pub fn client(upstream: &'static str, path: &str) -> Option<Call> {
        Call::start(Side::Client { upstream }, path)
    }

    fn start(side: Side, path: &str) -> Option<Call> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        if service.is_empty() || method.is_empty() || method.contains('/') {
            return None;
        }
        let call = Call {
            side,
            service: service.to_owned(),
            method: method.to_owned(),
            kind: kind_of(service, method),
            started: Instant::now(),
            done: false,
        };
        match &call.side {
            Side::Server => {
                metrics::counter!(names::GRPC_SERVER_STARTED, &call.labels()).increment(1);
                metrics::gauge!(names::GRPC_SERVER_IN_FLIGHT, &call.in_flight_labels())
                    .increment(1.0);
            }
            Side::Client { .. } => {
                metrics::counter!(names::GRPC_CLIENT_STARTED, &call.labels()).increment(1);
            }
        }
        Some(call)
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = vec![
            ("grpc_type", self.kind.to_owned()),
            ("grpc_service", self.service.clone()),
            ("grpc_method", self.method.clone()),
        ];
        if let Side::Client { upstream } = self.side {
            labels.push(("upstream", upstream.to_owned()));
        }
        labels
    }

    fn in_flight_labels(&self) -> [(&'static str, String); 2] {
        [
            ("grpc_service", self.service.clone()),
            ("grpc_method", self.method.clone()),
        ]
    }

    /// Records the call's end with `code` (only the first end counts).
    pub fn finish(&mut self, code: Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        let labels = self.labels();
        let mut handled = labels.clone();
        handled.push(("grpc_code", code::name(code).to_owned()));
        match self.side {
            Side::Server => {
                metrics::counter!(names::GRPC_SERVER_HANDLED, &handled).increment(1);
                metrics::histogram!(names::GRPC_SERVER_HANDLING_SECONDS, &labels).record(seconds);
                metrics::gauge!(names::GRPC_SERVER_IN_FLIGHT, &self.in_flight_labels())
                    .decrement(1.0);
            }
            Side::Client { .. } => {
                metrics::counter!(names::GRPC_CLIENT_HANDLED, &handled).increment(1);
                metrics::histogram!(names::GRPC_CLIENT_HANDLING_SECONDS, &labels).record(seconds);
            }
        }
    }

    /// Wraps `response`, recording the call when its status is known: at once for a
    /// trailers-only answer, else when the body's trailers go by.
    pub fn observe<B>(mut self, response: http::Response<B>) -> http::Response<Observed<B>> {
        let call = match response.headers().get("grpc-status") {
            Some(status) => {
                self.finish(code::parse(status.as_bytes()));
                None
            }
            None => Some(self),
        };
        response.map(|inner| Observed { inner, call })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(code::CANCELED);
    }
}

/// `unary` for our RPCs; the streaming ones gRPC itself brings are labelled as such.
fn kind_of(service: &str, method: &str) -> &'static str {
    match (service, method) {
        ("grpc.health.v1.Health", "Watch") => "server_stream",
        (s, _) if s.starts_with("grpc.reflection.") => "bidi_stream",
        _ => "unary",
    }
}

/// A response body passed through untouched, recording its call at the trailers.
#[derive(Debug)]
pub struct Observed<B> {
    inner: B,
    call: Option<Call>,
}

impl<B> Body for Observed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(ready) = &polled
            && let Some(mut call) = self.call.take()
        {
            match ready {
                Some(Ok(frame)) => match frame.trailers_ref() {
                    Some(trailers) => call.finish(
                        trailers
                            .get("grpc-status")
                            .map_or(code::UNKNOWN, |s| code::parse(s.as_bytes())),
                    ),
                    None => self.call = Some(call),
                },
                // Over without a status, or broken: the client sees no OK either.
                None | Some(Err(_)) => call.finish(code::UNKNOWN),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Records `grpc_server_*` for every gRPC call (`content-type: application/grpc…`) the
/// wrapped service answers; other HTTP requests pass unrecorded. Calls of paths outside
/// the known ones are labelled `unknown`.
#[derive(Debug, Clone, Default)]
pub struct ServerMetricsLayer {
    known: Arc<HashSet<String>>,
}

impl ServerMetricsLayer {
    /// A layer that labels calls by their own path when it is one of `paths`.
    pub fn for_paths<P: Into<String>>(paths: impl IntoIterator<Item = P>) -> ServerMetricsLayer {
        ServerMetricsLayer {
            known: Arc::new(paths.into_iter().map(Into::into).collect()),
        }
    }
}

impl<S> Layer<S> for ServerMetricsLayer {
    type Service = ServerMetrics<S>;

    fn layer(&self, inner: S) -> ServerMetrics<S> {
        ServerMetrics {
            inner,
            known: self.known.clone(),
        }
    }
}

/// The service of [`ServerMetricsLayer`].
#[derive(Debug, Clone)]
pub struct ServerMetrics<S> {
    inner: S,
    known: Arc<HashSet<String>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Req, ResBody> Service<http::Request<Req>> for ServerMetrics<S>
where
    S: Service<http::Request<Req>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = http::Response<Observed<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Req>) -> Self::Future {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let call = grpc
            .then(|| Call::server_of(request.uri().path(), &self.known))
            .flatten();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match call {
                Some(call) => call.observe(response),
                None => response.map(|inner| Observed { inner, call: None }),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn unknown_paths_are_folded_into_one_label() {
        let known: HashSet<String> = ["/s.S/M".to_owned()].into();
        assert_eq!(Call::server_of("/s.S/M", &known).unwrap().method, "M");
        let other = Call::server_of("/made.Up/Anything", &known).unwrap();
        assert_eq!(
            (other.service.as_str(), other.method.as_str()),
            ("unknown", "unknown")
        );
    }

    #[test]
    fn only_rpc_paths_are_calls() {
        assert!(Call::server("/popug.tasks.v1.TaskService/CreateTask").is_some());
        assert!(Call::server("/").is_none());
        assert!(Call::server("/metrics").is_none());
        assert!(Call::server("/a/b/c").is_none());
        assert_eq!(
            kind_of("grpc.reflection.v1.ServerReflection", "X"),
            "bidi_stream"
        );
    }

    #[tokio::test]
    async fn the_status_is_read_from_trailers_or_headers() {
        // No recorder is installed here: recording is a no-op, the body must pass as is.
        let call = Call::server("/s.S/M").unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let body = http_body_util::StreamBody::new(futures::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abc"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let response = call.observe(http::Response::new(body));
        assert!(response.body().call.is_some(), "waiting for the trailers");
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "5");

        let call = Call::server("/s.S/M").unwrap();
        let mut only = http::Response::new(http_body_util::Empty::<Bytes>::new());
        only.headers_mut()
            .insert("grpc-status", "3".parse().unwrap());
        assert!(
            call.observe(only).body().call.is_none(),
            "trailers only: done"
        );
    }
}
