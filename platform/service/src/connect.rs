//! Connecting a service to what it runs on: its database (migrated: the service's own
//! migrations and the shared ones) and NATS JetStream (the streams created or updated).
//!
//! A running service connects lazily ([`Built::new`]): it starts, binds its port and
//! answers health checks while PostgreSQL or NATS are still down, and the readiness
//! worker ([`crate::readiness`]) migrates and creates the streams once they are up. The
//! one-shot commands (`migrate`, `seed-demo`, ...) connect eagerly ([`connect`]).

use std::net::SocketAddr;

use async_nats::jetstream;
use popug_eventbus::{Outbox, Relay, Topology};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::cli::Config;
use crate::settings::{BusSettings, Common, DatabaseSettings};

/// A connected service: its pool, JetStream and the names of the buses.
#[derive(Clone)]
pub struct Infra {
    pub pool: PgPool,
    pub js: jetstream::Context,
    pub topology: Topology,
}

/// A service with its connections made (lazily: nothing needs to be up yet) and its gRPC
/// (and metrics) ports bound: what `build` makes before anything runs.
pub struct Built {
    pub infra: Infra,
    pub grpc: TcpListener,
    /// `/metrics`, served by [`crate::Workers::start`] (taken from here then).
    pub metrics: Option<TcpListener>,
}

impl Built {
    /// Validates `settings`, makes the connections without waiting for the servers and
    /// binds the gRPC port.
    pub async fn new(settings: &impl Config) -> anyhow::Result<Built> {
        settings.validate()?;
        let common = settings
            .common()
            .ok_or_else(|| anyhow::anyhow!("a service without a database has nothing to build"))?;
        let infra = Infra {
            pool: lazy_pool(&common.database)?,
            js: lazy_bus(&common.bus).await?,
            topology: common.bus.topology()?,
        };
        let mut built = Built::bind(infra, common.grpc_addr).await?;
        if let Some(addr) = common.metrics_addr {
            built.metrics = Some(listen(addr).await?);
        }
        Ok(built)
    }

    /// Binds `addr` (port 0 picks a free one) for a service already connected.
    pub async fn bind(infra: Infra, addr: SocketAddr) -> anyhow::Result<Built> {
        Ok(Built {
            infra,
            grpc: listen(addr).await?,
            metrics: None,
        })
    }

    /// The address `/metrics` is served on, if on a port of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address gRPC is served on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// Binds `addr`, saying which address failed.
pub async fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

impl Infra {
    /// The relay of this service's `outbox` (one publishes at a time, across replicas).
    pub fn relay(&self, outbox: &Outbox) -> Relay {
        Relay::new(self.pool.clone(), self.js.clone(), outbox)
    }

    /// Applies every migration: the service's (`migrator`) and the shared ones.
    pub async fn migrate(&self, migrator: &Migrator) -> anyhow::Result<()> {
        migrate(&self.pool, migrator).await
    }
}

/// Applies the service's migrations and the shared ones (event bus, idempotency keys);
/// idempotent, and safe with several replicas (the migrators lock).
async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    // `run_direct` on a connection: `run(&pool)` makes a future the compiler cannot
    // show to be `Send` inside a service's `impl Future + Send`.
    let mut conn = pool.acquire().await?;
    migrator
        .run_direct(&mut *conn)
        .await
        .map_err(|e| anyhow::anyhow!("migration failed: {e}"))?;
    drop(conn);
    popug_eventbus::schema::migrate(pool)
        .await
        .map_err(|e| anyhow::anyhow!("event bus migration failed: {e}"))?;
    let (schema, keys) = (popug_idempotency::SCHEMA, &popug_idempotency::MIGRATOR);
    popug_eventbus::schema::migrate_in(pool, schema, keys)
        .await
        .map_err(|e| anyhow::anyhow!("idempotency-key migration failed: {e}"))?;
    Ok(())
}

/// A pool that connects on first use; a query waits at most `acquire_timeout` for a
/// connection, then fails (UNAVAILABLE).
fn lazy_pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy(&settings.url)?)
}

/// JetStream on a client that keeps trying to connect in the background (and to
/// reconnect, forever).
async fn lazy_bus(settings: &BusSettings) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(settings.servers()?)
        .await
        .map_err(|e| anyhow::anyhow!("NATS URL {}: {e}", settings.nats_url))?;
    Ok(jetstream::new(client))
}

/// Connects to the database now (it must be up) and applies every migration. What the
/// one-shot commands do.
pub async fn database(settings: &DatabaseSettings, migrator: &Migrator) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect(&settings.url)
        .await
        .map_err(|e| anyhow::anyhow!("database unreachable: {e}"))?;
    migrate(&pool, migrator).await?;
    Ok(pool)
}

/// JetStream on `settings.nats_url` now (it must be up), with every stream created or
/// brought up to date.
pub async fn bus(settings: &BusSettings) -> anyhow::Result<(jetstream::Context, Topology)> {
    let client = async_nats::connect(settings.servers()?)
        .await
        .map_err(|e| anyhow::anyhow!("NATS unreachable at {}: {e}", settings.nats_url))?;
    let js = jetstream::new(client);
    let topology = settings.topology()?;
    topology.ensure_streams(&js).await?;
    Ok((js, topology))
}

/// The database and the buses of `common`, now (one-shot commands).
pub async fn connect(common: &Common, migrator: &Migrator) -> anyhow::Result<Infra> {
    let pool = database(&common.database, migrator).await?;
    let (js, topology) = bus(&common.bus).await?;
    Ok(Infra { pool, js, topology })
}
