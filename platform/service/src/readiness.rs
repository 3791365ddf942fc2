//! The readiness worker: prepares a service once its database and NATS are up —
//! migrations, streams, then the service's own start-up work ([`Prepare`]) — retrying
//! until it succeeds, and from then on watches both, so health says NOT_SERVING while
//! either is unreachable and SERVING again when they are back (no restart).

use std::future::Future;
use std::time::Duration;

use popug_grpc::Readiness;
use popug_metrics::names;
use sqlx::migrate::Migrator;

use crate::connect::Infra;

/// How often the dependencies are checked.
const PERIOD: Duration = Duration::from_millis(500);
/// How long one check may take before it counts as a failure.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A service's own start-up work on a reachable, migrated database (the first admin,
/// the signing keys, the first billing day); retried until it succeeds.
pub trait Prepare: Send + Sync + 'static {
    fn prepare(&self, infra: &Infra) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = infra;
        async { Ok(()) }
    }
}

/// Nothing to do beyond migrations and streams.
impl Prepare for () {}

/// Runs until `stop`: prepares the service, then keeps `readiness` in step with its
/// dependencies.
pub async fn run(
    infra: Infra,
    migrator: &'static Migrator,
    service: impl Prepare,
    readiness: Readiness,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last_error = String::new();
    loop {
        if !readiness.is_prepared() {
            match prepare(&infra, migrator, &service).await {
                Ok(()) => {
                    readiness.set_prepared();
                    tracing::info!("prepared: migrations applied, streams ready");
                }
                Err(error) => {
                    let error = format!("{error:#}");
                    if error != last_error {
                        tracing::warn!(%error, "not prepared yet; retrying");
                        last_error = error;
                    }
                }
            }
        }
        let healthy = readiness.is_prepared() && reachable(&infra).await;
        if readiness.set_healthy(healthy) {
            if healthy {
                tracing::info!("healthy: database and NATS reachable");
            } else {
                tracing::warn!("unhealthy: the database or NATS is unreachable");
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(PERIOD) => {}
        }
    }
}

async fn prepare(infra: &Infra, migrator: &Migrator, service: &impl Prepare) -> anyhow::Result<()> {
    infra.migrate(migrator).await?;
    infra.topology.ensure_streams(&infra.js).await?;
    service.prepare(infra).await
}

/// Whether the database answers and the NATS client is connected, now. Records the
/// pool's gauges and how long the probe waited for a connection.
async fn reachable(infra: &Infra) -> bool {
    let started = std::time::Instant::now();
    let database = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut conn = infra.pool.acquire().await?;
        metrics::histogram!(names::DB_POOL_ACQUIRE_SECONDS).record(started.elapsed().as_secs_f64());
        sqlx::query("SELECT 1").execute(&mut *conn).await
    });
    let database = matches!(database.await, Ok(Ok(_)));
    record_pool(&infra.pool);
    let nats = infra.js.client().connection_state() == async_nats::connection::State::Connected;
    database && nats
}

fn record_pool(pool: &sqlx::PgPool) {
    let (size, idle) = (pool.size(), pool.num_idle() as u32);
    let in_use = size.saturating_sub(idle);
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!(names::DB_POOL_CONNECTIONS, "state" => "idle").set(f64::from(idle));
    metrics::gauge!(names::DB_POOL_MAX_CONNECTIONS)
        .set(f64::from(pool.options().get_max_connections()));
}
