//! The settings every service shares, read by [`crate::Env`] and validated here once:
//! where its database, the buses and the token issuer are. A service's own `Settings`
//! holds these beside what only it needs.

use std::net::SocketAddr;
use std::time::Duration;

use crate::env::{ConfigError, Env};

/// The service's own PostgreSQL database.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `<SERVICE>__DATABASE_URL`.
    pub url: String,
    /// `<SERVICE>__DATABASE_MAX_CONNECTIONS`.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before it fails
    /// (`<SERVICE>__DATABASE_ACQUIRE_TIMEOUT_MS`).
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    /// A database of `url` with the defaults for the rest.
    pub fn new(url: impl Into<String>) -> DatabaseSettings {
        DatabaseSettings {
            url: url.into(),
            max_connections: 16,
            // A call waits at most this long for the database, then answers UNAVAILABLE.
            acquire_timeout: Duration::from_secs(2),
        }
    }

    /// `<SERVICE>__DATABASE_*`, defaulting to database `name` on the local server.
    pub fn from_env(env: &Env, name: &str) -> Result<DatabaseSettings, ConfigError> {
        let defaults = DatabaseSettings::new(format!("postgres://postgres@127.0.0.1:5432/{name}"));
        let settings = DatabaseSettings {
            url: env.string("DATABASE_URL", &defaults.url),
            max_connections: env.var("DATABASE_MAX_CONNECTIONS", defaults.max_connections)?,
            acquire_timeout: env.millis(
                "DATABASE_ACQUIRE_TIMEOUT_MS",
                defaults.acquire_timeout.as_millis() as u64,
            )?,
        };
        if settings.max_connections == 0 {
            return Err(env.invalid("DATABASE_MAX_CONNECTIONS", "must be at least 1"));
        }
        if settings.acquire_timeout.is_zero() {
            return Err(env.invalid("DATABASE_ACQUIRE_TIMEOUT_MS", "must be positive"));
        }
        Ok(settings)
    }
}

/// NATS JetStream and the names of the buses on it.
#[derive(Debug, Clone)]
pub struct BusSettings {
    /// `<SERVICE>__NATS_URL`: one URL, or a cluster's nodes separated by commas.
    pub nats_url: String,
    /// Prefix of every stream and subject, empty in production (`<SERVICE>__STREAM_PREFIX`).
    pub stream_prefix: String,
    /// Copies JetStream keeps of every stream (`<SERVICE>__STREAM_REPLICAS`): 1 on a
    /// single server, 3 on a cluster. Applied whenever a service creates or updates the
    /// streams; the durable consumers are replicated with their stream.
    pub stream_replicas: usize,
}

impl BusSettings {
    pub fn new(nats_url: impl Into<String>, stream_prefix: impl Into<String>) -> BusSettings {
        BusSettings {
            nats_url: nats_url.into(),
            stream_prefix: stream_prefix.into(),
            stream_replicas: 1,
        }
    }

    pub fn from_env(env: &Env) -> Result<BusSettings, ConfigError> {
        let settings = BusSettings {
            stream_replicas: env.var("STREAM_REPLICAS", 1)?,
            ..BusSettings::new(
                env.string("NATS_URL", "nats://127.0.0.1:4222"),
                env.string("STREAM_PREFIX", ""),
            )
        };
        popug_eventbus::nats_servers(&settings.nats_url).map_err(|e| env.invalid("NATS_URL", e))?;
        popug_eventbus::Topology::new(&settings.stream_prefix)
            .map_err(|e| env.invalid("STREAM_PREFIX", e))?
            .with_replicas(settings.stream_replicas)
            .map_err(|e| env.invalid("STREAM_REPLICAS", e))?;
        Ok(settings)
    }

    /// The names and replica count of the streams these settings describe.
    pub fn topology(&self) -> Result<popug_eventbus::Topology, popug_eventbus::BusError> {
        popug_eventbus::Topology::new(&self.stream_prefix)?.with_replicas(self.stream_replicas)
    }

    /// The NATS servers to connect to (any of them; the client fails over).
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, popug_eventbus::BusError> {
        popug_eventbus::nats_servers(&self.nats_url)
    }
}

/// Who issues the access tokens a service accepts, and where its keys are.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// Expected (Account: issued) `iss` (`<SERVICE>__ISSUER`).
    pub issuer: String,
    /// Expected (Account: issued) `aud` (`<SERVICE>__AUDIENCE`).
    pub audience: String,
    /// Account's JWKS document (`<SERVICE>__JWKS_URL`); Account verifies from its own keys.
    pub jwks_url: String,
}

impl TokenSettings {
    pub const DEFAULT_ISSUER: &str = "popugjira-account";
    pub const DEFAULT_AUDIENCE: &str = "popugjira";
    pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:8081/.well-known/jwks.json";

    pub fn from_env(env: &Env) -> Result<TokenSettings, ConfigError> {
        let settings = TokenSettings {
            issuer: env.string("ISSUER", Self::DEFAULT_ISSUER),
            audience: env.string("AUDIENCE", Self::DEFAULT_AUDIENCE),
            jwks_url: env.string("JWKS_URL", Self::DEFAULT_JWKS_URL),
        };
        popug_auth::HttpJwks::new(&settings.jwks_url).map_err(|e| env.invalid("JWKS_URL", e))?;
        Ok(settings)
    }
}

/// What a service with a database, the buses and a gRPC port is configured with.
#[derive(Debug, Clone)]
pub struct Common {
    /// The gRPC listener (`<SERVICE>__GRPC_ADDR`; port 0 picks a free one).
    pub grpc_addr: SocketAddr,
    /// Where `GET /metrics` is served (`<SERVICE>__METRICS_ADDR`); `None`: not on a port
    /// of its own (Account serves it on its HTTP port).
    pub metrics_addr: Option<SocketAddr>,
    pub database: DatabaseSettings,
    pub bus: BusSettings,
    pub tokens: TokenSettings,
}

impl Common {
    /// `<SERVICE>__*` over the defaults of a local run: gRPC on `grpc_port`, metrics on
    /// `metrics_port` (if any), database `database` on the local PostgreSQL.
    pub fn from_env(
        env: &Env,
        grpc_port: u16,
        metrics_port: Option<u16>,
        database: &str,
    ) -> Result<Common, ConfigError> {
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Ok(Common {
            grpc_addr: env.var("GRPC_ADDR", local(grpc_port))?,
            metrics_addr: env.opt("METRICS_ADDR")?.or(metrics_port.map(local)),
            database: DatabaseSettings::from_env(env, database)?,
            bus: BusSettings::from_env(env)?,
            tokens: TokenSettings::from_env(env)?,
        })
    }
}
