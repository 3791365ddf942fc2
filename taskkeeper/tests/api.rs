//! TaskKeeper against real PostgreSQL and NATS, beside a real Account: every test spawns
//! both on port 0, each with its own database, sharing one unique stream prefix. Users
//! reach TaskKeeper only through the account bus.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use account_pb::account_service_client::AccountServiceClient;
use account_pb::auth_service_client::AuthServiceClient;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use pb::task_service_client::TaskServiceClient;
use popug_eventbus::catalog::{self, is, open};
use popug_eventbus::upcast::task_created as read_task_created;
use popug_eventbus::{Bus, Envelope, HandleError, Handler, Topology};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as pb;
use prost::Message;
use sqlx::PgPool;
use taskkeeper::events::Users;
use taskkeeper::service::Tasks;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

const ADMIN_PASSWORD: &str = "admin-password";
const ISSUER: &str = "test-issuer";
const AUDIENCE: &str = "test-audience";

struct World {
    account: Channel,
    taskkeeper: Channel,
    tasks: Arc<Tasks>,
    pool: PgPool,
    topology: Topology,
    js: jetstream::Context,
    admin: String,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// A user created through Account, signed in.
#[derive(Clone)]
struct User {
    id: Uuid,
    token: String,
}

async fn spawn_world(chunk_size: usize) -> World {
    let _ = popug_telemetry::init("taskkeeper-tests");
    let prefix = popug_testkit::unique_prefix();
    let account_settings = account::Settings {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        http_addr: ([127, 0, 0, 1], 0).into(),
        database_url: popug_testkit::fresh_database().await,
        database_max_connections: 4,
        nats_url: popug_testkit::nats_url(),
        stream_prefix: prefix.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        access_ttl: Duration::from_secs(300),
        refresh_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(account::config::BootstrapAdmin {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            email: "admin@test.example".into(),
        }),
        signing_key_file: None,
        key_reload_interval: Duration::from_secs(3600),
    };
    let account_app = account::Application::build(account_settings).await.unwrap();
    let account_grpc = account_app.grpc_addr();
    let jwks = format!("http://{}/.well-known/jwks.json", account_app.http_addr());
    let (stop_account, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(account_app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let settings = taskkeeper::Settings {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        database_url: popug_testkit::fresh_database().await,
        database_max_connections: 8,
        nats_url: popug_testkit::nats_url(),
        stream_prefix: prefix.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url: jwks,
        reassign_chunk_size: chunk_size,
    };
    let app = taskkeeper::Application::build(settings).await.unwrap();
    let grpc = app.grpc_addr();
    let tasks = app.tasks();
    let (stop_tk, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let connect = |addr: std::net::SocketAddr| async move {
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let account = connect(account_grpc).await;
    let admin = AuthServiceClient::new(account.clone())
        .login(account_pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    World {
        account,
        taskkeeper: connect(grpc).await,
        pool: tasks.pool.clone(),
        tasks,
        topology: Topology::new(&prefix).unwrap(),
        js: popug_testkit::jetstream().await,
        admin,
        _stop: vec![stop_account, stop_tk],
    }
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn assert_field_error(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "{field}: {status:?}"
    );
}

impl World {
    fn client(&self) -> TaskServiceClient<Channel> {
        TaskServiceClient::new(self.taskkeeper.clone())
    }

    /// Creates a user through Account and signs them in.
    async fn user(&self, username: &str, role: account_pb::Role) -> User {
        let request = account_pb::CreateAccountRequest {
            username: username.into(),
            name: "Test".into(),
            surname: "Popug".into(),
            email: format!("{username}@test.example"),
            role: role as i32,
            password: format!("{username}-password"),
            extra_permissions: vec![],
        };
        let account = AccountServiceClient::new(self.account.clone())
            .create_account(with_token(&self.admin, request))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        let token = AuthServiceClient::new(self.account.clone())
            .login(account_pb::LoginRequest {
                username: username.into(),
                password: format!("{username}-password"),
            })
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap()
            .access_token;
        User {
            id: account.id.parse().unwrap(),
            token,
        }
    }

    async fn update(&self, request: account_pb::UpdateAccountRequest) {
        AccountServiceClient::new(self.account.clone())
            .update_account(with_token(&self.admin, request))
            .await
            .unwrap();
    }

    /// Waits until TaskKeeper's copy of `id` is at `version` or newer.
    async fn synced(&self, id: Uuid, version: i64) {
        popug_testkit::eventually(
            Duration::from_secs(15),
            "user copied from the account bus",
            || async {
                let seen: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM users WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .unwrap();
                seen.filter(|v| *v >= version).map(|_| ())
            },
        )
        .await;
    }

    async fn create(
        &self,
        token: &str,
        title: &str,
        jira_id: &str,
    ) -> Result<pb::Task, tonic::Status> {
        let request = pb::CreateTaskRequest {
            title: title.into(),
            jira_id: jira_id.into(),
            description: "something to do".into(),
        };
        Ok(self
            .client()
            .create_task(with_token(token, request))
            .await?
            .into_inner()
            .task
            .unwrap())
    }

    async fn complete(&self, token: &str, id: &str) -> Result<pb::Task, tonic::Status> {
        Ok(self
            .client()
            .complete_task(with_token(token, pb::CompleteTaskRequest { id: id.into() }))
            .await?
            .into_inner()
            .task
            .unwrap())
    }

    async fn reassign(&self, token: &str) -> Result<pb::ReassignOpenTasksResponse, tonic::Status> {
        Ok(self
            .client()
            .reassign_open_tasks(with_token(token, pb::ReassignOpenTasksRequest {}))
            .await?
            .into_inner())
    }

    async fn list(
        &self,
        token: &str,
        request: pb::ListTasksRequest,
    ) -> Result<pb::ListTasksResponse, tonic::Status> {
        Ok(self
            .client()
            .list_tasks(with_token(token, request))
            .await?
            .into_inner())
    }

    /// Every task in the database: id → (assignee, status, sequence).
    async fn all_tasks(&self) -> HashMap<String, (String, String, i64)> {
        let rows: Vec<(Uuid, Uuid, String, i64)> =
            sqlx::query_as("SELECT id, assignee_id, status, sequence FROM tasks")
                .fetch_all(&self.pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(id, assignee, status, sequence)| {
                (id.to_string(), (assignee.to_string(), status, sequence))
            })
            .collect()
    }

    /// Waits until `bus` holds at least `n` events, then returns all of them in order.
    async fn events(&self, bus: Bus, n: usize) -> Vec<Envelope> {
        let name = self.topology.stream(bus);
        popug_testkit::eventually(Duration::from_secs(15), "events published", || async {
            let mut stream = self.js.get_stream(&name).await.unwrap();
            let count = stream.info().await.unwrap().state.messages as usize;
            (count >= n).then_some(())
        })
        .await;
        let stream = self.js.get_stream(&name).await.unwrap();
        let expected = stream.get_info().await.unwrap().state.messages as usize;
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.len() < expected {
            let mut batch = consumer
                .fetch()
                .max_messages(expected)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            while let Some(m) = batch.next().await {
                out.push(Envelope::decode(m.unwrap().payload.as_ref()).unwrap());
            }
        }
        out
    }
}

#[tokio::test]
async fn assignment_is_uniform_and_only_to_active_assignable_users() {
    let world = spawn_world(1000).await;
    let w1 = world.user("worker1", account_pb::Role::Worker).await;
    let w2 = world.user("worker2", account_pb::Role::Worker).await;
    let acc = world
        .user("accountant1", account_pb::Role::Accountant)
        .await;
    let manager = world.user("manager1", account_pb::Role::Manager).await;
    let gone = world.user("gone", account_pb::Role::Worker).await;
    let promoted = world.user("promoted", account_pb::Role::Worker).await;
    AccountServiceClient::new(world.account.clone())
        .delete_account(with_token(
            &world.admin,
            account_pb::DeleteAccountRequest {
                id: gone.id.to_string(),
            },
        ))
        .await
        .unwrap();
    world
        .update(account_pb::UpdateAccountRequest {
            id: promoted.id.to_string(),
            role: Some(account_pb::Role::Manager as i32),
            ..Default::default()
        })
        .await;
    for user in [&w1, &w2, &acc, &manager] {
        world.synced(user.id, 1).await;
    }
    world.synced(gone.id, 2).await;
    world.synced(promoted.id, 2).await;

    // 300 tasks over 3 assignable users: each count is Binomial(300, 1/3), mean 100,
    // sd 8.2; 50..=150 is ±6 sd, so a fair pick fails this about once in 10^9 runs.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let task = world
            .create(&manager.token, &format!("task {i}"), "")
            .await
            .unwrap();
        assert_eq!(task.status, pb::TaskStatus::Open as i32);
        assert_eq!(task.sequence, 1);
        *counts.entry(task.assignee_id).or_default() += 1;
    }
    let allowed: HashSet<String> = [&w1, &w2, &acc].iter().map(|u| u.id.to_string()).collect();
    for (assignee, count) in &counts {
        assert!(
            allowed.contains(assignee),
            "assigned to a non-assignable user {assignee}"
        );
        assert!(
            (50..=150).contains(count),
            "{assignee} got {count} of 300: {counts:?}"
        );
    }
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Reassign also only picks assignable users.
    let done = world.reassign(&manager.token).await.unwrap();
    assert_eq!(done.reassigned, 300);
    for (assignee, _, _) in world.all_tasks().await.values() {
        assert!(allowed.contains(assignee));
    }
}

#[tokio::test]
async fn no_assignable_user_is_a_failed_precondition() {
    let world = spawn_world(1000).await;
    let manager = world.user("manager1", account_pb::Role::Manager).await;
    world.synced(manager.id, 1).await;
    let refused = world
        .create(&manager.token, "nobody to do it", "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = world.reassign(&manager.token).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(world.all_tasks().await.is_empty());

    let worker = world.user("worker1", account_pb::Role::Worker).await;
    world.synced(worker.id, 1).await;
    let task = world
        .create(&manager.token, "now it works", "")
        .await
        .unwrap();
    assert_eq!(task.assignee_id, worker.id.to_string());

    // Deactivating the only worker makes creation fail again.
    world
        .update(account_pb::UpdateAccountRequest {
            id: worker.id.to_string(),
            active: Some(false),
            ..Default::default()
        })
        .await;
    world.synced(worker.id, 2).await;
    let refused = world
        .create(&manager.token, "again nobody", "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

#[tokio::test]
async fn only_the_assignee_completes_and_done_is_final() {
    let world = spawn_world(1000).await;
    let w1 = world.user("worker1", account_pb::Role::Worker).await;
    let w2 = world.user("worker2", account_pb::Role::Worker).await;
    let manager = world.user("manager1", account_pb::Role::Manager).await;
    for user in [&w1, &w2, &manager] {
        world.synced(user.id, 1).await;
    }
    let by_id: HashMap<String, &User> = [&w1, &w2]
        .into_iter()
        .map(|u| (u.id.to_string(), u))
        .collect();
    let task = world
        .create(&w1.token, "Feed the popugs", "UBERPOP-42")
        .await
        .unwrap();
    assert_eq!(task.jira_id, "UBERPOP-42");
    let assignee = by_id[&task.assignee_id];
    let other = if assignee.id == w1.id { &w2 } else { &w1 };

    let refused = world.complete(&other.token, &task.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = world.complete(&manager.token, &task.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let unknown = world
        .complete(&w1.token, &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let done = world.complete(&assignee.token, &task.id).await.unwrap();
    assert_eq!(done.status, pb::TaskStatus::Done as i32);
    assert_eq!(done.sequence, 2);
    let again = world.complete(&assignee.token, &task.id).await.unwrap();
    assert_eq!(again.status, pb::TaskStatus::Done as i32);
    assert_eq!(again.sequence, 2, "a second completion changes nothing");

    // Reassigning many times never moves the done task.
    for _ in 0..5 {
        assert_eq!(world.reassign(&manager.token).await.unwrap().reassigned, 0);
    }
    let after = &world.all_tasks().await[&task.id];
    assert_eq!(after, &(assignee.id.to_string(), "done".to_owned(), 2));

    // The task bus: created (v2) + assigned, then exactly one completed.
    let events = world.events(Bus::Task, 3).await;
    let names: Vec<(&str, i32)> = events
        .iter()
        .map(|e| (e.name.as_str(), e.version))
        .collect();
    assert_eq!(
        names,
        [
            ("task.created", 2),
            ("task.assigned", 1),
            ("task.completed", 1)
        ]
    );
    let created = read_task_created(&events[0]).unwrap();
    assert_eq!(created.task_id, task.id);
    assert_eq!(created.title, "Feed the popugs");
    assert_eq!(created.jira_id, "UBERPOP-42");
    assert_eq!(created.assignee_id, task.assignee_id);
    assert_eq!(created.sequence, 1);
    let completed = open::<pb::TaskCompleted>(&events[2]).unwrap();
    assert_eq!(completed.assignee_id, assignee.id.to_string());
    assert_eq!((completed.status.as_str(), completed.sequence), ("done", 2));
}

#[tokio::test]
async fn reassign_moves_open_tasks_and_its_chunks_cover_each_exactly_once() {
    // Chunks of 7 so 40 tasks span several.
    let world = spawn_world(7).await;
    let workers = [
        world.user("worker1", account_pb::Role::Worker).await,
        world.user("worker2", account_pb::Role::Worker).await,
        world.user("worker3", account_pb::Role::Worker).await,
    ];
    let manager = world.user("manager1", account_pb::Role::Manager).await;
    for user in workers.iter().chain([&manager]) {
        world.synced(user.id, 1).await;
    }
    let token_of: HashMap<String, String> = workers
        .iter()
        .map(|u| (u.id.to_string(), u.token.clone()))
        .collect();
    let mut done = HashSet::new();
    for i in 0..40 {
        let task = world
            .create(&manager.token, &format!("task {i}"), "")
            .await
            .unwrap();
        if i % 4 == 0 {
            world
                .complete(&token_of[&task.assignee_id], &task.id)
                .await
                .unwrap();
            done.insert(task.id);
        }
    }
    let before = world.all_tasks().await;

    let first = world.reassign(&manager.token).await.unwrap();
    assert_eq!(first.reassigned, 30);
    // Two reassigns at once serialize; both move every open task.
    let (a, b) = tokio::join!(world.tasks.reassign(), world.tasks.reassign());
    assert_eq!((a.unwrap().count, b.unwrap().count), (30, 30));
    let after = world.all_tasks().await;
    for (id, state) in &after {
        if done.contains(id) {
            assert_eq!(state, &before[id], "done task {id} moved");
        } else {
            assert_eq!(state.2, before[id].2 + 3, "open task {id} sequence");
        }
    }

    // 3 reassigns × ceil(30 / 7) = 15 chunks.
    let chunks: Vec<pb::ReassignChunk> = world
        .events(Bus::Reassign, 15)
        .await
        .iter()
        .map(|e| {
            assert!(is::<pb::ReassignChunk>(e), "{} v{}", e.name, e.version);
            open::<pb::ReassignChunk>(e).unwrap()
        })
        .collect();
    assert_eq!(chunks.len(), 15);
    let mut by_reassign: HashMap<&str, Vec<&pb::ReassignChunk>> = HashMap::new();
    for chunk in &chunks {
        by_reassign
            .entry(&chunk.reassign_id)
            .or_default()
            .push(chunk);
    }
    assert_eq!(by_reassign.len(), 3);
    assert!(by_reassign.contains_key(first.reassign_id.as_str()));
    let open_ids: HashSet<&String> = after.keys().filter(|id| !done.contains(*id)).collect();
    let mut latest: HashMap<String, (String, i64)> = HashMap::new();
    for (reassign, chunks) in &by_reassign {
        let mut indexes: Vec<i32> = chunks.iter().map(|c| c.chunk_index).collect();
        indexes.sort();
        assert_eq!(indexes, [0, 1, 2, 3, 4], "{reassign}");
        assert!(
            chunks
                .iter()
                .all(|c| c.chunk_count == 5 && c.tasks.len() <= 7)
        );
        let mut seen: Vec<&String> = chunks
            .iter()
            .flat_map(|c| c.tasks.iter().map(|t| &t.task_id))
            .collect();
        seen.sort();
        let unique: HashSet<&String> = seen.iter().copied().collect();
        assert_eq!(
            seen.len(),
            unique.len(),
            "a task twice in reassign {reassign}"
        );
        assert_eq!(
            unique, open_ids,
            "reassign {reassign} does not cover every open task"
        );
        for task in chunks.iter().flat_map(|c| &c.tasks) {
            let entry = latest.entry(task.task_id.clone()).or_default();
            if task.sequence > entry.1 {
                *entry = (task.assignee_id.clone(), task.sequence);
            }
        }
    }
    // The newest event of every task matches the database.
    for (id, (assignee, sequence)) in &latest {
        assert_eq!(
            (assignee, *sequence),
            (&after[id].0, after[id].2),
            "task {id}"
        );
    }
}

#[tokio::test]
async fn task_created_v1_and_v2_decode() {
    let v2 = pb::TaskCreated {
        task_id: Uuid::now_v7().to_string(),
        public_id: "7".into(),
        title: "Clean the cage".into(),
        jira_id: "POP-7".into(),
        description: "d".into(),
        assignee_id: Uuid::now_v7().to_string(),
        status: "open".into(),
        sequence: 1,
    };
    let envelope = catalog::envelope("taskkeeper", &v2.task_id, &v2);
    assert_eq!(
        (envelope.name.as_str(), envelope.version),
        ("task.created", 2)
    );
    assert_eq!(read_task_created(&envelope).unwrap(), v2);

    let v1 = pb::TaskCreatedV1 {
        task_id: v2.task_id.clone(),
        public_id: "7".into(),
        title: "[POP-7] - Clean the cage".into(),
        description: "d".into(),
        assignee_id: v2.assignee_id.clone(),
        status: "open".into(),
        sequence: 1,
    };
    let envelope = catalog::envelope("legacy", &v1.task_id, &v1);
    assert_eq!(
        (envelope.name.as_str(), envelope.version),
        ("task.created", 1)
    );
    assert_eq!(read_task_created(&envelope).unwrap(), v2);

    let mut unknown = envelope.clone();
    unknown.version = 3;
    assert!(matches!(
        read_task_created(&unknown),
        Err(HandleError::Permanent(_))
    ));
}

fn snapshot(id: Uuid, role: &str, active: bool, version: i64) -> account_pb::AccountSnapshot {
    account_pb::AccountSnapshot {
        id: id.to_string(),
        username: format!("user-v{version}"),
        role: role.into(),
        active,
        version,
        ..Default::default()
    }
}

#[tokio::test]
async fn account_events_apply_idempotently_and_out_of_order() {
    let settings = taskkeeper::Settings {
        database_url: popug_testkit::fresh_database().await,
        ..taskkeeper::Settings::from_env().unwrap()
    };
    let pool = taskkeeper::startup::connect_and_migrate(&settings)
        .await
        .unwrap();
    let users = Users;
    let id = Uuid::now_v7();
    let row = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, String, bool, bool, i64)>(
            "SELECT username, role, active, assignable, version FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let apply = |envelope: Envelope| {
        let pool = pool.clone();
        let users = users.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            users.handle(&mut conn, &envelope).await
        }
    };

    // The update (v2: promoted to manager) arrives before the creation (v1: worker).
    let updated = catalog::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountUpdated {
            account: Some(snapshot(id, "manager", true, 2)),
            changed_fields: vec!["role".into()],
        },
    );
    let created = catalog::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountCreated {
            account: Some(snapshot(id, "worker", true, 1)),
        },
    );
    apply(updated.clone()).await.unwrap();
    apply(created.clone()).await.unwrap();
    let expected = ("user-v2".to_owned(), "manager".to_owned(), true, false, 2);
    assert_eq!(
        row(pool.clone()).await,
        expected,
        "an older event overwrote a newer one"
    );
    // Replays change nothing.
    apply(updated).await.unwrap();
    apply(created).await.unwrap();
    assert_eq!(row(pool.clone()).await, expected);

    // Back to worker (v3): assignable; then deleted (v4): never again.
    apply(catalog::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountUpdated {
            account: Some(snapshot(id, "worker", true, 3)),
            changed_fields: vec!["role".into()],
        },
    ))
    .await
    .unwrap();
    assert!(row(pool.clone()).await.3);
    apply(catalog::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountDeleted {
            account: Some(snapshot(id, "worker", false, 4)),
        },
    ))
    .await
    .unwrap();
    let (_, _, active, assignable, version) = row(pool.clone()).await;
    assert_eq!((active, assignable, version), (false, false, 4));

    // What it cannot understand is refused for good (dead-lettered by the consumer).
    let mut unknown = catalog::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountCreated {
            account: Some(snapshot(id, "worker", true, 9)),
        },
    );
    unknown.version = 2;
    assert!(matches!(
        apply(unknown).await,
        Err(HandleError::Permanent(_))
    ));
    let mut garbage = catalog::envelope(
        "account",
        "x",
        &account_pb::AccountCreated { account: None },
    );
    assert!(matches!(
        apply(garbage.clone()).await,
        Err(HandleError::Permanent(_))
    ));
    garbage.payload = vec![0xff, 0xff, 0xff].into();
    assert!(matches!(
        apply(garbage).await,
        Err(HandleError::Permanent(_))
    ));
    assert_eq!(row(pool).await.4, 4);
}

#[tokio::test]
async fn permissions_per_role_and_bad_input() {
    let world = spawn_world(1000).await;
    let w1 = world.user("worker1", account_pb::Role::Worker).await;
    let w2 = world.user("worker2", account_pb::Role::Worker).await;
    let manager = world.user("manager1", account_pb::Role::Manager).await;
    for user in [&w1, &w2, &manager] {
        world.synced(user.id, 1).await;
    }
    let mut mine = HashMap::<Uuid, usize>::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let task = world
            .create(&w1.token, &format!("task {i}"), "")
            .await
            .unwrap();
        *mine.entry(task.assignee_id.parse().unwrap()).or_default() += 1;
        ids.push(task);
    }

    // Workers: no reassign, only their own tasks.
    let refused = world.reassign(&w1.token).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    for worker in [&w1, &w2] {
        let own = world
            .list(&worker.token, pb::ListTasksRequest::default())
            .await
            .unwrap();
        assert_eq!(own.tasks.len(), mine.get(&worker.id).copied().unwrap_or(0));
        assert!(
            own.tasks
                .iter()
                .all(|t| t.assignee_id == worker.id.to_string())
        );
        let other = if worker.id == w1.id { &w2 } else { &w1 };
        let refused = world
            .list(
                &worker.token,
                pb::ListTasksRequest {
                    assignee_id: other.id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        for task in &ids {
            let got = world
                .client()
                .get_task(with_token(
                    &worker.token,
                    pb::GetTaskRequest {
                        id: task.id.clone(),
                    },
                ))
                .await;
            if task.assignee_id == worker.id.to_string() {
                assert_eq!(got.unwrap().into_inner().task.unwrap().id, task.id);
            } else {
                assert_eq!(got.unwrap_err().code(), Code::PermissionDenied);
            }
        }
    }

    // Managers see everything, paged and filtered.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = world
            .list(
                &manager.token,
                pb::ListTasksRequest {
                    page_size: 5,
                    page_token: token.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.tasks.len() <= 5);
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = ids.iter().map(|t| t.id.clone()).collect();
    assert_eq!(seen, expected);
    let of_w2 = world
        .list(
            &manager.token,
            pb::ListTasksRequest {
                assignee_id: w2.id.to_string(),
                status: pb::TaskStatus::Open as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(of_w2.tasks.len(), mine.get(&w2.id).copied().unwrap_or(0));
    let done = world
        .list(
            &manager.token,
            pb::ListTasksRequest {
                status: pb::TaskStatus::Done as i32,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(done.tasks.is_empty());

    // No token, a bad token.
    let anonymous = world
        .client()
        .list_tasks(Request::new(pb::ListTasksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let forged = world
        .list("not.a.token", pb::ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);

    // Bad input names the field.
    let create = |title: String, jira_id: &str, description: String| {
        let request = pb::CreateTaskRequest {
            title,
            jira_id: jira_id.into(),
            description,
        };
        let mut client = world.client();
        let token = w1.token.clone();
        async move {
            client
                .create_task(with_token(&token, request))
                .await
                .unwrap_err()
        }
    };
    assert_field_error(create("".into(), "", "".into()).await, "title");
    assert_field_error(
        create("[POP-1] - Title".into(), "", "".into()).await,
        "title",
    );
    assert_field_error(create("x".repeat(201), "", "".into()).await, "title");
    assert_field_error(create("ok".into(), "pop-1", "".into()).await, "jira_id");
    assert_field_error(create("ok".into(), "POP1", "".into()).await, "jira_id");
    assert_field_error(
        create("ok".into(), "", "x".repeat(10_001)).await,
        "description",
    );
    let bad_id = world
        .client()
        .get_task(with_token(
            &w1.token,
            pb::GetTaskRequest { id: "nope".into() },
        ))
        .await
        .unwrap_err();
    assert_field_error(bad_id, "id");
    let bad_id = world.complete(&w1.token, "nope").await.unwrap_err();
    assert_field_error(bad_id, "id");
    for (request, field) in [
        (
            pb::ListTasksRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListTasksRequest {
                page_token: "x".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListTasksRequest {
                assignee_id: "x".into(),
                ..Default::default()
            },
            "assignee_id",
        ),
        (
            pb::ListTasksRequest {
                status: 9,
                ..Default::default()
            },
            "status",
        ),
    ] {
        assert_field_error(
            world.list(&manager.token, request).await.unwrap_err(),
            field,
        );
    }
    assert_eq!(
        world.all_tasks().await.len(),
        12,
        "bad input created something"
    );
}

#[tokio::test]
async fn completions_racing_reassigns_leave_events_consistent_with_the_state() {
    let world = spawn_world(1000).await;
    let workers = [
        world.user("worker1", account_pb::Role::Worker).await,
        world.user("worker2", account_pb::Role::Worker).await,
        world.user("worker3", account_pb::Role::Worker).await,
    ];
    let manager = world.user("manager1", account_pb::Role::Manager).await;
    for user in workers.iter().chain([&manager]) {
        world.synced(user.id, 1).await;
    }
    let token_of: HashMap<String, String> = workers
        .iter()
        .map(|u| (u.id.to_string(), u.token.clone()))
        .collect();
    let mut created = Vec::new();
    for i in 0..30 {
        created.push(
            world
                .create(&manager.token, &format!("task {i}"), "")
                .await
                .unwrap(),
        );
    }

    // Every task's first assignee tries to complete it while three reassigns run.
    let completions = futures::future::join_all(created.iter().map(|task| {
        let token = token_of[&task.assignee_id].clone();
        let id = task.id.clone();
        let world = &world;
        async move { world.complete(&token, &id).await }
    }));
    let reassigns = futures::future::join_all((0..3).map(|_| world.reassign(&manager.token)));
    let (completions, reassigns) = tokio::join!(completions, reassigns);
    let mut completed = 0;
    for outcome in completions {
        match outcome {
            Ok(task) => {
                assert_eq!(task.status, pb::TaskStatus::Done as i32);
                completed += 1;
            }
            // Reassigned away first: no longer theirs.
            Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        }
    }
    let moving: usize = reassigns
        .into_iter()
        .map(|r| usize::from(r.unwrap().reassigned > 0))
        .sum();

    let state = world.all_tasks().await;
    let task_events = world.events(Bus::Task, 60 + completed).await;
    assert_eq!(task_events.len(), 60 + completed);
    let chunks = if moving == 0 {
        Vec::new()
    } else {
        world.events(Bus::Reassign, moving).await
    };
    // The newest event of every task (by sequence) says what the database says.
    let mut latest: HashMap<String, (String, String, i64)> = HashMap::new();
    let mut note = |id: &str, assignee: &str, status: &str, sequence: i64| {
        let entry = latest.entry(id.to_owned()).or_default();
        assert_ne!(
            entry.2, sequence,
            "two events of task {id} share sequence {sequence}"
        );
        if sequence > entry.2 {
            *entry = (assignee.to_owned(), status.to_owned(), sequence);
        }
    };
    for envelope in &task_events {
        if is::<pb::TaskCompleted>(envelope) {
            let e = open::<pb::TaskCompleted>(envelope).unwrap();
            note(&e.task_id, &e.assignee_id, &e.status, e.sequence);
        } else if is::<pb::TaskCreated>(envelope) {
            let e = open::<pb::TaskCreated>(envelope).unwrap();
            note(&e.task_id, &e.assignee_id, &e.status, e.sequence);
        }
    }
    for envelope in &chunks {
        for t in open::<pb::ReassignChunk>(envelope).unwrap().tasks {
            note(&t.task_id, &t.assignee_id, "open", t.sequence);
        }
    }
    assert_eq!(latest.len(), 30);
    for (id, (assignee, status, sequence)) in &latest {
        assert_eq!(
            (assignee, status, *sequence),
            (&state[id].0, &state[id].1, state[id].2),
            "task {id}"
        );
    }
}
