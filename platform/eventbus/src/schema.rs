//! The outbox and processed-events tables live in schema `eventbus` of the service's own
//! database, with their own migration history, so every service gets them by calling
//! [`migrate`] and none copies their DDL.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};

use crate::BusError;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates or upgrades schema `eventbus` (idempotent, safe with several replicas: the
/// migrator holds an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = pool.acquire().await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS eventbus")
        .execute(&mut *conn)
        .await?;
    // The migrator keeps its history in the first schema of the search path.
    sqlx::query("SET search_path TO eventbus")
        .execute(&mut *conn)
        .await?;
    let result = MIGRATOR.run(&mut *conn).await;
    // Give the pooled connection back as it was; a failure here closes it instead.
    if sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        let _ = conn.detach().close().await;
    }
    result
}

/// A service's pool with every migration applied: the service's own (`service`) and the
/// event bus's. What each service's startup and its `migrate` command do.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    service: &sqlx::migrate::Migrator,
) -> Result<PgPool, BusError> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| BusError::Config(format!("database unreachable: {e}")))?;
    let migration_failed =
        |e: sqlx::migrate::MigrateError| BusError::Config(format!("migration failed: {e}"));
    service.run(&pool).await.map_err(migration_failed)?;
    migrate(&pool).await.map_err(migration_failed)?;
    Ok(pool)
}
