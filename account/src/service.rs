//! What Account does, independent of gRPC: accounts (create, read, update, deactivate,
//! each change with its event in the same transaction) and, in [`sessions`], sessions
//! (login, refresh with rotation and reuse detection, logout). Who may call each RPC is
//! decided before it (the policies in `proto/`); the row-level rules (one's own account;
//! what only an admin may change) are here.

mod sessions;

pub use sessions::StoredVersions;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use popug_auth::{Caller, Permission, Role};
use popug_errors::retry;
use popug_eventbus::Outbox;
use popug_idempotency::Key;
use popug_proto::popug::account::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Email, Password, PersonName, Username};
use crate::error::Error;
use crate::events;
use crate::keys::KeyRing;
use crate::password;
use crate::store::accounts::{self as store, AccountRow, NewAccount};
use crate::store::sessions as session_store;

/// Token lifetimes and claims that do not depend on the user.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// The service's state, shared by the gRPC handlers and the CLI.
pub struct Accounts {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub keys: Arc<KeyRing>,
    pub tokens: TokenPolicy,
    /// Hash checked when a username does not exist, so a login takes as long either way.
    dummy_hash: String,
}

/// A validated CreateAccount.
pub struct CreateAccount {
    pub username: Username,
    pub name: PersonName,
    pub surname: PersonName,
    pub email: Email,
    pub role: Role,
    pub password: Password,
    pub extra_permissions: Vec<Permission>,
}

impl CreateAccount {
    pub fn parse(request: &pb::CreateAccountRequest) -> Result<CreateAccount, Error> {
        Ok(CreateAccount {
            username: Username::parse(&request.username)?,
            name: PersonName::parse("name", &request.name)?,
            surname: PersonName::parse("surname", &request.surname)?,
            email: Email::parse(&request.email)?,
            role: crate::domain::parse_role(request.role)?,
            password: Password::parse(&request.password)?,
            extra_permissions: crate::domain::parse_permissions(&request.extra_permissions)?,
        })
    }
}

impl Accounts {
    pub async fn new(
        pool: PgPool,
        outbox: Outbox,
        keys: Arc<KeyRing>,
        tokens: TokenPolicy,
    ) -> anyhow::Result<Accounts> {
        let dummy_hash = password::hash("not-a-real-password".into()).await?;
        Ok(Accounts {
            pool,
            outbox,
            keys,
            tokens,
            dummy_hash,
        })
    }

    /// Creates an account and its `account.created` event. With an idempotency `key` that
    /// an earlier call already used, returns that call's account instead.
    pub async fn create(
        &self,
        new: &CreateAccount,
        key: Option<&Key>,
    ) -> Result<AccountRow, Error> {
        let hash = password::hash(new.password.expose().to_owned()).await?;
        retry(|| self.create_once(new, &hash, key)).await
    }

    async fn create_once(
        &self,
        new: &CreateAccount,
        hash: &str,
        key: Option<&Key>,
    ) -> Result<AccountRow, Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key
            && let Some(earlier) = popug_idempotency::claim(&mut tx, key).await?
        {
            let id = Uuid::parse_str(&earlier).map_err(|e| Error::Internal(e.into()))?;
            return store::by_id(&mut tx, id)
                .await?
                .ok_or(Error::NotFound("account"));
        }
        let row = store::insert(
            &mut tx,
            NewAccount {
                username: new.username.as_str(),
                name: new.name.as_str(),
                surname: new.surname.as_str(),
                email: new.email.as_str(),
                role: new.role,
                extra_permissions: new
                    .extra_permissions
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
                password_hash: hash.to_owned(),
            },
        )
        .await?;
        self.outbox
            .add(&mut tx, &row.id.to_string(), &events::created(&row))
            .await?;
        if let Some(key) = key {
            popug_idempotency::complete(&mut tx, key, &row.id.to_string()).await?;
        }
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(account = %row.id, username = %row.username, role = %row.role, "account created");
        Ok(row)
    }

    /// The accounts among `ids`, in the order asked, unknown ones left out.
    pub async fn profiles(&self, ids: &[Uuid]) -> Result<Vec<AccountRow>, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut rows = store::by_ids(&mut conn, ids).await?;
        rows.sort_by_key(|r| ids.iter().position(|id| *id == r.id));
        Ok(rows)
    }

    pub async fn get(&self, id: Uuid) -> Result<AccountRow, Error> {
        let mut conn = self.pool.acquire().await?;
        store::by_id(&mut conn, id)
            .await?
            .ok_or(Error::NotFound("account"))
    }

    /// A page of accounts after the username in `page_token`.
    pub async fn list(
        &self,
        page_size: i32,
        page_token: &str,
        role: Option<Role>,
    ) -> Result<(Vec<AccountRow>, String), Error> {
        let size = popug_errors::input::page_size(page_size)?;
        let after = if page_token.is_empty() {
            String::new()
        } else {
            URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|after| !after.chars().any(char::is_control))
                .ok_or_else(|| Error::invalid("page_token", "is not a token this service issued"))?
        };
        let mut conn = self.pool.acquire().await?;
        let mut rows = store::page(&mut conn, &after, role, size + 1).await?;
        let next = if rows.len() as i64 > size {
            rows.truncate(size as usize);
            rows.last()
                .map(|r| URL_SAFE_NO_PAD.encode(&r.username))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// Applies an UpdateAccount from `caller`; one `account.updated` event when anything
    /// changed.
    pub async fn update(
        &self,
        caller: &Caller,
        request: &pb::UpdateAccountRequest,
    ) -> Result<AccountRow, Error> {
        let id = popug_errors::input::id("id", &request.id)?;
        let admin = caller.has(Permission::AccountsManage);
        if !admin && caller.id != id {
            return Err(Error::PermissionDenied(
                "only admins may change other accounts".into(),
            ));
        }
        let admin_fields =
            request.role.is_some() || request.active.is_some() || request.set_extra_permissions;
        if admin_fields && !admin {
            return Err(Error::PermissionDenied(
                "only admins may change role, active or permissions".into(),
            ));
        }
        // Validate everything before touching the database.
        let name = request
            .name
            .as_deref()
            .map(|v| PersonName::parse("name", v))
            .transpose()?;
        let surname = request
            .surname
            .as_deref()
            .map(|v| PersonName::parse("surname", v))
            .transpose()?;
        let email = request.email.as_deref().map(Email::parse).transpose()?;
        let new_password = request
            .password
            .as_deref()
            .map(Password::parse)
            .transpose()?;
        let role = request.role.map(crate::domain::parse_role).transpose()?;
        let extra = if request.set_extra_permissions {
            Some(crate::domain::parse_permissions(
                &request.extra_permissions,
            )?)
        } else {
            None
        };
        if caller.id == id
            && (role.is_some_and(|r| r != Role::Admin) || request.active == Some(false))
            && admin
        {
            return Err(Error::FailedPrecondition(
                "an admin cannot demote or deactivate themselves".into(),
            ));
        }
        let password_hash = match new_password {
            Some(p) => Some(password::hash(p.expose().to_owned()).await?),
            None => None,
        };

        let mut tx = self.pool.begin().await?;
        let mut row = store::by_id_for_update(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        let mut changed = Vec::new();
        let mut set = |field: &'static str, current: &mut String, new: Option<&str>| {
            if let Some(new) = new.filter(|n| *n != current.as_str()) {
                *current = new.to_owned();
                changed.push(field.to_owned());
            }
        };
        set("name", &mut row.name, name.as_ref().map(PersonName::as_str));
        set(
            "surname",
            &mut row.surname,
            surname.as_ref().map(PersonName::as_str),
        );
        set("email", &mut row.email, email.as_ref().map(Email::as_str));
        if let Some(role) = role.filter(|r| *r != row.role) {
            row.role = role;
            changed.push("role".into());
        }
        if let Some(extra) = extra {
            let extra: Vec<String> = extra.iter().map(|p| p.as_str().to_owned()).collect();
            if extra != row.extra_permissions {
                row.extra_permissions = extra;
                changed.push("permissions".into());
            }
        }
        if let Some(active) = request.active.filter(|a| *a != row.active) {
            row.active = active;
            changed.push("active".into());
        }
        if let Some(hash) = password_hash {
            row.password_hash = hash;
            changed.push("password".into());
        }
        if changed.is_empty() {
            return Ok(row);
        }
        let saved = store::save(&mut tx, &row).await?;
        if !saved.active || changed.iter().any(|c| c == "password") {
            session_store::revoke_account(&mut tx, id).await?;
        }
        let event = events::updated(&saved, changed.clone());
        self.outbox
            .add(&mut tx, &saved.id.to_string(), &event)
            .await?;
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(account = %saved.id, ?changed, by = %caller.id, "account updated");
        Ok(saved)
    }

    /// Deactivates an account (it is never erased: tasks and ledger entries refer to
    /// it). Idempotent: an inactive account is returned as is, with no new event.
    pub async fn deactivate(&self, caller: &Caller, id: Uuid) -> Result<AccountRow, Error> {
        if caller.id == id {
            return Err(Error::FailedPrecondition(
                "an admin cannot deactivate themselves".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        let mut row = store::by_id_for_update(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("account"))?;
        if !row.active {
            return Ok(row);
        }
        row.active = false;
        let saved = store::save(&mut tx, &row).await?;
        session_store::revoke_account(&mut tx, id).await?;
        self.outbox
            .add(&mut tx, &saved.id.to_string(), &events::deleted(&saved))
            .await?;
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(account = %saved.id, by = %caller.id, "account deactivated");
        Ok(saved)
    }

    /// Creates the first admin when there are no accounts at all (first start).
    pub async fn bootstrap_admin(
        &self,
        admin: &crate::config::BootstrapAdmin,
    ) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await?;
        if store::count(&mut conn).await? > 0 {
            return Ok(());
        }
        drop(conn);
        let first = CreateAccount {
            username: Username::parse(&admin.username)?,
            name: PersonName::parse("name", "Admin")?,
            surname: PersonName::parse("surname", "Popug")?,
            email: Email::parse(&admin.email)?,
            role: Role::Admin,
            password: Password::parse(&admin.password)?,
            extra_permissions: Vec::new(),
        };
        match self.create(&first, None).await {
            // Another replica won the race.
            Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
