//! The mesh as separate processes: each service runs from `popug-node` (the test mesh's
//! binary that holds all four, built by cargo for these tests) with its own environment,
//! telemetry and log file — what production runs, for the tests that need process
//! boundaries (one trace across them, a kill -9). Everything it starts is killed when it
//! is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use popug_testkit::servers::free_port;

use crate::{ADMIN_PASSWORD, Mesh};

/// One running service process.
pub struct Node {
    pub service: &'static str,
    /// Its gRPC (the gateway: public) address.
    pub addr: SocketAddr,
    /// Where it serves `GET /metrics`.
    pub metrics: SocketAddr,
    pub log: PathBuf,
    /// The gRPC service its health reports ("" for the gateway's own).
    health: &'static str,
    /// Its own settings (addresses, database), to start it again.
    own: Vec<(String, String)>,
    child: Child,
}

/// The four services as processes, sharing a stream prefix, each with its own database.
pub struct Nodes {
    pub nodes: Vec<Node>,
    pub prefix: String,
    /// The environment every node was started with (beside its own addresses).
    pub env: HashMap<String, String>,
    /// `popug-node`.
    binary: PathBuf,
    dir: PathBuf,
}

impl Nodes {
    /// Starts Account, TaskKeeper, Accounting and the gateway from `binary` (a test's
    /// `env!("CARGO_BIN_EXE_popug-node")`) with `extra` in their environment (e.g.
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), and waits until each reports SERVING.
    pub async fn start(binary: &str, extra: &[(&str, &str)]) -> Nodes {
        Nodes::start_with(binary, extra, &[], 1).await
    }

    /// [`Nodes::start`] with `replicas` of some services (`("taskkeeper", 2)`: two
    /// processes on one database, each a gateway endpoint) and `gateways` gateways, each
    /// balancing over every replica.
    pub async fn start_with(
        binary: &str,
        extra: &[(&str, &str)],
        replicas: &[(&str, usize)],
        gateways: usize,
    ) -> Nodes {
        let prefix = popug_testkit::unique_prefix();
        let dir = std::env::temp_dir().join(format!("popug-nodes-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env: HashMap<String, String> = HashMap::new();
        let account_http = free_port();
        let jwks = format!("http://127.0.0.1:{account_http}/.well-known/jwks.json");
        for service in ["ACCOUNT", "TASKKEEPER", "ACCOUNTING", "GATEWAY"] {
            env.insert(format!("{service}__STREAM_PREFIX"), prefix.clone());
            env.insert(format!("{service}__NATS_URL"), popug_testkit::nats_url());
            env.insert(format!("{service}__ISSUER"), crate::ISSUER.into());
            env.insert(format!("{service}__AUDIENCE"), crate::AUDIENCE.into());
            if service != "ACCOUNT" {
                env.insert(format!("{service}__JWKS_URL"), jwks.clone());
            }
        }
        env.insert(
            "ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD".into(),
            ADMIN_PASSWORD.into(),
        );
        env.insert("ACCOUNTING__CLOSE_CHECK_SECONDS".into(), "0".into());
        env.insert(
            "ACCOUNTING__SMTP_PORT".into(),
            crate::closed_addr().port().to_string(),
        );
        env.insert("GATEWAY__REDIS_URL".into(), popug_testkit::redis_url());
        env.insert("GATEWAY__CACHE_PREFIX".into(), format!("{prefix}:gw:"));
        env.insert("GATEWAY__RATE_LIMIT_PER_SEC".into(), "10000".into());
        env.insert("GATEWAY__RATE_LIMIT_BURST".into(), "10000".into());
        // The caller's own settings win (NATS_URL of a cluster, say).
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut nodes = Nodes {
            nodes: Vec::new(),
            prefix,
            env,
            binary: PathBuf::from(binary),
            dir,
        };
        let count = |service: &str| {
            replicas
                .iter()
                .find(|(s, _)| *s == service)
                .map_or(1, |(_, n)| *n)
        };
        let mut upstreams = Vec::new();
        for (service, health) in [
            ("account", "popug.account.v1.AuthService"),
            ("taskkeeper", "popug.tasks.v1.TaskService"),
            ("accounting", "popug.accounting.v1.AccountingService"),
        ] {
            let database = popug_testkit::fresh_database().await;
            let upper = service.to_uppercase();
            let mut urls = Vec::new();
            for replica in 0..count(service) {
                let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
                let mut own = vec![
                    (format!("{upper}__GRPC_ADDR"), addr.to_string()),
                    (format!("{upper}__DATABASE_URL"), database.clone()),
                ];
                // Account serves its metrics beside the JWKS (the first one's is the
                // JWKS every verifier reads).
                let metrics = if service == "account" {
                    let port = if replica == 0 {
                        account_http
                    } else {
                        free_port()
                    };
                    own.push(("ACCOUNT__HTTP_ADDR".into(), format!("127.0.0.1:{port}")));
                    SocketAddr::from(([127, 0, 0, 1], port))
                } else {
                    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    own.push((format!("{upper}__METRICS_ADDR"), metrics.to_string()));
                    metrics
                };
                nodes.spawn(service, health, addr, metrics, own);
                Mesh::wait_serving(addr, health).await;
                urls.push(format!("http://{addr}"));
            }
            upstreams.push((format!("GATEWAY__{upper}_URL"), urls.join(",")));
        }
        for _ in 0..gateways {
            let gateway: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut own = upstreams.clone();
            own.push(("GATEWAY__LISTEN_ADDR".into(), gateway.to_string()));
            nodes.spawn("gateway", "", gateway, gateway, own);
            Mesh::wait_serving(gateway, "").await;
        }
        nodes
    }

    /// Kills node `index` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let _ = node.child.kill();
        let _ = node.child.wait();
    }

    /// Starts node `index` again (after [`Nodes::kill`]) with its own settings, and
    /// waits until it is SERVING.
    pub async fn restart(&mut self, index: usize) {
        let node = &self.nodes[index];
        let (service, health, addr) = (node.service, node.health, node.addr);
        let child = self.command(service, &node.own, &node.log, true);
        self.nodes[index].child = child;
        Mesh::wait_serving(addr, health).await;
    }

    /// The indexes of the nodes running `service`.
    pub fn replicas(&self, service: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].service == service)
            .collect()
    }

    fn spawn(
        &mut self,
        service: &'static str,
        health: &'static str,
        addr: SocketAddr,
        metrics: SocketAddr,
        own: Vec<(String, String)>,
    ) {
        let log = self.dir.join(format!("{service}-{}.log", self.nodes.len()));
        let child = self.command(service, &own, &log, false);
        self.nodes.push(Node {
            service,
            health,
            addr,
            metrics,
            log,
            own,
            child,
        });
    }

    fn command(&self, service: &str, own: &[(String, String)], log: &Path, append: bool) -> Child {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(log)
            .unwrap();
        Command::new(&self.binary)
            .args([service, "serve"])
            .envs(&self.env)
            .envs(own.iter().map(|(k, v)| (k, v)))
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start popug-node {service}: {e}"))
    }

    /// The database of `service` (every replica shares it).
    pub fn database(&self, service: &str) -> String {
        let name = format!("{}__DATABASE_URL", service.to_uppercase());
        let node = self.node(service);
        node.own
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, url)| url.clone())
            .unwrap_or_else(|| panic!("{service} has no database"))
    }

    /// The first node running `service`.
    pub fn node(&self, service: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.service == service)
            .unwrap_or_else(|| panic!("no {service} node"))
    }

    pub fn gateway(&self) -> SocketAddr {
        self.node("gateway").addr
    }

    /// `GET /metrics` of `service`'s first node (plain HTTP/1.0): the Prometheus text.
    pub fn metrics(&self, service: &str) -> String {
        use std::io::{Read, Write};
        let addr = self.node(service).metrics;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        match answer.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
                body.to_owned()
            }
            _ => panic!("GET http://{addr}/metrics answered {answer:?}"),
        }
    }

    /// Everything `service`'s first node logged so far.
    pub fn log(&self, service: &str) -> String {
        read(&self.node(service).log)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("node logs kept in {}", self.dir.display());
        }
    }
}
