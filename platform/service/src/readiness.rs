//! The readiness worker: prepares a service once its database and NATS are up —
//! migrations, streams, then the service's own start-up work ([`Prepare`]) — retrying
//! until it succeeds, and from then on watches both, so health says NOT_SERVING while
//! either is unreachable and SERVING again when they are back (no restart).

use std::future::Future;
use std::time::Duration;

use popug_grpc::Readiness;
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

/// Whether the database answers and the NATS client is connected, now.
async fn reachable(infra: &Infra) -> bool {
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(&infra.pool));
    let database = matches!(database.await, Ok(Ok(_)));
    let nats = infra.js.client().connection_state() == async_nats::connection::State::Connected;
    database && nats
}
