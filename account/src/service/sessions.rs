//! Sessions: login, refresh with rotation and reuse detection, logout, log out everywhere.
//! A refresh token is opaque and single use; each login starts a family of them. Access
//! tokens carry the account's version (`ver`): every change of the account bumps it, and
//! a token older than the account is refused ([`StoredVersions`] here, the copies and
//! the account bus elsewhere).
//!
//! Lock order: the account row first, then its refresh tokens — so a refresh, a login, a
//! deactivation, a password change and "log out everywhere" serialize per account, and no
//! session is added while another transaction revokes them all.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use popug_auth::verify::BoxFuture;
use popug_auth::{Caller, Claims, Permission, Revocation};
use popug_proto::popug::account::v1 as pb;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::Accounts;
use crate::error::Error;
use crate::password;
use crate::store::accounts::{self as store, AccountRow};
use crate::store::sessions::{self, RefreshRow};

const INVALID_LOGIN: &str = "invalid username or password";
const INVALID_REFRESH: &str = "invalid or expired refresh token";

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Accounts {
    /// Username and password for a token pair. Unknown user, wrong password and
    /// inactive account all answer the same, after the same amount of hashing.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(pb::TokenPair, AccountRow), Error> {
        if username.is_empty() {
            return Err(Error::invalid("username", "is required"));
        }
        if password.is_empty() {
            return Err(Error::invalid("password", "is required"));
        }
        // No account has such a name: answer as for any unknown user, without asking
        // the database (which refuses NUL in text).
        if username.len() > 64 || password.len() > 512 || username.chars().any(char::is_control) {
            return Err(Error::Unauthenticated(INVALID_LOGIN));
        }
        let mut conn = self.pool.acquire().await?;
        let row = store::by_username(&mut conn, username).await?;
        drop(conn);
        let hash = row
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |r| r.password_hash.clone());
        let matches = password::verify(password.to_owned(), hash).await?;
        let row = match row {
            Some(row) if matches && row.active => row,
            _ => return Err(Error::Unauthenticated(INVALID_LOGIN)),
        };
        let mut tx = self.pool.begin().await?;
        // Read again under the account's lock: deactivated or given a new password since
        // the check, it may not sign in; otherwise the token carries the current version.
        let row = match store::by_id_for_update(&mut tx, row.id).await? {
            Some(now) if now.active && now.password_hash == row.password_hash => now,
            _ => return Err(Error::Unauthenticated(INVALID_LOGIN)),
        };
        let pair = self.issue(&mut tx, &row, Uuid::new_v4()).await?;
        tx.commit().await?;
        tracing::info!(account = %row.id, "logged in");
        Ok((pair, row))
    }

    /// Spends a refresh token for a new pair. A spent token presented again revokes
    /// its whole family (someone has a copy).
    pub async fn refresh(&self, refresh_token: &str) -> Result<pb::TokenPair, Error> {
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        let hash = token_hash(refresh_token);
        let mut tx = self.pool.begin().await?;
        let Some(account) = sessions::account_of(&mut tx, &hash).await? else {
            return Err(Error::Unauthenticated(INVALID_REFRESH));
        };
        // The account first (see the lock order above); the new access token carries the
        // version it has now.
        let row = store::by_id_for_update(&mut tx, account)
            .await?
            .ok_or(Error::NotFound("account"))?;
        let found = sessions::for_update(&mut tx, &hash).await?;
        let Some(RefreshRow {
            family_id: family,
            account_id: _,
            expires_at,
            used_at,
            revoked_at,
        }) = found
        else {
            return Err(Error::Unauthenticated(INVALID_REFRESH));
        };
        if revoked_at.is_some() || expires_at <= OffsetDateTime::now_utc() {
            return Err(Error::Unauthenticated(INVALID_REFRESH));
        }
        if used_at.is_some() {
            sessions::revoke_family(&mut tx, family).await?;
            tx.commit().await?;
            tracing::warn!(%account, %family, "refresh token reused; session chain revoked");
            return Err(Error::Unauthenticated(
                "refresh token reuse detected; session revoked",
            ));
        }
        sessions::mark_used(&mut tx, &hash).await?;
        if !row.active {
            sessions::revoke_family(&mut tx, family).await?;
            tx.commit().await?;
            return Err(Error::Unauthenticated(INVALID_REFRESH));
        }
        let pair = self.issue(&mut tx, &row, family).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Revokes the refresh token's family. Unknown tokens are accepted silently.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), Error> {
        if refresh_token.is_empty() {
            return Err(Error::invalid("refresh_token", "is required"));
        }
        let mut conn = self.pool.acquire().await?;
        sessions::revoke_family_of(&mut conn, &token_hash(refresh_token)).await?;
        Ok(())
    }

    /// "Log out everywhere" for account `id`: revokes every refresh token and bumps the
    /// version (an `account.updated` event, changed "sessions"), so every access token
    /// issued before is refused across the mesh. Only the account itself or an admin.
    pub async fn logout_everywhere(&self, caller: &Caller, id: Uuid) -> Result<(), Error> {
        if caller.id != id && !caller.has(Permission::AccountsManage) {
            return Err(Error::PermissionDenied(
                "only admins may end other accounts' sessions".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        let row = store::by_id_for_update(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        sessions::revoke_account(&mut tx, id).await?;
        let saved = store::save(&mut tx, &row).await?;
        let event = crate::events::updated(&saved, vec!["sessions".into()]);
        self.outbox
            .add(&mut tx, &saved.id.to_string(), &event)
            .await?;
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(account = %id, version = saved.version, by = %caller.id, "logged out everywhere");
        Ok(())
    }

    /// A new access token and a new refresh token in `family`.
    pub(super) async fn issue(
        &self,
        conn: &mut PgConnection,
        row: &AccountRow,
        family: Uuid,
    ) -> Result<pb::TokenPair, Error> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let access_ttl = self.tokens.access_ttl.as_secs() as i64;
        let refresh_ttl = self.tokens.refresh_ttl.as_secs() as i64;
        // The token says about its holder what the account events say.
        let claims = Claims::for_account(
            crate::events::snapshot(row),
            &self.tokens.issuer,
            &self.tokens.audience,
            now,
            access_ttl,
        );
        let access_token = self.keys.sign(&claims)?;
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let refresh_token = URL_SAFE_NO_PAD.encode(secret);
        let hash = token_hash(&refresh_token);
        sessions::insert(conn, &hash, family, row.id, self.tokens.refresh_ttl).await?;
        Ok(pb::TokenPair {
            access_token,
            expires_in: access_ttl,
            refresh_token,
            refresh_expires_in: refresh_ttl,
            token_type: "Bearer".into(),
        })
    }
}

/// Account's own revocation check: the account's version in its database, read on every
/// call (Account verifies every call afresh anyway), so a change is in force the moment
/// it commits.
pub struct StoredVersions(pub PgPool);

impl Revocation for StoredVersions {
    fn newest(&self, account: Uuid) -> BoxFuture<Result<Option<i64>, tonic::Status>> {
        let pool = self.0.clone();
        Box::pin(async move {
            let mut conn = pool.acquire().await.map_err(Error::from)?;
            let version = store::version_of(&mut conn, account)
                .await
                .map_err(Error::from)?;
            Ok::<_, tonic::Status>(version)
        })
    }
}
