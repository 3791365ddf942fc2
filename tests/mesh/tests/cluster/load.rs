//! The load of the cluster test: each worker creating tasks (one idempotency key per
//! task, sent again while the answer is transient) and completing their own, and an
//! admin reassigning now and then and creating and changing accounts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use popug_mesh::with_token;
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

/// What the load did, by kind of call and outcome.
#[derive(Debug, Default)]
pub struct Tally {
    /// Task ids whose CreateTask was acknowledged.
    pub created: Vec<Uuid>,
    /// Task ids whose CompleteTask was acknowledged (a worker's two clients may both
    /// complete one task: the second is answered OK too).
    pub completed: Vec<Uuid>,
    pub reassigns: u64,
    pub account_changes: u64,
    /// Calls that failed after their retries, by RPC and code.
    pub failed: BTreeMap<String, u64>,
}

impl Tally {
    fn failed(&mut self, rpc: &str, code: Code) {
        *self.failed.entry(format!("{rpc} {code:?}")).or_default() += 1;
    }
}

/// How long a create is sent again (same key) while its answers are transient.
const CREATE_RETRIES_FOR: Duration = Duration::from_secs(10);

/// At most one round per `period`; a late round is not made up for.
fn pacer(period: Duration) -> tokio::time::Interval {
    let mut pace = tokio::time::interval(period);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pace
}

/// Whether a client may send the call again (the same idempotency key for creates).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled
    )
}
fn keyed<T>(token: &str, key: Uuid, message: T) -> Request<T> {
    let mut request = with_token(token, message);
    request
        .metadata_mut()
        .insert("idempotency-key", key.to_string().parse().unwrap());
    request
}

/// CreateTask with one idempotency key, sent again while the answer is transient.
pub async fn create(
    tasks: &mut tasks_pb::task_service_client::TaskServiceClient<Channel>,
    token: &str,
    title: String,
) -> Result<Uuid, Code> {
    let key = Uuid::new_v4();
    let deadline = Instant::now() + CREATE_RETRIES_FOR;
    loop {
        let request = tasks_pb::CreateTaskRequest {
            title: title.clone(),
            ..Default::default()
        };
        match tasks.create_task(keyed(token, key, request)).await {
            Ok(answer) => return Ok(answer.into_inner().task.unwrap().id.parse().unwrap()),
            Err(status) if transient(status.code()) && Instant::now() < deadline => {}
            Err(status) => return Err(status.code()),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Completes one of the worker's open tasks, if it has one.
async fn complete_one(
    tasks: &mut tasks_pb::task_service_client::TaskServiceClient<Channel>,
    token: &str,
    me: &str,
) -> Result<Option<Uuid>, Code> {
    let open = tasks
        .list_tasks(with_token(
            token,
            tasks_pb::ListTasksRequest {
                page_size: 5,
                status: tasks_pb::TaskStatus::Open as i32,
                assignee_id: me.into(),
                ..Default::default()
            },
        ))
        .await
        .map_err(|s| s.code())?
        .into_inner()
        .tasks;
    let Some(task) = open.first() else {
        return Ok(None);
    };
    let request = tasks_pb::CompleteTaskRequest {
        id: task.id.clone(),
    };
    match tasks.complete_task(with_token(token, request)).await {
        Ok(_) => Ok(Some(task.id.parse().unwrap())),
        // Reassigned to someone else meanwhile.
        Err(status) if status.code() == Code::PermissionDenied => Ok(None),
        Err(status) => Err(status.code()),
    }
}

/// One worker's load through `gateway` until `stop` is set: a call every 20 ms at most.
pub async fn worker_load(
    gateway: Channel,
    token: String,
    me: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut tasks = tasks_pb::task_service_client::TaskServiceClient::new(gateway);
    let mut pace = pacer(Duration::from_millis(20));
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        i += 1;
        if i.is_multiple_of(2) {
            match complete_one(&mut tasks, &token, &me).await {
                Ok(Some(id)) => tally.lock().unwrap().completed.push(id),
                Ok(None) => {}
                Err(code) => tally.lock().unwrap().failed("CompleteTask", code),
            }
        } else {
            match create(&mut tasks, &token, format!("Load {me} {i}")).await {
                Ok(id) => tally.lock().unwrap().created.push(id),
                Err(code) => tally.lock().unwrap().failed("CreateTask", code),
            }
        }
    }
}

/// The admin's load: a reassign now and then, new accounts and changes to them.
pub async fn admin_load(
    gateways: Vec<Channel>,
    token: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) {
    let mut made: Vec<String> = Vec::new();
    let mut pace = pacer(Duration::from_millis(700));
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        i += 1;
        let gateway = gateways[i % gateways.len()].clone();
        let mut tasks = tasks_pb::task_service_client::TaskServiceClient::new(gateway.clone());
        let mut accounts = account_pb::account_service_client::AccountServiceClient::new(gateway);
        if i.is_multiple_of(10) {
            match tasks
                .reassign_open_tasks(with_token(&token, tasks_pb::ReassignOpenTasksRequest {}))
                .await
            {
                Ok(_) => tally.lock().unwrap().reassigns += 1,
                Err(status) => tally
                    .lock()
                    .unwrap()
                    .failed("ReassignOpenTasks", status.code()),
            }
        } else if i.is_multiple_of(2) && !made.is_empty() {
            let id = made[i % made.len()].clone();
            let request = account_pb::UpdateAccountRequest {
                id,
                name: Some(format!("Renamed {i}")),
                ..Default::default()
            };
            match accounts.update_account(with_token(&token, request)).await {
                Ok(_) => tally.lock().unwrap().account_changes += 1,
                Err(status) => tally.lock().unwrap().failed("UpdateAccount", status.code()),
            }
        } else {
            let username = format!("extra{i}");
            let request = account_pb::CreateAccountRequest {
                username: username.clone(),
                name: "Extra".into(),
                surname: "Popug".into(),
                email: format!("{username}@test.example"),
                role: account_pb::Role::Worker as i32,
                password: "extra-password".into(),
                extra_permissions: vec![],
            };
            match accounts
                .create_account(keyed(&token, Uuid::new_v4(), request))
                .await
            {
                Ok(answer) => {
                    made.push(answer.into_inner().account.unwrap().id);
                    tally.lock().unwrap().account_changes += 1;
                }
                Err(status) => tally.lock().unwrap().failed("CreateAccount", status.code()),
            }
        }
    }
}
