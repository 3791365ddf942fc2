//! Idempotency keys, so a client can retry a create whose answer it lost.
//!
//! A request carrying the metadata `idempotency-key` (1 to 128 printable ASCII
//! characters, scoped to the caller and the RPC) claims the key in the transaction that
//! does the work ([`claim`]) and records what the work made in the same transaction
//! ([`complete`]): the work and its key commit together or not at all. A later call with
//! the same key and the same request finds the first result and returns it without doing
//! the work again; the same key with another request is INVALID_ARGUMENT. A call racing
//! the first one waits for it (the key's row lock) and then finds its result. Keys are
//! kept at least [`KEEP`] ([`forget_expired`]).

use std::time::Duration;

use popug_errors::Error;
use prost::Message;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The request metadata that carries the key.
pub const HEADER: &str = "idempotency-key";

/// How long a key is kept at least.
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

/// Its table's migrations, run in schema [`SCHEMA`] of each service's database (by
/// `popug_service`, with `popug_eventbus::schema::migrate_in`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The schema of its table.
pub const SCHEMA: &str = "idempotency";

/// One call's key.
#[derive(Debug, Clone)]
pub struct Key {
    caller: Uuid,
    rpc: &'static str,
    key: String,
    request_hash: Vec<u8>,
}

impl Key {
    /// The key `request` carries for RPC `rpc` called by `caller`; `None` without one.
    pub fn of<T: Message>(
        request: &tonic::Request<T>,
        caller: Uuid,
        rpc: &'static str,
    ) -> Result<Option<Key>, Error> {
        let Some(value) = request.metadata().get(HEADER) else {
            return Ok(None);
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| (1..=128).contains(&k.len()))
            .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| Error::invalid(HEADER, "must be 1 to 128 printable ASCII characters"))?;
        Ok(Some(Key {
            caller,
            rpc,
            key: key.to_owned(),
            request_hash: Sha256::digest(request.get_ref().encode_to_vec()).to_vec(),
        }))
    }
}

/// What an earlier call with the same key made: `None` when this call is the first (it
/// must do the work and [`complete`] the key in the same transaction).
pub async fn claim(conn: &mut PgConnection, key: &Key) -> Result<Option<String>, Error> {
    let fresh = sqlx::query!(
        "INSERT INTO idempotency.keys (caller, rpc, key, request_hash) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        key.caller,
        key.rpc,
        &key.key,
        &key.request_hash,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if fresh {
        return Ok(None);
    }
    let earlier = sqlx::query!(
        "SELECT request_hash, result FROM idempotency.keys
         WHERE caller = $1 AND rpc = $2 AND key = $3",
        key.caller,
        key.rpc,
        &key.key,
    )
    .fetch_one(&mut *conn)
    .await?;
    if earlier.request_hash != key.request_hash {
        return Err(Error::invalid(
            HEADER,
            "was used before with another request; use a new key for a new request",
        ));
    }
    earlier
        .result
        .map(Some)
        .ok_or_else(|| Error::Conflict("the first call with this key is unfinished".into()))
}

/// Records what the work guarded by `key` made (in the work's transaction).
pub async fn complete(conn: &mut PgConnection, key: &Key, result: &str) -> Result<(), Error> {
    sqlx::query!(
        "UPDATE idempotency.keys SET result = $4 WHERE caller = $1 AND rpc = $2 AND key = $3",
        key.caller,
        key.rpc,
        &key.key,
        result,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets keys older than twice [`KEEP`]; returns how many.
pub async fn forget_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM idempotency.keys WHERE created_at < now() - make_interval(secs => $1)",
        (2 * KEEP).as_secs_f64(),
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Forgets expired keys every `every` until `stop` resolves (the first pass at once);
/// failures (the database away) are logged and retried on the next pass.
pub async fn sweep(pool: PgPool, every: Duration, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        match forget_expired(&pool).await {
            Ok(0) => {}
            Ok(forgotten) => tracing::info!(forgotten, "expired idempotency keys forgotten"),
            Err(error) => tracing::warn!(%error, "forgetting expired idempotency keys failed"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How often the services sweep expired keys.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
