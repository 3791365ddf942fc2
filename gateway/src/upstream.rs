//! An upstream service as a set of endpoints the gateway balances over.
//!
//! Each upstream is configured with one or more URLs (`GATEWAY__TASKKEEPER_URL=
//! http://10.0.0.5:50052,http://10.0.0.6:50052`); a URL whose host is a name, not an
//! address, is resolved again every few seconds and each address it has becomes an
//! endpoint (a Kubernetes headless Service lists every ready pod). A call goes to the
//! less loaded of two healthy endpoints picked at random (power of two choices, by calls
//! in flight). An endpoint whose connection fails is ejected — skipped for a while that
//! doubles with each failure in a row (0.5 s up to 8 s) — and the health prober lets it
//! back as soon as it answers SERVING. With every endpoint ejected, calls still go to the
//! one ejected longest ago: a wrong ejection must not take the service down.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Shortest and longest ejection.
const EJECT_MIN: Duration = Duration::from_millis(500);
const EJECT_MAX: Duration = Duration::from_secs(8);

/// How an endpoint's channels are made.
#[derive(Debug, Clone)]
pub struct Dialing {
    pub connect_timeout: Duration,
}

/// One address of an upstream.
#[derive(Debug)]
pub struct Node {
    /// `http://host:port` as dialled.
    pub uri: String,
    pub channel: Channel,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    ejected: Mutex<Option<Instant>>,
}

impl Node {
    fn new(uri: String, dialing: &Dialing) -> Result<Node, tonic::transport::Error> {
        let channel = Endpoint::from_shared(uri.clone())?
            .connect_timeout(dialing.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        Ok(Node {
            uri,
            channel,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected: Mutex::new(None),
        })
    }

    /// Until when it is ejected, if it is.
    fn ejected_until(&self) -> Option<Instant> {
        *self.ejected.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn healthy(&self, now: Instant) -> bool {
        self.ejected_until().is_none_or(|until| until <= now)
    }

    /// Its connection failed: skip it for a while (longer after each failure in a row).
    pub fn eject(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).min(4);
        let pause = (EJECT_MIN * 2u32.pow(failures)).min(EJECT_MAX);
        *self.ejected.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + pause);
        tracing::warn!(endpoint = %self.uri, ?pause, "upstream endpoint ejected");
    }

    /// It answered: back in rotation.
    pub fn restore(&self) {
        self.failures.store(0, Ordering::Relaxed);
        let was = self
            .ejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if was.is_some() {
            tracing::info!(endpoint = %self.uri, "upstream endpoint back");
        }
    }

    /// Counts a call in flight until the guard is dropped.
    pub fn begin(self: &Arc<Node>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    fn load(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A call in flight on a node.
pub struct InFlight(Arc<Node>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an upstream is configured with: fixed addresses and names to resolve.
#[derive(Debug, Clone)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
    /// An address literal: never resolved.
    fixed: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .ok_or_else(|| format!("{url:?} has no port"))?;
        let fixed = host.parse::<std::net::IpAddr>().is_ok();
        Ok(Target {
            scheme,
            host,
            port,
            fixed,
        })
    }

    fn uri(&self, addr: Option<SocketAddr>) -> String {
        match addr {
            Some(addr) => format!("{}://{addr}", self.scheme),
            None => format!("{}://{}:{}", self.scheme, self.host, self.port),
        }
    }
}

/// The endpoints of one upstream service.
pub struct Endpoints {
    pub name: &'static str,
    targets: Vec<Target>,
    dialing: Dialing,
    nodes: RwLock<Vec<Arc<Node>>>,
}

impl Endpoints {
    /// The endpoints of `urls` (comma-separated). Names are resolved by [`Endpoints::resolve`];
    /// until then (and when a name resolves to nothing) the name itself is dialled.
    pub fn new(name: &'static str, urls: &str, dialing: Dialing) -> Result<Arc<Endpoints>, String> {
        let targets = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Target::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(format!("no {name} endpoint configured"));
        }
        let nodes = targets
            .iter()
            .map(|t| Node::new(t.uri(None), &dialing).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Endpoints {
            name,
            targets,
            dialing,
            nodes: RwLock::new(nodes),
        }))
    }

    /// Every endpoint now.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The endpoint for the next call: of two healthy ones picked at random, the one with
    /// fewer calls in flight; never `avoid` unless it is the only one.
    pub fn pick(&self, avoid: Option<&Arc<Node>>) -> Arc<Node> {
        let nodes = self.nodes();
        let now = Instant::now();
        let others: Vec<&Arc<Node>> = nodes
            .iter()
            .filter(|n| avoid.is_none_or(|a| !Arc::ptr_eq(a, n)))
            .collect();
        let pool = if others.is_empty() {
            nodes.iter().collect()
        } else {
            others
        };
        let healthy: Vec<&Arc<Node>> = pool.iter().copied().filter(|n| n.healthy(now)).collect();
        let choice = match healthy.len() {
            0 => pool.iter().copied().min_by_key(|n| n.ejected_until()),
            1 => Some(healthy[0]),
            len => {
                let a = fastrand(len);
                let b = (a + 1 + fastrand(len - 1)) % len;
                let (a, b) = (healthy[a], healthy[b]);
                Some(if b.load() < a.load() { b } else { a })
            }
        };
        // `nodes` is never empty: `new` refuses an upstream without endpoints and
        // `resolve` keeps the name when it resolves to nothing.
        choice.cloned().unwrap_or_else(|| nodes[0].clone())
    }

    /// A channel to some endpoint (for composed calls).
    pub fn channel(&self) -> Channel {
        self.pick(None).channel.clone()
    }

    /// Resolves the names again and reconciles the endpoints: new addresses join, gone
    /// ones leave (their calls in flight finish on their own channel).
    pub async fn resolve(&self) {
        if self.targets.iter().all(|t| t.fixed) {
            return;
        }
        let mut uris = Vec::new();
        for target in &self.targets {
            if target.fixed {
                uris.push(target.uri(None));
                continue;
            }
            match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                Ok(addrs) => {
                    let before = uris.len();
                    uris.extend(addrs.map(|a| target.uri(Some(a))));
                    if uris.len() == before {
                        uris.push(target.uri(None));
                    }
                }
                Err(error) => {
                    tracing::warn!(upstream = self.name, host = %target.host, %error, "cannot resolve");
                    uris.push(target.uri(None));
                }
            }
        }
        let wanted: HashSet<&String> = uris.iter().collect();
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        let had: HashSet<String> = nodes.iter().map(|n| n.uri.clone()).collect();
        nodes.retain(|n| wanted.contains(&n.uri));
        for uri in uris.iter().filter(|u| !had.contains(*u)) {
            match Node::new(uri.clone(), &self.dialing) {
                Ok(node) => {
                    tracing::info!(upstream = self.name, endpoint = %uri, "endpoint added");
                    nodes.push(Arc::new(node));
                }
                Err(error) => tracing::warn!(endpoint = %uri, %error, "bad endpoint"),
            }
        }
    }

    /// Checks every endpoint's health for `service`: one that answers SERVING is restored,
    /// one that does not is ejected. Whether any endpoint serves.
    pub async fn probe(&self, service: &str) -> bool {
        let mut any = false;
        for node in self.nodes() {
            let mut client = HealthClient::new(node.channel.clone());
            let request = HealthCheckRequest {
                service: service.to_owned(),
            };
            let serving = matches!(
                tokio::time::timeout(Duration::from_secs(1), client.check(request)).await,
                Ok(Ok(response)) if response.get_ref().status == 1
            );
            if serving {
                node.restore();
                any = true;
            } else if node.healthy(Instant::now()) {
                node.eject();
            }
        }
        any
    }
}

/// A random index below `n` (n > 0), from the thread's fast RNG.
fn fastrand(n: usize) -> usize {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x9e37_79b9_7f4a_7c15);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dialing() -> Dialing {
        Dialing {
            connect_timeout: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn urls_become_endpoints_and_bad_ones_are_refused() {
        let e = Endpoints::new("t", "http://127.0.0.1:1, http://127.0.0.1:2", dialing()).unwrap();
        assert_eq!(e.nodes().len(), 2);
        assert!(Endpoints::new("t", "", dialing()).is_err());
        assert!(Endpoints::new("t", "http://127.0.0.1", dialing()).is_err());
    }

    #[tokio::test]
    async fn picks_spread_skip_ejected_and_avoid_the_failed_one() {
        let e = Endpoints::new("t", "http://127.0.0.1:1,http://127.0.0.1:2", dialing()).unwrap();
        let nodes = e.nodes();
        let mut seen = HashSet::new();
        for _ in 0..50 {
            seen.insert(e.pick(None).uri.clone());
        }
        assert_eq!(seen.len(), 2, "both endpoints are used");
        // Busy nodes lose the comparison.
        let _busy: Vec<InFlight> = (0..5).map(|_| nodes[0].begin()).collect();
        for _ in 0..20 {
            assert_eq!(e.pick(None).uri, nodes[1].uri);
        }
        // An ejected node is skipped; a retry avoids the node that failed.
        nodes[1].eject();
        for _ in 0..20 {
            assert_eq!(e.pick(None).uri, nodes[0].uri);
        }
        assert_eq!(
            e.pick(Some(&nodes[0])).uri,
            nodes[1].uri,
            "the only other one"
        );
        // All ejected: still an answer.
        nodes[0].eject();
        let _ = e.pick(None);
        nodes[1].restore();
        assert_eq!(e.pick(None).uri, nodes[1].uri);
    }

    #[tokio::test]
    async fn names_resolve_to_every_address() {
        let e = Endpoints::new("t", "http://localhost:50052", dialing()).unwrap();
        assert_eq!(
            e.nodes()[0].uri,
            "http://localhost:50052",
            "dialled by name first"
        );
        e.resolve().await;
        let uris: Vec<String> = e.nodes().iter().map(|n| n.uri.clone()).collect();
        assert!(
            uris.iter()
                .all(|u| u.starts_with("http://127.0.0.1:") || u.starts_with("http://[::1]:")),
            "{uris:?}"
        );
    }
}
