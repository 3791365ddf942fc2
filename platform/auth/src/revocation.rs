//! Revoked access tokens (REQUIREMENTS §3): every change of an account — deactivation,
//! a role, permission or password change, "log out everywhere", any other edit — bumps
//! the account's `version`, which every account event carries and every access token
//! holds as its `ver` claim. A hop that knows a newer version of the account than the
//! token's refuses it: UNAUTHENTICATED "token revoked". A hop that knows no version of
//! the account (it has seen no event of it yet) accepts the token, as before.
//!
//! Where a hop learns the versions is its own business ([`Revocation`]): Account reads
//! its database; TaskKeeper and Accounting keep an [`AccountVersions`] fed from their
//! copy of the users; the gateway one fed from the account bus.

use std::collections::HashMap;
use std::sync::RwLock;

use tonic::Status;
use uuid::Uuid;

use crate::claims::Caller;
use crate::verify::BoxFuture;

/// What a revoked token is answered (UNAUTHENTICATED).
pub const REVOKED: &str = "token revoked";

/// Knows the newest version of an account a hop has seen.
pub trait Revocation: Send + Sync + 'static {
    /// The newest version of `account` known here; `None` when none is.
    fn newest(&self, account: Uuid) -> BoxFuture<Result<Option<i64>, Status>>;
}

/// UNAUTHENTICATED [`REVOKED`] when `revocation` knows a version of the caller's account
/// newer than the token's.
pub async fn check(revocation: &dyn Revocation, caller: &Caller) -> Result<(), Status> {
    match revocation.newest(caller.id).await? {
        Some(newest) if caller.claims.ver < newest => Err(Status::unauthenticated(REVOKED)),
        _ => Ok(()),
    }
}

/// The newest version seen of each account, in memory: a lookup is one read lock.
#[derive(Debug, Default)]
pub struct AccountVersions {
    versions: RwLock<HashMap<Uuid, i64>>,
}

impl AccountVersions {
    pub fn new() -> AccountVersions {
        AccountVersions::default()
    }

    /// Records that `account` is at `version`, unless a newer one was seen (events may
    /// come twice or out of order).
    pub fn observe(&self, account: Uuid, version: i64) {
        if self.get(account).is_some_and(|seen| seen >= version) {
            return;
        }
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        let seen = versions.entry(account).or_insert(version);
        *seen = (*seen).max(version);
    }

    /// Records many at once (a copy read whole).
    pub fn observe_all(&self, all: impl IntoIterator<Item = (Uuid, i64)>) {
        let mut versions = self.versions.write().unwrap_or_else(|p| p.into_inner());
        for (account, version) in all {
            let seen = versions.entry(account).or_insert(version);
            *seen = (*seen).max(version);
        }
    }

    /// The newest version seen of `account`.
    pub fn get(&self, account: Uuid) -> Option<i64> {
        let versions = self.versions.read().unwrap_or_else(|p| p.into_inner());
        versions.get(&account).copied()
    }

    /// How many accounts it knows.
    pub fn len(&self) -> usize {
        self.versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Revocation for AccountVersions {
    fn newest(&self, account: Uuid) -> BoxFuture<Result<Option<i64>, Status>> {
        let newest = self.get(account);
        Box::pin(std::future::ready(Ok::<_, Status>(newest)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;

    fn caller(id: Uuid, ver: i64) -> Caller {
        let claims = Claims {
            sub: id.to_string(),
            username: "kesha".into(),
            name: "Kesha".into(),
            surname: "Popugaev".into(),
            email: "kesha@popug.example".into(),
            role: "worker".into(),
            permissions: vec![],
            iss: "iss".into(),
            aud: "aud".into(),
            iat: 0,
            nbf: 0,
            exp: 0,
            jti: "jti".into(),
            ver,
        };
        Caller::from_claims(claims).expect("a valid caller")
    }

    #[tokio::test]
    async fn a_token_older_than_the_newest_version_seen_is_revoked() {
        let versions = AccountVersions::new();
        let (kesha, gosha) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // Nothing seen yet: accepted.
        assert!(check(&versions, &caller(kesha, 1)).await.is_ok());
        versions.observe(kesha, 3);
        // Out of order and duplicates never go back.
        versions.observe(kesha, 2);
        versions.observe_all([(kesha, 1), (gosha, 5)]);
        assert_eq!(versions.get(kesha), Some(3));
        assert_eq!(versions.len(), 2);
        let refused = check(&versions, &caller(kesha, 2))
            .await
            .expect_err("an older token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.message(), REVOKED);
        // Pre-version tokens (ver 0) are older than any account.
        assert!(check(&versions, &caller(kesha, 0)).await.is_err());
        assert!(check(&versions, &caller(kesha, 3)).await.is_ok());
        assert!(check(&versions, &caller(gosha, 5)).await.is_ok());
        assert!(
            check(&versions, &caller(Uuid::from_u128(3), 0))
                .await
                .is_ok()
        );
    }
}
