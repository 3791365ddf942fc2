//! Sessions: refresh tokens, stored as SHA-256 hashes, in families — each login starts one,
//! each refresh spends a token and adds the next.

use std::time::Duration;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// The state of one refresh token.
#[derive(Debug, Clone)]
pub struct RefreshRow {
    pub family_id: Uuid,
    pub account_id: Uuid,
    pub expires_at: OffsetDateTime,
    pub used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// The account the token with hash `hash` belongs to (not locked: a refresh locks the
/// account first, then the token — the order every session change keeps).
pub async fn account_of(conn: &mut PgConnection, hash: &[u8]) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT account_id FROM refresh_tokens WHERE token_hash = $1",
        hash,
    )
    .fetch_optional(conn)
    .await
}

/// The token with hash `hash`, locked until the transaction ends.
pub async fn for_update(
    conn: &mut PgConnection,
    hash: &[u8],
) -> Result<Option<RefreshRow>, sqlx::Error> {
    sqlx::query_as!(
        RefreshRow,
        "SELECT family_id, account_id, expires_at, used_at, revoked_at
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        hash,
    )
    .fetch_optional(conn)
    .await
}

/// Adds a token to `family`, valid for `ttl`.
pub async fn insert(
    conn: &mut PgConnection,
    hash: &[u8],
    family: Uuid,
    account: Uuid,
    ttl: Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO refresh_tokens (token_hash, family_id, account_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        hash,
        family,
        account,
        ttl.as_secs_f64(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Spends the token with hash `hash`.
pub async fn mark_used(conn: &mut PgConnection, hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
        hash,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every live token of `family`.
pub async fn revoke_family(conn: &mut PgConnection, family: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
        family,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the family of the token with hash `hash` (nothing for an unknown token).
pub async fn revoke_family_of(conn: &mut PgConnection, hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now()
         WHERE revoked_at IS NULL
           AND family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        hash,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes every live token of an account (deactivation, password change, log out
/// everywhere). Callers hold the account's row lock, so no refresh adds one meanwhile.
pub async fn revoke_account(conn: &mut PgConnection, account: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL",
        account,
    )
    .execute(conn)
    .await?;
    Ok(())
}
