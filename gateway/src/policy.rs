//! The access policy of every RPC, read at start from the `(popug.authz.v1.policy)` option
//! declared next to each RPC in `proto/`. An RPC that declares none is refused: deny by
//! default.

use std::collections::BTreeMap;

use popug_auth::{Caller, Permission};
use popug_proto::popug::authz::v1::Policy;
use prost_reflect::DescriptorPool;

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
    /// Whether `caller` passes (for non-public RPCs).
    pub fn allows(&self, caller: &Caller) -> bool {
        match self {
            Access::Public | Access::Authenticated => true,
            Access::AnyPermission(any) => any.iter().any(|p| caller.has(*p)),
        }
    }
}

/// Every PopugJira RPC path (`/package.Service/Method`) and its access, or `None` where
/// none is declared.
#[derive(Debug, Clone, Default)]
pub struct PolicyTable {
    by_path: BTreeMap<String, Option<Access>>,
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
    /// Reads every `popug.*` service of `descriptor_set`.
    pub fn from_descriptors(descriptor_set: &[u8]) -> Result<PolicyTable, PolicyError> {
        let pool = DescriptorPool::decode(descriptor_set)
            .map_err(|e| PolicyError::Descriptors(e.to_string()))?;
        let extension = pool
            .get_extension_by_name("popug.authz.v1.policy")
            .ok_or_else(|| PolicyError::Descriptors("popug.authz.v1.policy missing".into()))?;
        let mut by_path = BTreeMap::new();
        for service in pool
            .services()
            .filter(|s| s.full_name().starts_with("popug."))
        {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
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
        Ok(PolicyTable { by_path })
    }

    /// The access of `path`: `None` for an unknown path, `Some(None)` for an RPC that
    /// declares no policy.
    pub fn get(&self, path: &str) -> Option<&Option<Access>> {
        self.by_path.get(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = (&str, &Option<Access>)> {
        self.by_path.iter().map(|(p, a)| (p.as_str(), a))
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
             step. The gateway enforces this table; RPCs without a policy are refused.\n\n\
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

    #[test]
    fn reads_the_declared_policies() {
        let table = PolicyTable::from_descriptors(popug_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            table.get("/popug.account.v1.AuthService/Login"),
            Some(&Some(Access::Public))
        );
        assert_eq!(
            table.get("/popug.account.v1.AccountService/WhoAmI"),
            Some(&Some(Access::Authenticated))
        );
        assert_eq!(
            table.get("/popug.account.v1.AccountService/CreateAccount"),
            Some(&Some(Access::AnyPermission(vec![
                Permission::AccountsManage
            ])))
        );
        assert_eq!(table.get("/popug.nope.v1.X/Y"), None);
        let services: Vec<_> = table.services().collect();
        let mut unique = services.clone();
        unique.dedup();
        assert_eq!(services, unique, "each service once");
        assert!(services.contains(&"popug.gateway.v1.BoardService"));
        // Every PopugJira RPC declares a policy.
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
    fn docs_table_is_generated_from_proto() {
        let table = PolicyTable::from_descriptors(popug_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("{e}"));
        let committed = include_str!("../../docs/policies.md");
        assert_eq!(
            committed,
            table.markdown(),
            "docs/policies.md is stale: cargo run -p gateway -- policy-table > docs/policies.md"
        );
    }
}
