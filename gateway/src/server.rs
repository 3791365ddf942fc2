//! The gateway's own HTTP server: HTTP/1.1 (grpc-web, the web UI, `/metrics`) and HTTP/2
//! (gRPC) on one port, with the connection hygiene a public edge needs and tonic's
//! server does not offer:
//!
//! - a socket that sends nothing is closed after `header_read_timeout`; so is an HTTP/1.1
//!   connection that idles between requests that long, or sends its headers slower
//! - at most `max_connections_per_peer` connections from one IP address
//! - request headers up to `max_header_bytes` on both protocols (a large token is then
//!   refused by the token check, UNAUTHENTICATED, instead of the connection)
//! - HTTP/2 keep-alive pings; a peer that stops answering them is dropped
//!
//! and no `grpc-timeout` handling of its own: the proxy and the composed calls enforce
//! the caller's deadline and answer DEADLINE_EXCEEDED.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;

/// Limits of the edge.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections_per_peer: usize,
    pub max_header_bytes: u32,
    /// How long shutdown waits for calls in flight.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections_per_peer: 256,
            max_header_bytes: 256 * 1024,
            drain: Duration::from_secs(10),
        }
    }
}

/// Open connections per peer address.
#[derive(Default, Clone)]
struct Peers(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One admitted connection; gives its slot back when dropped.
struct Slot(Peers, IpAddr);

impl Peers {
    fn admit(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(self.clone(), ip))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets the calls in
/// flight finish (at most `limits.drain`).
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes as usize + 64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes)
        .max_frame_size(64 * 1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let peers = Peers::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: breathe, then go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = peers.admit(peer.ip(), limits.max_connections_per_peer) else {
            tracing::debug!(%peer, "connection refused: too many from this peer");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_bytes = limits.header_read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // A socket that never speaks holds nothing for long: the protocol is only
            // chosen once the first bytes arrive.
            if !speaks_within(&stream, first_bytes).await {
                return;
            }
            let local = stream.local_addr().ok();
            let service = tower::ServiceBuilder::new()
                .map_request(move |mut request: http::Request<hyper::body::Incoming>| {
                    // Where tonic's own server puts it: `Request::remote_addr` reads it.
                    request.extensions_mut().insert(TcpConnectInfo {
                        local_addr: local,
                        remote_addr: Some(peer),
                    });
                    request.map(Body::new)
                })
                .service(service);
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(error) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("calls still in flight after the drain time; closing");
    }
}

/// Whether `stream` has bytes to read within `wait`.
async fn speaks_within(stream: &TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_capped_and_slots_come_back() {
        let peers = Peers::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let first = peers.admit(ip, 2).unwrap();
        let _second = peers.admit(ip, 2).unwrap();
        assert!(peers.admit(ip, 2).is_none());
        assert!(peers.admit([10, 0, 0, 2].into(), 2).is_some(), "per peer");
        drop(first);
        assert!(peers.admit(ip, 2).is_some());
    }
}
