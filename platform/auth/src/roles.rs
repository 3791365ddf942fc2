//! Roles and permissions (REQUIREMENTS §2). Tokens carry both; services check
//! permissions, never role names, so an admin can grant a permission to anyone.

use std::fmt;
use std::str::FromStr;

use popug_proto::catalog::Unreadable;
use popug_proto::popug::account::v1::AccountSnapshot;

/// A user's role. Stored by its name (`admin`, ...) where a service keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "sqlx",
    derive(sqlx::Type),
    sqlx(type_name = "text", rename_all = "lowercase")
)]
pub enum Role {
    Admin,
    Manager,
    Accountant,
    Worker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Manager, Role::Accountant, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Accountant => "accountant",
            Role::Worker => "worker",
        }
    }

    /// The role an account event names; a name this build does not know makes the event
    /// unreadable (dead-lettered) rather than guessed.
    pub fn of_account(account: &AccountSnapshot) -> Result<Role, Unreadable> {
        account
            .role
            .parse()
            .map_err(|e| Unreadable(format!("account {}: {e}", account.id)))
    }

    /// Every role but admin and manager can be assigned tasks.
    pub fn is_assignable(self) -> bool {
        matches!(self, Role::Accountant | Role::Worker)
    }

    /// The permissions a role carries without any extra grant (see
    /// [`Permission::default_roles`]), in [`Permission::ALL`] order.
    pub fn default_permissions(self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| p.default_roles().contains(&self))
            .collect()
    }
}

/// `Display` and `FromStr` by the names `as_str` gives (a type with `ALL`).
macro_rules! by_name {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|r| r.as_str() == s)
                    .ok_or_else(|| UnknownName(s.to_owned()))
            }
        }
    };
}

by_name!(Role);
by_name!(Permission);

/// A permission, as carried in the token's `permissions` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Create a task.
    TasksCreate,
    /// Be assigned tasks and complete one's own.
    TasksComplete,
    /// See every task, not just one's own.
    TasksReadAll,
    /// Press "reassign open tasks".
    TasksReassign,
    /// See one's own balance and audit log.
    AccountingReadOwn,
    /// See anyone's balance and audit log, and management earnings.
    AccountingReadAll,
    /// Close the billing day by hand.
    AccountingCloseDay,
    /// The analytics dashboard.
    AnalyticsRead,
    /// Create accounts, change roles, deactivate.
    AccountsManage,
}

impl Permission {
    /// Which roles hold this permission by default: REQUIREMENTS §2, row by row. Admins
    /// and managers are never assigned tasks, so they cannot complete one.
    pub fn default_roles(self) -> &'static [Role] {
        use Role::{Accountant, Admin, Manager, Worker};
        match self {
            Permission::TasksCreate | Permission::AccountingReadOwn => {
                &[Worker, Accountant, Manager, Admin]
            }
            Permission::TasksComplete => &[Worker, Accountant],
            Permission::TasksReadAll | Permission::TasksReassign => &[Manager, Admin],
            Permission::AccountingReadAll => &[Accountant, Admin],
            Permission::AccountingCloseDay
            | Permission::AnalyticsRead
            | Permission::AccountsManage => &[Admin],
        }
    }

    pub const ALL: [Permission; 9] = [
        Permission::TasksCreate,
        Permission::TasksComplete,
        Permission::TasksReadAll,
        Permission::TasksReassign,
        Permission::AccountingReadOwn,
        Permission::AccountingReadAll,
        Permission::AccountingCloseDay,
        Permission::AnalyticsRead,
        Permission::AccountsManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TasksCreate => "tasks.create",
            Permission::TasksComplete => "tasks.complete",
            Permission::TasksReadAll => "tasks.read_all",
            Permission::TasksReassign => "tasks.reassign",
            Permission::AccountingReadOwn => "accounting.read_own",
            Permission::AccountingReadAll => "accounting.read_all",
            Permission::AccountingCloseDay => "accounting.close_day",
            Permission::AnalyticsRead => "analytics.read",
            Permission::AccountsManage => "accounts.manage",
        }
    }
}

/// A role or permission name that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        }
        for permission in Permission::ALL {
            assert_eq!(
                permission.as_str().parse::<Permission>().ok(),
                Some(permission)
            );
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn only_workers_and_accountants_are_assignable() {
        let assignable: Vec<_> = Role::ALL
            .into_iter()
            .filter(|r| r.is_assignable())
            .collect();
        assert_eq!(assignable, [Role::Accountant, Role::Worker]);
    }

    #[test]
    fn role_table_matches_requirements() {
        let has = |r: Role, p: Permission| r.default_permissions().contains(&p);
        assert!(Role::ALL.iter().all(|&r| has(r, Permission::TasksCreate)));
        assert!(
            Role::ALL
                .iter()
                .all(|&r| has(r, Permission::AccountingReadOwn))
        );
        assert!(has(Role::Manager, Permission::TasksReassign));
        assert!(!has(Role::Worker, Permission::TasksReadAll));
        assert!(has(Role::Accountant, Permission::AccountingReadAll));
        assert!(!has(Role::Manager, Permission::AccountingReadAll));
        for p in [
            Permission::AnalyticsRead,
            Permission::AccountsManage,
            Permission::AccountingCloseDay,
        ] {
            let holders: Vec<_> = Role::ALL.into_iter().filter(|&r| has(r, p)).collect();
            assert_eq!(holders, [Role::Admin], "{p}");
        }
    }
}
