//! TaskKeeper beside a real Account, on the test mesh (real PostgreSQL and NATS, a fresh
//! database each, one unique stream prefix per test). Users reach TaskKeeper only through
//! the account bus.
//!
//! - [`assignment`] — uniform random assignment, only to active assignable users; none
//!   to give a task to is FAILED_PRECONDITION
//! - [`completion`] — only the assignee completes, done is final, the task bus says so
//! - [`reassign`] — reassign moves every open task once, its chunks cover each exactly
//!   once; completions racing reassigns leave events consistent with the state
//! - [`decoding`] — `task.created` v1 and v2 read the same
//! - [`users`] — account events applied idempotently and out of order
//! - [`access`] — permissions per role (policy and row level) and bad input

#![allow(clippy::unwrap_used)]

mod access;
mod assignment;
mod completion;
mod decoding;
mod reassign;
mod users;

use std::collections::HashMap;

use pb::task_service_client::TaskServiceClient;
use popug_mesh::{Mesh, User, WAIT, with_token};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as pb;
use tonic::transport::Channel;
use uuid::Uuid;

// The SQL below reads TaskKeeper's tables as a test sees them: it is not checked at
// compile time.

/// Account and TaskKeeper, with `chunk_size` task → assignee pairs per `reassign.chunk`.
async fn start(chunk_size: usize) -> Mesh {
    Mesh::builder()
        .taskkeeper_with(move |s| s.reassign_chunk_size = chunk_size)
        .start()
        .await
}

fn client(mesh: &Mesh) -> TaskServiceClient<Channel> {
    TaskServiceClient::new(mesh.taskkeeper().channel.clone())
}

/// Changes an account as the admin.
async fn update(mesh: &Mesh, request: account_pb::UpdateAccountRequest) {
    mesh.update_account(&mesh.admin, request).await.unwrap();
}

/// Workers `worker1`…`workerN` and a manager, `manager1`, created through Account and
/// copied into TaskKeeper.
async fn team<const N: usize>(mesh: &Mesh) -> ([User; N], User) {
    let mut workers = Vec::with_capacity(N);
    for i in 1..=N {
        let username = format!("worker{i}");
        workers.push(mesh.user(&username, account_pb::Role::Worker).await);
    }
    let manager = mesh.user("manager1", account_pb::Role::Manager).await;
    for user in workers.iter().chain([&manager]) {
        synced(mesh, user.id, 1).await;
    }
    (workers.try_into().unwrap(), manager)
}

/// Waits until TaskKeeper's copy of `id` is at `version` or newer.
async fn synced(mesh: &Mesh, id: Uuid, version: i64) {
    let pool = &mesh.taskkeeper().pool;
    popug_testkit::eventually(WAIT, "user copied from the account bus", || async {
        let seen: Option<i64> = sqlx::query_scalar("SELECT version FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .unwrap();
        seen.filter(|v| *v >= version).map(|_| ())
    })
    .await;
}

async fn create(
    mesh: &Mesh,
    token: &str,
    title: &str,
    jira_id: &str,
) -> Result<pb::Task, tonic::Status> {
    let request = pb::CreateTaskRequest {
        title: title.into(),
        jira_id: jira_id.into(),
        description: "something to do".into(),
    };
    Ok(client(mesh)
        .create_task(with_token(token, request))
        .await?
        .into_inner()
        .task
        .unwrap())
}

async fn complete(mesh: &Mesh, token: &str, id: &str) -> Result<pb::Task, tonic::Status> {
    Ok(client(mesh)
        .complete_task(with_token(token, pb::CompleteTaskRequest { id: id.into() }))
        .await?
        .into_inner()
        .task
        .unwrap())
}

async fn reassign(
    mesh: &Mesh,
    token: &str,
) -> Result<pb::ReassignOpenTasksResponse, tonic::Status> {
    Ok(client(mesh)
        .reassign_open_tasks(with_token(token, pb::ReassignOpenTasksRequest {}))
        .await?
        .into_inner())
}

async fn list(
    mesh: &Mesh,
    token: &str,
    request: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse, tonic::Status> {
    Ok(client(mesh)
        .list_tasks(with_token(token, request))
        .await?
        .into_inner())
}

/// Every task in TaskKeeper's database: id → (assignee, status, sequence).
async fn all_tasks(mesh: &Mesh) -> HashMap<String, (String, String, i64)> {
    let rows: Vec<(Uuid, Uuid, String, i64)> =
        sqlx::query_as("SELECT id, assignee_id, status, sequence FROM tasks")
            .fetch_all(&mesh.taskkeeper().pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(id, assignee, status, sequence)| {
            (id.to_string(), (assignee.to_string(), status, sequence))
        })
        .collect()
}
