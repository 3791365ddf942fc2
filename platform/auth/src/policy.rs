//! Who may call each RPC: the `(popug.authz.v1.policy)` option declared next to every RPC
//! in `proto/`, read once from the descriptors. The gateway and every service decide with
//! [`PolicyTable::admit`], so the rule is written once and enforced at every hop. An RPC
//! that declares no policy is refused: deny by default.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use popug_proto::popug::authz::v1::Policy;
use prost_reflect::DescriptorPool;
use tonic::Status;

use crate::authn::Authenticator;
use crate::claims::Caller;
use crate::roles::Permission;

/// Who may call one RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token.
    Authenticated,
    /// A valid token holding at least one of these.
    AnyPermission(Vec<Permission>),
}

impl Access {
    /// PERMISSION_DENIED unless `caller` passes (a public or any-user RPC always passes).
    pub fn check(&self, caller: &Caller) -> Result<(), Status> {
        match self {
            Access::Public | Access::Authenticated => Ok(()),
            Access::AnyPermission(any) if any.iter().any(|p| caller.has(*p)) => Ok(()),
            Access::AnyPermission(any) => {
                let names: Vec<_> = any.iter().map(|p| p.as_str()).collect();
                Err(Status::permission_denied(format!(
                    "requires permission {}",
                    names.join(" or ")
                )))
            }
        }
    }
}

/// Every PopugJira RPC path (`/package.Service/Method`) and its access, or `None` where
/// none is declared.
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    by_path: BTreeMap<String, Option<Access>>,
    /// RPCs declared `idempotency_level = NO_SIDE_EFFECTS`: reads a proxy may retry.
    reads: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("descriptor set unreadable: {0}")]
    Descriptors(String),
    #[error("{path}: unknown permission {name:?} in its policy")]
    UnknownPermission { path: String, name: String },
    #[error("{path}: policy is both public and permission-restricted")]
    Contradiction { path: String },
}

impl PolicyTable {
    /// The table of every PopugJira RPC, read from the embedded descriptors once per
    /// process.
    pub fn popug() -> Result<&'static PolicyTable, PolicyError> {
        static TABLE: OnceLock<PolicyTable> = OnceLock::new();
        if let Some(table) = TABLE.get() {
            return Ok(table);
        }
        let table = PolicyTable::from_descriptors(popug_proto::FILE_DESCRIPTOR_SET)?;
        Ok(TABLE.get_or_init(|| table))
    }

    /// Reads every `popug.*` service of `descriptor_set`.
    pub fn from_descriptors(descriptor_set: &[u8]) -> Result<PolicyTable, PolicyError> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| PolicyError::Descriptors(e.to_string()))?;
        let extension = pool
            .get_extension_by_name("popug.authz.v1.policy")
            .ok_or_else(|| PolicyError::Descriptors("popug.authz.v1.policy missing".into()))?;
        let mut by_path = BTreeMap::new();
        let mut reads = BTreeSet::new();
        for service in pool
            .services()
            .filter(|s| s.full_name().starts_with("popug."))
        {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
                // google.protobuf.MethodOptions.IdempotencyLevel.NO_SIDE_EFFECTS
                if options
                    .get_field_by_name("idempotency_level")
                    .is_some_and(|level| level.as_enum_number() == Some(1))
                {
                    reads.insert(path.clone());
                }
                let access = if options.has_extension(&extension) {
                    let value = options.get_extension(&extension);
                    let policy: Policy = value
                        .as_message()
                        .ok_or_else(|| PolicyError::Descriptors(format!("{path}: bad policy")))?
                        .transcode_to()
                        .map_err(|e| PolicyError::Descriptors(format!("{path}: {e}")))?;
                    Some(access_of(&path, &policy)?)
                } else {
                    None
                };
                by_path.insert(path, access);
            }
        }
        Ok(PolicyTable { by_path, reads })
    }

    /// The declared access of `path`: UNIMPLEMENTED for a path that is no PopugJira RPC,
    /// PERMISSION_DENIED for an RPC without a policy.
    pub fn access(&self, path: &str) -> Result<&Access, Status> {
        match self.by_path.get(path) {
            None => Err(Status::unimplemented(format!("unknown method {path}"))),
            Some(None) => Err(Status::permission_denied(
                "no access policy is declared for this RPC",
            )),
            Some(Some(access)) => Ok(access),
        }
    }

    /// Decides one call to `path`: `None` for a public RPC, otherwise the caller proven
    /// by the `authorization` header, who holds what the RPC's policy asks.
    pub async fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        authenticator: &Authenticator,
    ) -> Result<Option<Caller>, Status> {
        let access = self.access(path)?;
        if *access == Access::Public {
            return Ok(None);
        }
        let caller = authenticator.authenticate(headers).await?;
        access.check(&caller)?;
        Ok(Some(caller))
    }

    /// Whether `path` has no side effects (declared in its proto): safe to send again.
    pub fn is_read(&self, path: &str) -> bool {
        self.reads.contains(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = (&str, Option<&Access>)> {
        self.by_path.iter().map(|(p, a)| (p.as_str(), a.as_ref()))
    }

    /// Every service with a method in the table, once each, in order.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        let mut last = "";
        self.by_path.keys().filter_map(move |path| {
            let service = path.trim_start_matches('/').split('/').next()?;
            (service != last).then(|| {
                last = service;
                service
            })
        })
    }

    /// The table as Markdown, for `docs/policies.md` (`gateway policy-table`).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "# Access policies\n\n\
             Generated from the `(popug.authz.v1.policy)` options in `proto/` by\n\
             `cargo run -p gateway -- policy-table > docs/policies.md`; a test keeps it in\n\
             step. The gateway and every service enforce this table with the same code\n\
             (`popug_auth::PolicyTable::admit`); RPCs without a policy are refused.\n\
             Row-level rules (one's own tasks, one's own ledger) stay in the services.\n\n\
             | RPC | access |\n|---|---|\n",
        );
        for (path, access) in &self.by_path {
            let access = match access {
                None => "**refused** (no policy declared)".to_owned(),
                Some(Access::Public) => "public".to_owned(),
                Some(Access::Authenticated) => "any signed-in user".to_owned(),
                Some(Access::AnyPermission(p)) => {
                    let names: Vec<_> = p.iter().map(|p| format!("`{p}`")).collect();
                    format!("permission {}", names.join(" or "))
                }
            };
            out.push_str(&format!("| `{path}` | {access} |\n"));
        }
        out
    }
}

fn access_of(path: &str, policy: &Policy) -> Result<Access, PolicyError> {
    if policy.public {
        if !policy.any_permission.is_empty() {
            return Err(PolicyError::Contradiction {
                path: path.to_owned(),
            });
        }
        return Ok(Access::Public);
    }
    if policy.any_permission.is_empty() {
        return Ok(Access::Authenticated);
    }
    let permissions = policy
        .any_permission
        .iter()
        .map(|name| {
            name.parse().map_err(|_| PolicyError::UnknownPermission {
                path: path.to_owned(),
                name: name.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Access::AnyPermission(permissions))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static PolicyTable {
        PolicyTable::popug().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_the_declared_policies() {
        let table = table();
        assert_eq!(
            table.access("/popug.account.v1.AuthService/Login").ok(),
            Some(&Access::Public)
        );
        assert_eq!(
            table.access("/popug.account.v1.AccountService/WhoAmI").ok(),
            Some(&Access::Authenticated)
        );
        assert_eq!(
            table
                .access("/popug.account.v1.AccountService/CreateAccount")
                .ok(),
            Some(&Access::AnyPermission(vec![Permission::AccountsManage]))
        );
        assert_eq!(
            table.access("/popug.nope.v1.X/Y").map_err(|s| s.code()),
            Err(tonic::Code::Unimplemented)
        );
        let services: Vec<_> = table.services().collect();
        let mut unique = services.clone();
        unique.dedup();
        assert_eq!(services, unique, "each service once");
        assert!(services.contains(&"popug.gateway.v1.BoardService"));
        let undeclared: Vec<_> = table
            .paths()
            .filter(|(_, a)| a.is_none())
            .map(|(p, _)| p)
            .collect();
        assert!(
            undeclared.is_empty(),
            "RPCs without a policy: {undeclared:?}"
        );
    }

    #[test]
    fn an_rpc_without_a_policy_is_refused() {
        let mut table = PolicyTable::default();
        table.by_path.insert("/popug.x.v1.S/M".into(), None);
        assert_eq!(
            table.access("/popug.x.v1.S/M").map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
    }

    #[test]
    fn docs_table_is_generated_from_proto() {
        let committed = include_str!("../../../docs/policies.md");
        assert_eq!(
            committed,
            table().markdown(),
            "docs/policies.md is stale: cargo run -p gateway -- policy-table > docs/policies.md"
        );
    }
}
