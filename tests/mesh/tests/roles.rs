//! Who may call what (REQUIREMENTS §2), checked at every hop: every RPC with every role
//! and with no token, through the gateway and directly at the service that serves it.
//! The expectations are the table below, written out by hand from the spec — not read
//! from the policies under test — so a wrong policy in `proto/` fails here.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use popug_mesh::call::{raw_call, refused_by_gateway};
use popug_mesh::{Mesh, User};
use popug_proto::popug::account::v1::Role;
use tonic::Code;
use tonic::transport::Channel;

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum May {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user.
    Everyone,
    /// Only these roles.
    Only(&'static [&'static str]),
}

use May::{Everyone, Only, Public};

/// REQUIREMENTS §2, RPC by RPC, a line each (rustfmt would wrap most).
#[rustfmt::skip]
const TABLE: &[(&str, May)] = &[
    // Signing in needs no token; logging out takes the refresh token (an expired
    // access token must not keep anyone logged in).
    ("/popug.account.v1.AuthService/Login", Public),
    ("/popug.account.v1.AuthService/Refresh", Public),
    ("/popug.account.v1.AuthService/Logout", Public),
    ("/popug.account.v1.AuthService/GetJwks", Public),
    // Log out everywhere: one's own sessions (another account's: admins, a row-level
    // rule).
    ("/popug.account.v1.AuthService/LogoutEverywhere", Everyone),
    // Manage accounts (create, change role, deactivate): admins.
    ("/popug.account.v1.AccountService/CreateAccount", Only(&["admin"])),
    ("/popug.account.v1.AccountService/ListAccounts", Only(&["admin"])),
    ("/popug.account.v1.AccountService/DeleteAccount", Only(&["admin"])),
    // One's own account (role changes in it are for admins: a row-level rule).
    ("/popug.account.v1.AccountService/UpdateAccount", Everyone),
    ("/popug.account.v1.AccountService/GetAccount", Everyone),
    ("/popug.account.v1.AccountService/WhoAmI", Everyone),
    // Names on task boards.
    ("/popug.account.v1.AccountService/ListProfiles", Everyone),
    // Create a task: everyone. See one's own tasks: everyone (all tasks: managers and
    // admins, a row-level rule).
    ("/popug.tasks.v1.TaskService/CreateTask", Everyone),
    ("/popug.tasks.v1.TaskService/GetTask", Everyone),
    ("/popug.tasks.v1.TaskService/ListTasks", Everyone),
    // Complete one's own task: those who are assigned tasks.
    ("/popug.tasks.v1.TaskService/CompleteTask", Only(&["worker", "accountant"])),
    // The "reassign open tasks" button: managers and admins.
    ("/popug.tasks.v1.TaskService/ReassignOpenTasks", Only(&["manager", "admin"])),
    // Own balance and audit log: everyone (anyone's: accountants and admins, a
    // row-level rule).
    ("/popug.accounting.v1.AccountingService/GetBalance", Everyone),
    ("/popug.accounting.v1.AccountingService/ListEntries", Everyone),
    ("/popug.accounting.v1.AccountingService/ListPayouts", Everyone),
    // Management earnings and per-day stats: accountants and admins.
    (
        "/popug.accounting.v1.AccountingService/GetManagementEarnings",
        Only(&["accountant", "admin"]),
    ),
    // Close the billing day by hand: admins.
    ("/popug.accounting.v1.AccountingService/CloseDay", Only(&["admin"])),
    // Prices are the same for everyone.
    ("/popug.accounting.v1.PriceService/GetTaskPrices", Everyone),
    // The analytics dashboard: admins.
    ("/popug.analytics.v1.AnalyticsService/GetDashboard", Only(&["admin"])),
    ("/popug.analytics.v1.AnalyticsService/GetMostExpensiveTask", Only(&["admin"])),
    // Composed views of what one may see anyway.
    ("/popug.gateway.v1.BoardService/GetTaskBoard", Everyone),
    ("/popug.gateway.v1.BoardService/GetMyOverview", Everyone),
];

const ROLES: [(&str, Role); 4] = [
    ("worker", Role::Worker),
    ("accountant", Role::Accountant),
    ("manager", Role::Manager),
    ("admin", Role::Admin),
];

impl May {
    fn allows(self, role: Option<&str>) -> bool {
        match (self, role) {
            (Public, _) => true,
            (_, None) => false,
            (Everyone, Some(_)) => true,
            (Only(roles), Some(role)) => roles.contains(&role),
        }
    }
}

/// The service that serves `path`, or `None` for the gateway's own.
fn service_of<'a>(mesh: &'a Mesh, path: &str) -> Option<&'a Channel> {
    let package = path.trim_start_matches('/').split('.').nth(1)?;
    match package {
        "account" => Some(&mesh.account),
        "tasks" => Some(&mesh.taskkeeper().channel),
        "accounting" | "analytics" => Some(&mesh.accounting().channel),
        _ => None,
    }
}

/// The outcome `may` asks of one call by `role`, given what was answered.
fn check(
    hop: &str,
    path: &str,
    role: Option<&str>,
    may: May,
    answer: Result<Bytes, tonic::Status>,
) {
    let who = role.unwrap_or("no token");
    let code = answer.as_ref().err().map_or(Code::Ok, tonic::Status::code);
    if may.allows(role) {
        assert!(
            !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
            "{hop}: {path} must let {who} in, answered {answer:?}"
        );
    } else {
        let expected = if role.is_none() {
            Code::Unauthenticated
        } else {
            Code::PermissionDenied
        };
        assert_eq!(
            code, expected,
            "{hop}: {path} must refuse {who}: {answer:?}"
        );
        if hop == "gateway" {
            assert!(
                answer.as_ref().err().is_some_and(refused_by_gateway),
                "{path}: the gateway itself must refuse {who}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_with_every_role_is_allowed_or_refused_at_the_gateway_and_at_the_service() {
    let mesh = Mesh::everything().await;

    // The table covers every RPC there is: a new one must be added above, by hand.
    let declared: BTreeSet<&str> = popug_auth::PolicyTable::popug()
        .unwrap()
        .paths()
        .map(|(path, _)| path)
        .collect();
    let written: BTreeSet<&str> = TABLE.iter().map(|(path, _)| *path).collect();
    assert_eq!(
        declared, written,
        "the table and proto/ name different RPCs"
    );

    let mut users: Vec<(&str, User)> = Vec::new();
    for (name, role) in ROLES {
        let user = if name == "admin" {
            let token = mesh.admin.clone();
            User {
                id: uuid::Uuid::nil(),
                username: "admin".into(),
                email: String::new(),
                password: String::new(),
                token,
            }
        } else {
            mesh.user(name, role).await
        };
        users.push((name, user));
    }

    let gateway = &mesh.gateway().channel;
    for &(path, may) in TABLE {
        let callers = users
            .iter()
            .map(|(role, user)| (Some(*role), Some(user.token.as_str())))
            .chain([(None, None)]);
        for (role, token) in callers {
            let answer = raw_call(gateway, path, token, Bytes::new()).await;
            check("gateway", path, role, may, answer);
            if let Some(service) = service_of(&mesh, path) {
                let answer = raw_call(service, path, token, Bytes::new()).await;
                check("service", path, role, may, answer);
            }
        }
    }
}
