//! The claims of a PopugJira access token (REQUIREMENTS §3) and the verified caller.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use popug_proto::popug::account::v1::AccountSnapshot;

use crate::roles::{Permission, Role};

/// The JSON payload of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Account id.
    pub sub: String,
    pub username: String,
    pub name: String,
    pub surname: String,
    pub email: String,
    /// "admin", "manager", "accountant" or "worker".
    pub role: String,
    /// Effective permissions (role defaults plus grants).
    pub permissions: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The account's `version` when the token was issued. Every change of the account
    /// bumps it, so a hop that has seen a newer version refuses the token as revoked
    /// (see [`crate::revocation`]). 0 in a token from before versions were carried.
    #[serde(default)]
    pub ver: i64,
}

impl Claims {
    /// The claims of an access token for `account` (as account events describe it, its
    /// `version` included), issued at `now` (unix seconds) for `ttl_secs`.
    pub fn for_account(
        account: AccountSnapshot,
        issuer: &str,
        audience: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Claims {
        Claims {
            ver: account.version,
            sub: account.id,
            username: account.username,
            name: account.name,
            surname: account.surname,
            email: account.email,
            role: account.role,
            permissions: account.permissions,
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
            jti: Uuid::new_v4().to_string(),
        }
    }
}

/// Who is calling, as proven by a verified access token. Handlers get it from the
/// request extensions (see [`crate::caller`]).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
    pub permissions: Vec<Permission>,
    pub claims: Claims,
}

impl Caller {
    /// Builds the caller from verified claims; `None` when they name an unknown role or
    /// a malformed id (a token we would never have issued).
    pub fn from_claims(claims: Claims) -> Option<Caller> {
        let id = Uuid::parse_str(&claims.sub).ok()?;
        let role = claims.role.parse().ok()?;
        // Unknown permission names (from a newer Account) grant nothing here.
        let permissions = claims
            .permissions
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        Some(Caller {
            id,
            role,
            permissions,
            claims,
        })
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}
