//! Roles and permissions (REQUIREMENTS §2). Tokens carry both; services check
//! permissions, never role names, so an admin can grant a permission to anyone.

use std::fmt;
use std::str::FromStr;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// Every role but admin and manager can be assigned tasks.
    pub fn is_assignable(self) -> bool {
        matches!(self, Role::Accountant | Role::Worker)
    }

    /// The permissions a role carries without any extra grant.
    pub fn default_permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Worker => &[TasksCreate, TasksComplete, AccountingReadOwn],
            Role::Accountant => &[
                TasksCreate,
                TasksComplete,
                AccountingReadOwn,
                AccountingReadAll,
            ],
            Role::Manager => &[TasksCreate, TasksReadAll, TasksReassign, AccountingReadOwn],
            Role::Admin => &[
                TasksCreate,
                TasksReadAll,
                TasksReassign,
                AccountingReadOwn,
                AccountingReadAll,
                AccountingCloseDay,
                AnalyticsRead,
                AccountsManage,
            ],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

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

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
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
