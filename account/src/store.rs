//! SQL for accounts. Functions take a connection so callers choose the transaction.

use popug_auth::Role;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use popug_proto::popug::account::v1 as pb;

/// One row of `accounts`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub username: String,
    pub name: String,
    pub surname: String,
    pub email: String,
    pub role: String,
    pub extra_permissions: Vec<String>,
    pub active: bool,
    pub password_hash: String,
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, username, name, surname, email, role, extra_permissions, active, \
                       password_hash, version, created_at, updated_at";

impl AccountRow {
    pub fn role(&self) -> Role {
        // The CHECK constraint admits only the four names.
        self.role.parse().unwrap_or(Role::Worker)
    }

    /// The role's defaults plus the extra grants, sorted.
    pub fn permissions(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .role()
            .default_permissions()
            .iter()
            .map(|p| p.as_str().to_owned())
            .chain(self.extra_permissions.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The API view; `reveal_email` only for the account itself and admins.
    pub fn to_proto(&self, reveal_email: bool) -> pb::Account {
        pb::Account {
            id: self.id.to_string(),
            username: self.username.clone(),
            name: self.name.clone(),
            surname: self.surname.clone(),
            email: if reveal_email {
                self.email.clone()
            } else {
                String::new()
            },
            role: crate::domain::role_to_proto(self.role()),
            permissions: self.permissions(),
            active: self.active,
            created_at: Some(timestamp(self.created_at)),
            updated_at: Some(timestamp(self.updated_at)),
            version: self.version,
        }
    }

    /// What anyone signed in may see.
    pub fn to_profile(&self) -> pb::Profile {
        pb::Profile {
            id: self.id.to_string(),
            username: self.username.clone(),
            name: self.name.clone(),
            surname: self.surname.clone(),
            role: crate::domain::role_to_proto(self.role()),
            active: self.active,
        }
    }

    /// What account events carry.
    pub fn snapshot(&self) -> pb::AccountSnapshot {
        pb::AccountSnapshot {
            id: self.id.to_string(),
            username: self.username.clone(),
            name: self.name.clone(),
            surname: self.surname.clone(),
            email: self.email.clone(),
            role: self.role.clone(),
            permissions: self.permissions(),
            active: self.active,
            version: self.version,
            updated_at: Some(timestamp(self.updated_at)),
        }
    }
}

pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always in 0..1e9.
        nanos: at.nanosecond() as i32,
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

pub async fn insert(
    conn: &mut PgConnection,
    new: NewAccount<'_>,
) -> Result<AccountRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO accounts (id, username, name, surname, email, role, extra_permissions, password_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.username)
    .bind(new.name)
    .bind(new.surname)
    .bind(new.email)
    .bind(new.role.as_str())
    .bind(&new.extra_permissions)
    .bind(&new.password_hash)
    .fetch_one(conn)
    .await
}

pub async fn by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM accounts WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The row, locked for update until the transaction ends.
pub async fn by_id_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn by_username(
    conn: &mut PgConnection,
    username: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE username = $1"
    ))
    .bind(username)
    .fetch_optional(conn)
    .await
}

/// The accounts among `ids` (any order).
pub async fn by_ids(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM accounts WHERE id = ANY($1)"
    ))
    .bind(ids)
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
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM accounts
         WHERE username > $1 AND ($2::text IS NULL OR role = $2)
         ORDER BY username LIMIT $3"
    ))
    .bind(after)
    .bind(role.map(Role::as_str))
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Writes every mutable column of `row`, bumping version and updated_at.
pub async fn save(conn: &mut PgConnection, row: &AccountRow) -> Result<AccountRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE accounts SET name = $2, surname = $3, email = $4, role = $5,
                extra_permissions = $6, active = $7, password_hash = $8,
                version = version + 1, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(row.id)
    .bind(&row.name)
    .bind(&row.surname)
    .bind(&row.email)
    .bind(&row.role)
    .bind(&row.extra_permissions)
    .bind(row.active)
    .bind(&row.password_hash)
    .fetch_one(conn)
    .await
}

pub async fn count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(conn)
        .await
}

/// Revokes every live refresh token of an account (deactivation, password change).
pub async fn revoke_sessions(conn: &mut PgConnection, account: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE account_id = $1 AND revoked_at IS NULL",
    )
    .bind(account)
    .execute(conn)
    .await?;
    Ok(())
}
