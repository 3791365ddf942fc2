//! Accounting's copy of the users, built only from the account bus (name and e-mail for
//! payout mails).

use popug_auth::Role;
use popug_service::AccountUser;
use sqlx::PgConnection;
use uuid::Uuid;

/// Inserts the user, or overwrites it when `version` is newer than the stored one.
/// Returns whether the row changed.
pub async fn apply(conn: &mut PgConnection, user: &AccountUser<'_>) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "INSERT INTO users (id, username, name, email, role, active, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET
             username = EXCLUDED.username, name = EXCLUDED.name, email = EXCLUDED.email,
             role = EXCLUDED.role, active = EXCLUDED.active, version = EXCLUDED.version,
             updated_at = now()
         WHERE users.version < EXCLUDED.version",
        user.id,
        user.username,
        user.name,
        user.email,
        user.role as Role,
        user.active,
        user.version,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The version of every user in the copy.
pub async fn versions(conn: &mut PgConnection) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT id, version FROM users")
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.version)).collect())
}

/// Whether Accounting knows `id`: from the account bus, or from an entry booked to it
/// before its account event arrived.
pub async fn known(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)
               OR EXISTS (SELECT 1 FROM balances WHERE user_id = $1) AS "known!""#,
        id,
    )
    .fetch_one(conn)
    .await
}
