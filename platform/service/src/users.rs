//! The copy of the users a service keeps, built only from the account bus (TaskKeeper's
//! assignable users, Accounting's payout addressees). Every account event is read through
//! `popug_proto::upcast`, the same way in each service; one that cannot be read, or that
//! names a role this build does not know, is dead-lettered. Each applied event is also
//! announced to every replica (`crate::versions`), whose revocation checks follow the
//! copy's versions.

use std::future::Future;

use popug_auth::Role;
use popug_eventbus::{Envelope, HandleError, Handler};
use popug_proto::upcast;
use sqlx::PgConnection;
use uuid::Uuid;

/// An account as an account event describes it, read.
#[derive(Debug, Clone, Copy)]
pub struct AccountUser<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub role: Role,
    /// Active, and not deleted (a deleted account never comes back).
    pub active: bool,
    /// Orders the events of one account: only a higher one overwrites.
    pub version: i64,
}

/// How a service stores what it keeps of an account.
pub trait UserCopy: Send + Sync + 'static {
    /// Stores `user` unless what is stored is as new or newer.
    fn apply(
        &self,
        conn: &mut PgConnection,
        user: &AccountUser<'_>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The version of every stored account (what `crate::versions::watch_copy` starts
    /// from).
    fn versions(
        &self,
        conn: &mut PgConnection,
    ) -> impl Future<Output = Result<Vec<(Uuid, i64)>, sqlx::Error>> + Send;
}

/// The account-bus consumer's handler for a service's [`UserCopy`].
#[derive(Debug, Clone, Default)]
pub struct AccountBus<C>(pub C);

impl<C: UserCopy> Handler for AccountBus<C> {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandleError> {
        let change = upcast::account_change(envelope)?;
        let account = &change.account;
        let user = AccountUser {
            id: change.id,
            username: &account.username,
            name: &account.name,
            email: &account.email,
            role: Role::of_account(account)?,
            active: change.active(),
            version: account.version,
        };
        self.0.apply(conn, &user).await?;
        crate::versions::notify(conn, user.id, user.version).await?;
        tracing::debug!(account = %user.id, version = user.version, "account event applied");
        Ok(())
    }
}
