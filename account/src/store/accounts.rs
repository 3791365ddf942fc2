//! The accounts: who may sign in, with which role, permissions and password.

use popug_auth::Role;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::Error;

/// One row of `accounts`.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: Uuid,
    pub username: String,
    pub name: String,
    pub surname: String,
    pub email: String,
    pub role: Role,
    pub extra_permissions: Vec<String>,
    pub active: bool,
    pub password_hash: String,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl AccountRow {
    /// The role's defaults plus the extra grants, sorted.
    pub fn permissions(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .role
            .default_permissions()
            .iter()
            .map(|p| p.as_str().to_owned())
            .chain(self.extra_permissions.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// ALREADY_EXISTS naming the field whose unique constraint `error` broke; any other
/// error as it is.
pub fn conflict(error: sqlx::Error) -> Error {
    match popug_errors::unique_violation(&error) {
        Some("accounts_username_unique") => Error::AlreadyExists("username"),
        Some("accounts_email_unique") => Error::AlreadyExists("email"),
        _ => error.into(),
    }
}

/// A new account, already validated.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub name: &'a str,
    pub surname: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub extra_permissions: Vec<String>,
    pub password_hash: String,
}

pub async fn insert(conn: &mut PgConnection, new: NewAccount<'_>) -> Result<AccountRow, Error> {
    sqlx::query_as!(
        AccountRow,
        r#"INSERT INTO accounts (id, username, name, surname, email, role, extra_permissions,
                                password_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           RETURNING id, username, name, surname, email, role AS "role: Role",
                     extra_permissions, active, password_hash, version, created_at, updated_at"#,
        Uuid::now_v7(),
        new.username,
        new.name,
        new.surname,
        new.email,
        new.role as Role,
        &new.extra_permissions,
        &new.password_hash,
    )
    .fetch_one(conn)
    .await
    .map_err(conflict)
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, name, surname, email, role AS "role: Role", extra_permissions,
                  active, password_hash, version, created_at, updated_at
           FROM accounts WHERE id = $1"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// The row, locked for update until the transaction ends.
pub async fn by_id_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, name, surname, email, role AS "role: Role", extra_permissions,
                  active, password_hash, version, created_at, updated_at
           FROM accounts WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

pub async fn by_username(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, name, surname, email, role AS "role: Role", extra_permissions,
                  active, password_hash, version, created_at, updated_at
           FROM accounts WHERE username = $1"#,
        username,
    )
    .fetch_optional(conn)
    .await
}

/// The accounts among `ids` (any order).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, name, surname, email, role AS "role: Role", extra_permissions,
                  active, password_hash, version, created_at, updated_at
           FROM accounts WHERE id = ANY($1)"#,
        ids,
    )
    .fetch_all(conn)
    .await
}

/// Up to `limit` accounts after `after` (by username), optionally of one role.
pub async fn page(
    conn: &mut PgConnection,
    after: &str,
    role: Option<Role>,
    limit: i64,
) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as!(
        AccountRow,
        r#"SELECT id, username, name, surname, email, role AS "role: Role", extra_permissions,
                  active, password_hash, version, created_at, updated_at
           FROM accounts
           WHERE username > $1 AND ($2::text IS NULL OR role = $2)
           ORDER BY username LIMIT $3"#,
        after,
        role as Option<Role>,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Writes every mutable column of `row`, bumping version and updated_at.
pub async fn save(conn: &mut PgConnection, row: &AccountRow) -> Result<AccountRow, Error> {
    sqlx::query_as!(
        AccountRow,
        r#"UPDATE accounts SET name = $2, surname = $3, email = $4, role = $5,
                  extra_permissions = $6, active = $7, password_hash = $8,
                  version = version + 1, updated_at = now()
           WHERE id = $1
           RETURNING id, username, name, surname, email, role AS "role: Role",
                     extra_permissions, active, password_hash, version, created_at, updated_at"#,
        row.id,
        &row.name,
        &row.surname,
        &row.email,
        row.role as Role,
        &row.extra_permissions,
        row.active,
        &row.password_hash,
    )
    .fetch_one(conn)
    .await
    .map_err(conflict)
}

/// The current version of account `id` (what its newest tokens carry as `ver`).
pub async fn version_of(conn: &mut PgConnection, id: Uuid) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!("SELECT version FROM accounts WHERE id = $1", id)
        .fetch_optional(conn)
        .await
}

pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM accounts"#)
        .fetch_one(conn)
        .await
}
