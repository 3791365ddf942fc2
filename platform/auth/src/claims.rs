//! The claims of a PopugJira access token (REQUIREMENTS §3) and the verified caller.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
}

/// Who is calling, as proven by a verified access token. Handlers get it from the
/// request extensions (see [`crate::caller`]).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
    pub permissions: Vec<Permission>,
    pub claims: Claims,
    /// The raw token, so a service can pass the caller's identity on to another.
    pub token: String,
}

impl Caller {
    /// Builds the caller from verified claims; `None` when they name an unknown role or
    /// a malformed id (a token we would never have issued).
    pub fn from_claims(claims: Claims, token: String) -> Option<Caller> {
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
            token,
        })
    }

    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// PERMISSION_DENIED unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), tonic::Status> {
        if self.has(permission) {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "requires permission {permission}"
            )))
        }
    }
}
