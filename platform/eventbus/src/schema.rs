//! The outbox and processed-events tables live in schema `eventbus` of the service's own
//! database, with their own migration history, so every service gets them by calling
//! [`migrate`] and none copies their DDL. [`migrate_in`] does the same for any shared
//! schema (the idempotency keys use it).

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Connection, PgPool};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Creates or upgrades schema `eventbus` (idempotent, safe with several replicas: the
/// migrator holds an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    migrate_in(pool, "eventbus", &MIGRATOR).await
}

/// Creates schema `schema` and runs `migrator` in it, keeping its history there.
pub async fn migrate_in(
    pool: &PgPool,
    schema: &'static str,
    migrator: &Migrator,
) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await?;
    // DDL and session settings, unchecked: there is no schema yet to check them against.
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .execute(&mut *conn)
        .await?;
    // The migrator keeps its history in the first schema of the search path.
    sqlx::query(&format!("SET search_path TO {schema}"))
        .execute(&mut *conn)
        .await?;
    let result = migrator.run_direct(&mut *conn).await;
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
