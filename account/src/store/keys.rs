//! The signing keys: every key not retired is published in the JWKS; the newest signs.
//! Changes to the set serialize on an advisory lock.

use sqlx::PgConnection;

/// One stored key.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub private_pkcs8: Vec<u8>,
    pub public_key: Vec<u8>,
}

/// Takes the lock that key changes hold until their transaction ends.
pub async fn lock(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    /// Advisory lock key ("sigkeys" in ASCII).
    const KEYS_LOCK: i64 = 0x7369_676b_6579;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds a key unless one with its kid exists.
pub async fn insert(conn: &mut PgConnection, key: &KeyRow) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO signing_keys (kid, private_pkcs8, public_key) VALUES ($1, $2, $3)
         ON CONFLICT (kid) DO NOTHING",
        key.kid,
        key.private_pkcs8,
        key.public_key,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The live keys, oldest first.
pub async fn live(conn: &mut PgConnection) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "SELECT kid, private_pkcs8, public_key FROM signing_keys
         WHERE retired_at IS NULL ORDER BY created_at, kid",
    )
    .fetch_all(conn)
    .await
}

/// Stops publishing key `kid`.
pub async fn retire(conn: &mut PgConnection, kid: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE signing_keys SET retired_at = now() WHERE kid = $1",
        kid,
    )
    .execute(conn)
    .await?;
    Ok(())
}
