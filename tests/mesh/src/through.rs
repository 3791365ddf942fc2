//! What the process tests (`nodes`) do through a gateway again and again: log in, make a
//! worker, create the first task once TaskKeeper knows someone to assign it to.

use std::time::Duration;

use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::transport::Channel;

use crate::with_token;

/// The password [`worker`] gives `username`.
pub fn password_of(username: &str) -> String {
    format!("{username}-password")
}

/// Logs `username` in through `gateway`; the access token.
pub async fn login(gateway: &Channel, username: &str, password: &str) -> String {
    account_pb::auth_service_client::AuthServiceClient::new(gateway.clone())
        .login(account_pb::LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("login of {username}: {status}"))
        .into_inner()
        .tokens
        .expect("tokens")
        .access_token
}

/// Creates worker `username` (password [`password_of`]) as `admin` through `gateway`;
/// its id.
pub async fn worker(gateway: &Channel, admin: &str, username: &str) -> String {
    account_pb::account_service_client::AccountServiceClient::new(gateway.clone())
        .create_account(with_token(
            admin,
            account_pb::CreateAccountRequest {
                username: username.into(),
                name: "Worker".into(),
                surname: "Popug".into(),
                email: format!("{username}@test.example"),
                role: account_pb::Role::Worker as i32,
                password: password_of(username),
                extra_permissions: vec![],
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("creating {username}: {status}"))
        .into_inner()
        .account
        .expect("the account")
        .id
}

/// A task titled `title` created by `token` through `gateway`, tried again until
/// TaskKeeper's copy of the users holds someone to assign it to.
pub async fn first_task(gateway: &Channel, token: &str, title: &str) -> tasks_pb::Task {
    let tasks = tasks_pb::task_service_client::TaskServiceClient::new(gateway.clone());
    popug_testkit::eventually(Duration::from_secs(30), "a first task", || {
        let mut tasks = tasks.clone();
        let request = with_token(
            token,
            tasks_pb::CreateTaskRequest {
                title: title.into(),
                ..Default::default()
            },
        );
        async move { tasks.create_task(request).await.ok() }
    })
    .await
    .into_inner()
    .task
    .expect("the task")
}
