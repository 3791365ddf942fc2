//! Benchmark harness for PopugJira, against the real local PostgreSQL and NATS JetStream.
//!
//! Every run creates its own databases (`popug_bench_*`) and a unique stream prefix,
//! starts a real Account in-process (it only issues the access token and serves the
//! JWKS) and a real TaskKeeper as a **child process** (this same binary re-executed with
//! [`SERVE_TASKKEEPER`]), so TaskKeeper's peak resident memory (`VmHWM`) is its own and
//! not the load generator's. At the end it stops the child, drops its databases and
//! deletes its streams, also when the run failed.
//!
//! Servers: `POPUG_BENCH_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `POPUG_BENCH_NATS_URL` (default `nats://127.0.0.1:4222`; a cluster's nodes
//! separated by commas), with every stream in `POPUG_BENCH_STREAM_REPLICAS` copies
//! (default 1; 3 on a three-node cluster).

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use popug_eventbus::{Bus, Topology};
use popug_proto::popug::account::v1 as account_pb;
use popug_service::{Config, DatabaseSettings, Service};
use sqlx::{Connection, PgConnection};
use tonic::Request;
use tonic::transport::Channel;

/// First argument that turns a bench binary into a TaskKeeper server (the child).
pub const SERVE_TASKKEEPER: &str = "--serve-taskkeeper";

pub use popug_mesh::{ADMIN_PASSWORD, AUDIENCE, ISSUER};

pub fn pg_admin_url() -> String {
    std::env::var("POPUG_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("POPUG_BENCH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Copies JetStream keeps of every stream of the run (`POPUG_BENCH_STREAM_REPLICAS`).
pub fn stream_replicas() -> anyhow::Result<usize> {
    match std::env::var("POPUG_BENCH_STREAM_REPLICAS") {
        Ok(value) => value
            .parse()
            .with_context(|| format!("POPUG_BENCH_STREAM_REPLICAS={value:?}")),
        Err(_) => Ok(1),
    }
}

/// A new connection to the run's NATS server(s) (one URL, or a cluster's list).
pub async fn nats_client() -> anyhow::Result<async_nats::Client> {
    let servers = popug_eventbus::nats_servers(&nats_url())?;
    async_nats::connect(servers)
        .await
        .with_context(|| format!("NATS unreachable at {}", nats_url()))
}

/// If this process was started as the TaskKeeper child, serves until stdin closes (the
/// parent exits or stops it) and exits; otherwise returns at once. Call first in `main`.
pub fn maybe_serve_taskkeeper() {
    if std::env::args().nth(1).as_deref() != Some(SERVE_TASKKEEPER) {
        return;
    }
    let code = match serve_taskkeeper() {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("taskkeeper child: {error:#}");
            1
        }
    };
    std::process::exit(code);
}

/// Exactly what `taskkeeper serve` does (settings from `TASKKEEPER__*`), on the same
/// default runtime, with stdin EOF as the shutdown signal.
fn serve_taskkeeper() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _telemetry = popug_telemetry::init("taskkeeper");
        let settings = taskkeeper::Settings::from_env()?;
        let app = <taskkeeper::Application as Service>::build(settings).await?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            let _ = tx.send(());
        });
        app.run_until_stopped(Box::pin(async move {
            let _ = rx.await;
        }))
        .await
    })
}

/// Peak (`VmHWM`) and current (`VmRSS`) resident memory of a process, in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// CPU time (user + system) a process used so far, in seconds (assumes the usual
/// `CLK_TCK` of 100).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of `rest`.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// The 1-minute load average of the machine (how shared the two cores were).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A TaskKeeper child process.
pub struct TaskKeeperProcess {
    child: Child,
    pub grpc: SocketAddr,
    pub log: String,
}

impl TaskKeeperProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes its stdin (graceful shutdown) and waits up to 10 s, then kills it.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything one benchmark run created, so it can all be removed at the end.
pub struct Bench {
    pub prefix: String,
    pub topology: Topology,
    pub js: async_nats::jetstream::Context,
    databases: Vec<String>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    pub taskkeeper: Option<TaskKeeperProcess>,
    pub jwks_url: String,
    pub account_grpc: Option<SocketAddr>,
}

impl Bench {
    pub async fn new() -> anyhow::Result<Bench> {
        let prefix = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let client = nats_client().await?;
        Ok(Bench {
            topology: Topology::new(&prefix)?.with_replicas(stream_replicas()?)?,
            prefix,
            js: async_nats::jetstream::new(client),
            databases: Vec::new(),
            stops: Vec::new(),
            taskkeeper: None,
            jwks_url: String::new(),
            account_grpc: None,
        })
    }

    /// The bus settings of the run's services: its NATS server(s), prefix and replicas.
    pub fn bus(&self) -> anyhow::Result<popug_service::BusSettings> {
        Ok(popug_service::BusSettings {
            stream_replicas: stream_replicas()?,
            ..popug_service::BusSettings::new(nats_url(), &self.prefix)
        })
    }

    /// Creates an empty database `popug_bench_<role>_<prefix>` and returns its URL.
    pub async fn database(&mut self, role: &str) -> anyhow::Result<String> {
        let admin = pg_admin_url();
        let name = format!("popug_bench_{role}_{}", self.prefix);
        let mut conn = PgConnection::connect(&admin)
            .await
            .with_context(|| format!("PostgreSQL unreachable at {admin}"))?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let _ = conn.close().await;
        self.databases.push(name.clone());
        let slash = admin
            .rfind('/')
            .context("POPUG_BENCH_PG_URL must end with /<database>")?;
        Ok(format!("{}/{name}", &admin[..slash]))
    }

    /// Starts Account in-process (it signs the token and serves the JWKS) and returns an
    /// admin access token valid for an hour.
    pub async fn start_account(&mut self) -> anyhow::Result<String> {
        let mut settings =
            popug_mesh::account_settings(self.database("account").await?, &self.prefix);
        settings.common.bus = self.bus()?;
        settings.access_ttl = Duration::from_secs(3600);
        settings.refresh_ttl = Duration::from_secs(7200);
        let app = account::Application::build(settings).await?;
        let grpc = app.grpc_addr();
        self.jwks_url = format!("http://{}/.well-known/jwks.json", app.http_addr());
        self.account_grpc = Some(grpc);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(Box::pin(async move {
            let _ = stopped.await;
        })));
        self.stops.push(stop);
        // It listens at once and answers UNAVAILABLE until migrated and prepared.
        popug_mesh::Mesh::wait_serving(grpc, "popug.account.v1.AuthService").await;
        let channel = connect(grpc).await?;
        let tokens = account_pb::auth_service_client::AuthServiceClient::new(channel)
            .login(account_pb::LoginRequest {
                username: "admin".into(),
                password: ADMIN_PASSWORD.into(),
            })
            .await?
            .into_inner()
            .tokens
            .context("login returned no tokens")?;
        Ok(tokens.access_token)
    }

    /// TaskKeeper settings for this run's database, prefix and Account.
    pub fn taskkeeper_settings(
        &self,
        database_url: &str,
        chunk_size: usize,
    ) -> taskkeeper::Settings {
        let mut settings =
            popug_mesh::taskkeeper_settings(database_url.to_owned(), &self.prefix, &self.jwks_url);
        settings.common.database.max_connections = 16;
        settings.reassign_chunk_size = chunk_size;
        settings.common.bus = self.bus().expect("valid bench bus settings");
        settings
    }

    /// Starts TaskKeeper as a child process with `settings` (passed as `TASKKEEPER__*`,
    /// `extra_env` on top) and waits until its gRPC port answers.
    pub async fn spawn_taskkeeper(
        &mut self,
        settings: &taskkeeper::Settings,
        extra_env: &[(&str, String)],
    ) -> anyhow::Result<&TaskKeeperProcess> {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let grpc = SocketAddr::from(([127, 0, 0, 1], port));
        let log = format!("/tmp/popug-bench-{}-taskkeeper.log", self.prefix);
        let out = std::fs::File::create(&log)?;
        let common = &settings.common;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg(SERVE_TASKKEEPER)
            .env("TASKKEEPER__GRPC_ADDR", grpc.to_string())
            .env("TASKKEEPER__DATABASE_URL", &common.database.url)
            .env(
                "TASKKEEPER__DATABASE_MAX_CONNECTIONS",
                common.database.max_connections.to_string(),
            )
            .env("TASKKEEPER__NATS_URL", &common.bus.nats_url)
            .env("TASKKEEPER__STREAM_PREFIX", &common.bus.stream_prefix)
            .env(
                "TASKKEEPER__STREAM_REPLICAS",
                common.bus.stream_replicas.to_string(),
            )
            .env("TASKKEEPER__ISSUER", &common.tokens.issuer)
            .env("TASKKEEPER__AUDIENCE", &common.tokens.audience)
            .env("TASKKEEPER__JWKS_URL", &common.tokens.jwks_url)
            .env(
                "TASKKEEPER__REASSIGN_CHUNK_SIZE",
                settings.reassign_chunk_size.to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("taskkeeper child exited early ({status}); see {log}");
            }
            if tokio::net::TcpStream::connect(grpc).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                anyhow::bail!("taskkeeper child did not listen within 60 s; see {log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        popug_mesh::Mesh::wait_serving(grpc, "popug.tasks.v1.TaskService").await;
        Ok(self
            .taskkeeper
            .insert(TaskKeeperProcess { child, grpc, log }))
    }

    /// A new database of this run, migrated with `migrator` (and the event bus's tables),
    /// and a pool of `connections` to it.
    pub async fn migrated_database(
        &mut self,
        role: &str,
        migrator: &sqlx::migrate::Migrator,
        connections: u32,
    ) -> anyhow::Result<sqlx::PgPool> {
        let settings = DatabaseSettings {
            max_connections: connections,
            ..DatabaseSettings::new(self.database(role).await?)
        };
        popug_service::connect::database(&settings, migrator).await
    }

    /// Messages currently in `bus`'s stream.
    pub async fn stream_messages(&self, bus: Bus) -> anyhow::Result<u64> {
        let stream = self
            .js
            .get_stream_no_info(self.topology.stream(bus))
            .await?;
        Ok(stream.get_info().await?.state.messages)
    }

    /// Stops everything this run started and removes what it created; reports, never
    /// fails.
    pub async fn cleanup(mut self) {
        if let Some(tk) = self.taskkeeper.take() {
            let _ = tokio::task::spawn_blocking(move || tk.stop()).await;
        }
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut streams = 0;
        for bus in Bus::ALL {
            if self
                .js
                .delete_stream(self.topology.stream(bus))
                .await
                .is_ok()
            {
                streams += 1;
            }
        }
        let mut dropped = Vec::new();
        match PgConnection::connect(&pg_admin_url()).await {
            Ok(mut conn) => {
                for name in &self.databases {
                    match sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await
                    {
                        Ok(_) => dropped.push(name.as_str()),
                        Err(e) => eprintln!("cleanup: could not drop {name}: {e}"),
                    }
                }
            }
            Err(e) => eprintln!("cleanup: PostgreSQL unreachable: {e}"),
        }
        println!(
            "cleanup: deleted {streams} streams with prefix {}, dropped databases {}",
            self.prefix,
            dropped.join(", ")
        );
    }
}

/// The `main` of a benchmark binary: the TaskKeeper child when re-executed as one,
/// otherwise the command line read into a configuration by `config` and handed to `body`
/// (see [`run`]).
pub fn main<C>(
    config: impl FnOnce(&Args) -> anyhow::Result<C>,
    body: impl AsyncFnOnce(&mut Bench, C) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    maybe_serve_taskkeeper();
    let config = config(&Args::from_env())?;
    run(async |bench| body(bench, config).await)
}

/// A multi-threaded runtime, a fresh [`Bench`] for `body`,
/// and the cleanup of everything it created, whatever `body` returned.
pub fn run(body: impl AsyncFnOnce(&mut Bench) -> anyhow::Result<()>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut bench = Bench::new().await?;
            let result = body(&mut bench).await;
            bench.cleanup().await;
            result
        })
}

/// A gRPC channel to `addr`.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

/// `message` with `authorization: Bearer <token>`.
pub fn with_token<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Migrates TaskKeeper's database of `settings` (before TaskKeeper starts, so its memory
/// is only its own work), seeds `users` assignable users and returns a connection to it.
pub async fn prepare_taskkeeper_db(
    settings: &taskkeeper::Settings,
    users: i64,
) -> anyhow::Result<PgConnection> {
    let database = &settings.common.database;
    popug_service::connect::database(database, &taskkeeper::startup::MIGRATOR)
        .await?
        .close()
        .await;
    let mut conn = PgConnection::connect(&database.url).await?;
    seed_users(&mut conn, users).await?;
    Ok(conn)
}

/// Inserts `users` assignable workers straight into TaskKeeper's `users` table, as its
/// account-bus consumer would have (active worker, assignable, version 1).
pub async fn seed_users(conn: &mut PgConnection, users: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO users (id, username, role, active, assignable, version)
         SELECT gen_random_uuid(), 'bench' || g, 'worker', true, true, 1
         FROM generate_series(1, $1) g",
    )
    .bind(users)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts `tasks` open tasks, spread round-robin over the assignable users, in slices
/// of 100,000 rows (one statement each).
pub async fn seed_open_tasks(conn: &mut PgConnection, tasks: i64) -> anyhow::Result<()> {
    let slice = 100_000;
    let mut from = 1;
    while from <= tasks {
        let to = (from + slice - 1).min(tasks);
        sqlx::query(
            "WITH a AS (SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE assignable)
             INSERT INTO tasks (id, title, jira_id, description, assignee_id, status)
             SELECT gen_random_uuid(), 'Bench task ' || g, 'BENCH-' || g,
                    'seeded by popug-bench', a.ids[1 + g % cardinality(a.ids)], 'open'
             FROM a, generate_series($1::bigint, $2::bigint) g",
        )
        .bind(from)
        .bind(to)
        .execute(&mut *conn)
        .await?;
        from = to + 1;
    }
    Ok(())
}

/// Percentile (0..=100) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Simple `--name value` argument parsing with defaults.
pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Args {
        Args(std::env::args().skip(1).collect())
    }

    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let flag = format!("--{name}");
        match self.0.iter().position(|a| *a == flag) {
            None => Ok(default),
            Some(i) => {
                let raw = self
                    .0
                    .get(i + 1)
                    .with_context(|| format!("{flag} needs a value"))?;
                // Allow 1_000_000 and 1,000,000.
                let clean: String = raw.chars().filter(|c| *c != '_' && *c != ',').collect();
                clean
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{flag} {raw:?}: {e}"))
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| *a == format!("--{name}"))
    }
}
