//! `account seed-demo`: the demo data set of the README, created through the same path
//! as CreateAccount (so every user's event is published). Idempotent.

use popug_auth::Role;

use crate::domain::{Email, Password, PersonName, Username};
use crate::error::Error;
use crate::service::{Accounts, CreateAccount};

/// (username, name, surname, role, password) of every demo user.
pub const DEMO_USERS: [(&str, &str, &str, Role, &str); 8] = [
    ("admin", "Ada", "Admin", Role::Admin, "popug-admin"),
    ("manager", "Max", "Manager", Role::Manager, "popug-manager"),
    (
        "accountant",
        "Ann",
        "Accountant",
        Role::Accountant,
        "popug-accountant",
    ),
    (
        "worker1",
        "Kesha",
        "Popugaev",
        Role::Worker,
        "popug-worker1",
    ),
    ("worker2", "Gosha", "Perov", Role::Worker, "popug-worker2"),
    ("worker3", "Rio", "Zelenov", Role::Worker, "popug-worker3"),
    ("worker4", "Kira", "Ara", Role::Worker, "popug-worker4"),
    ("worker5", "Lori", "Kakadu", Role::Worker, "popug-worker5"),
];

/// Creates every demo user that does not exist yet; returns how many it created.
pub async fn demo(accounts: &Accounts) -> Result<usize, Error> {
    let mut created = 0;
    for (username, name, surname, role, password) in DEMO_USERS {
        let user = CreateAccount {
            username: Username::parse(username)?,
            name: PersonName::parse("name", name)?,
            surname: PersonName::parse("surname", surname)?,
            email: Email::parse(&format!("{username}@popug.example"))?,
            role,
            password: Password::parse(password)?,
            extra_permissions: Vec::new(),
        };
        match accounts.create(&user, None).await {
            Ok(_) => created += 1,
            Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}
