//! Accounting against real PostgreSQL, NATS and an SMTP sink. The full-mesh tests spawn
//! a real Account and TaskKeeper beside Accounting (port 0, a database each, one unique
//! stream prefix), so every fee and reward arrives over the real buses; the ledger tests
//! deliver hand-made events to the handler, twice and out of order.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use account_pb::account_service_client::AccountServiceClient;
use account_pb::auth_service_client::AuthServiceClient;
use accounting::events::{Ledger, Users};
use accounting::service::Accounting;
use analytics_pb::analytics_service_client::AnalyticsServiceClient;
use pb::accounting_service_client::AccountingServiceClient;
use popug_eventbus::catalog::{self, Event};
use popug_eventbus::{Bus, DeadLetter, Envelope, HandleError, Handler, Topology};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::accounting::v1 as pb;
use popug_proto::popug::analytics::v1 as analytics_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use prost::Message;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Request};
use uuid::Uuid;

const ADMIN_PASSWORD: &str = "admin-password";
const ISSUER: &str = "test-issuer";
const AUDIENCE: &str = "test-audience";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// An SMTP sink: accepts every mail and keeps it, so tests read what was "sent".

#[derive(Clone, Default)]
struct Sink {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Sink {
    fn start(listener: TcpListener) -> Sink {
        let sink = Sink::default();
        let messages = sink.messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let messages = messages.clone();
                tokio::spawn(async move {
                    let _ = serve_smtp(stream, messages).await;
                });
            }
        });
        sink
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

async fn serve_smtp(
    stream: tokio::net::TcpStream,
    messages: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_ascii_uppercase();
        if command.starts_with("EHLO") {
            write.write_all(b"250-sink\r\n250 8BITMIME\r\n").await?;
        } else if command.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut body = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                body.push_str(&line);
            }
            messages.lock().unwrap().push(body);
            write.write_all(b"250 queued\r\n").await?;
        } else if command.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
}

/// A port nothing listens on (yet).
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------
// The world.

struct World {
    account: Option<Channel>,
    taskkeeper: Option<Channel>,
    tk_pool: Option<PgPool>,
    accounting: Channel,
    service: Arc<Accounting>,
    ledger: Ledger,
    pool: PgPool,
    database_url: String,
    topology: Topology,
    js: async_nats::jetstream::Context,
    admin: String,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

struct Options {
    /// Account and TaskKeeper too.
    mesh: bool,
    smtp_port: u16,
    scheduler: Option<Duration>,
}

fn settings(
    database_url: String,
    prefix: &str,
    jwks_url: String,
    opts: &Options,
) -> accounting::Settings {
    accounting::Settings {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        database_url,
        database_max_connections: 8,
        nats_url: popug_testkit::nats_url(),
        stream_prefix: prefix.to_owned(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url,
        day_cutoff: Duration::ZERO,
        close_check_interval: opts.scheduler,
        smtp_host: "127.0.0.1".into(),
        smtp_port: opts.smtp_port,
        smtp_from: "Accounting <accounting@test.example>".into(),
        mail_retry_base: Duration::from_millis(200),
        mail_max_attempts: 50,
        mail_poll_interval: Duration::from_millis(50),
    }
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn spawn_world(opts: Options) -> World {
    let _ = popug_telemetry::init("accounting-tests");
    let prefix = popug_testkit::unique_prefix();
    let mut stops = Vec::new();
    let mut spawn_stop = || {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        async move {
            let _ = stopped.await;
        }
    };

    let (account, taskkeeper, tk_pool, jwks_url) = if opts.mesh {
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
        let app = account::Application::build(account_settings).await.unwrap();
        let grpc = app.grpc_addr();
        let jwks = format!("http://{}/.well-known/jwks.json", app.http_addr());
        tokio::spawn(app.run_until_stopped(spawn_stop()));

        let tk_settings = taskkeeper::Settings {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            database_url: popug_testkit::fresh_database().await,
            database_max_connections: 4,
            nats_url: popug_testkit::nats_url(),
            stream_prefix: prefix.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: jwks.clone(),
            reassign_chunk_size: 2,
        };
        let tk = taskkeeper::Application::build(tk_settings).await.unwrap();
        let tk_grpc = tk.grpc_addr();
        let tk_pool = tk.tasks().pool.clone();
        tokio::spawn(tk.run_until_stopped(spawn_stop()));
        (
            Some(connect(grpc).await),
            Some(connect(tk_grpc).await),
            Some(tk_pool),
            jwks,
        )
    } else {
        (
            None,
            None,
            None,
            "http://127.0.0.1:9/.well-known/jwks.json".to_owned(),
        )
    };

    let database_url = popug_testkit::fresh_database().await;
    let app =
        accounting::Application::build(settings(database_url.clone(), &prefix, jwks_url, &opts))
            .await
            .unwrap();
    let grpc = app.grpc_addr();
    let service = app.accounting();
    let ledger = app.ledger();
    tokio::spawn(app.run_until_stopped(spawn_stop()));

    let admin = match &account {
        Some(channel) => login(channel, "admin", ADMIN_PASSWORD).await,
        None => String::new(),
    };
    World {
        account,
        taskkeeper,
        tk_pool,
        accounting: connect(grpc).await,
        pool: service.pool.clone(),
        service,
        ledger,
        database_url,
        topology: Topology::new(&prefix).unwrap(),
        js: popug_testkit::jetstream().await,
        admin,
        _stop: stops,
    }
}

async fn login(account: &Channel, username: &str, password: &str) -> String {
    AuthServiceClient::new(account.clone())
        .login(account_pb::LoginRequest {
            username: username.into(),
            password: password.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A user created through Account, signed in.
#[derive(Clone)]
struct User {
    id: Uuid,
    email: String,
    token: String,
}

/// One ledger entry as the tests look at it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
struct Row {
    user_id: Uuid,
    kind: String,
    amount: i64,
    task_id: Option<Uuid>,
    title: String,
    jira_id: String,
    text_known: bool,
}

impl World {
    fn accounting(&self) -> AccountingServiceClient<Channel> {
        AccountingServiceClient::new(self.accounting.clone())
    }

    fn analytics(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.accounting.clone())
    }

    fn tasks(&self) -> tasks_pb::task_service_client::TaskServiceClient<Channel> {
        tasks_pb::task_service_client::TaskServiceClient::new(self.taskkeeper.clone().unwrap())
    }

    async fn user(&self, username: &str, role: account_pb::Role) -> User {
        let account = self.account.clone().unwrap();
        let email = format!("{username}@test.example");
        let request = account_pb::CreateAccountRequest {
            username: username.into(),
            name: format!("Popug {username}"),
            surname: "Popugaev".into(),
            email: email.clone(),
            role: role as i32,
            password: format!("{username}-password"),
            extra_permissions: vec![],
        };
        let created = AccountServiceClient::new(account.clone())
            .create_account(with_token(&self.admin, request))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        User {
            id: created.id.parse().unwrap(),
            email,
            token: login(&account, username, &format!("{username}-password")).await,
        }
    }

    /// Waits until TaskKeeper may (or may no longer) assign to `id`.
    async fn assignable_in_taskkeeper(&self, id: Uuid, assignable: bool) {
        let pool = self.tk_pool.clone().unwrap();
        popug_testkit::eventually(WAIT, "TaskKeeper's user copy", || async {
            let seen: Option<bool> =
                sqlx::query_scalar("SELECT assignable FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            (seen == Some(assignable)).then_some(())
        })
        .await;
    }

    async fn create_task(&self, token: &str, title: &str, jira_id: &str) -> tasks_pb::Task {
        self.tasks()
            .create_task(with_token(
                token,
                tasks_pb::CreateTaskRequest {
                    title: title.into(),
                    jira_id: jira_id.into(),
                    description: format!("about {title}"),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
    }

    async fn complete(&self, token: &str, id: &str) {
        self.tasks()
            .complete_task(with_token(
                token,
                tasks_pb::CompleteTaskRequest { id: id.into() },
            ))
            .await
            .unwrap();
    }

    /// Applies one event with the ledger handler in its own transaction, as the
    /// consumer would (minus its processed-events record, so a second delivery reaches
    /// the handler and must be absorbed by the ledger's own keys).
    async fn deliver(&self, envelope: &Envelope) -> Result<(), HandleError> {
        let mut tx = self.pool.begin().await.unwrap();
        self.ledger.handle(&mut tx, envelope).await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    /// Gives Accounting a user directly through its account-bus handler.
    async fn known_user(&self, id: Uuid, email: &str) {
        let snapshot = account_pb::AccountSnapshot {
            id: id.to_string(),
            username: email.split('@').next().unwrap().to_owned(),
            name: "Kesha".into(),
            surname: "Popugaev".into(),
            email: email.into(),
            role: "worker".into(),
            permissions: vec![],
            active: true,
            version: 1,
            updated_at: None,
        };
        let envelope = catalog::envelope(
            "account",
            &snapshot.id,
            &account_pb::AccountCreated {
                account: Some(snapshot.clone()),
            },
        );
        let mut tx = self.pool.begin().await.unwrap();
        Users.handle(&mut tx, &envelope).await.unwrap();
        tx.commit().await.unwrap();
    }

    async fn rows(&self) -> Vec<Row> {
        sqlx::query_as(
            "SELECT user_id, kind, amount, task_id, title, jira_id, text_known
             FROM entries ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }

    async fn entry_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM entries")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn prices(&self, task: &str) -> (i64, i64) {
        sqlx::query_as("SELECT fee_cents, reward_cents FROM tasks WHERE id = $1")
            .bind(Uuid::parse_str(task).unwrap())
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn db_balance(&self, user: Uuid) -> i64 {
        accounting::store::balance(&mut self.pool.acquire().await.unwrap(), user)
            .await
            .unwrap()
    }

    /// The ledger's invariants: each balance is the sum of its user's entries; every
    /// fee and reward traces to exactly one event leg and carries its task's one price;
    /// every payout has exactly one mail.
    async fn assert_invariants(&self) {
        let off: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM balances b
             FULL JOIN (SELECT user_id, sum(amount) AS s FROM entries GROUP BY user_id) e
               USING (user_id)
             WHERE COALESCE(b.balance, 0) <> COALESCE(e.s, 0)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(off, 0, "a balance differs from the sum of its entries");
        let (legs, distinct, untraced): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT (event_id, task_id, kind)),
                    count(*) FILTER (WHERE event_id IS NULL OR task_id IS NULL)
             FROM entries WHERE kind <> 'payout'",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(legs, distinct, "two entries share an event leg");
        assert_eq!(untraced, 0, "an entry without its event leg");
        let mispriced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM entries e JOIN tasks t ON t.id = e.task_id
             WHERE (e.kind = 'assign_fee' AND e.amount <> -t.fee_cents)
                OR (e.kind = 'completion_reward' AND e.amount <> t.reward_cents)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(mispriced, 0, "an entry not at its task's one price");
        let orphan: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM entries e WHERE e.task_id IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(orphan, 0);
        let unmailed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM entries e WHERE kind = 'payout'
               AND (SELECT count(*) FROM payout_mails m WHERE m.entry_id = e.id) <> 1",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(unmailed, 0);
    }

    /// Every message of `bus` so far.
    async fn stream(&self, bus: Bus) -> Vec<async_nats::jetstream::Message> {
        popug_testkit::read_stream(&self.js, &self.topology.stream(bus)).await
    }

    async fn accounting_events(&self, name: &str) -> Vec<Envelope> {
        self.stream(Bus::Accounting)
            .await
            .into_iter()
            .map(|m| Envelope::decode(m.payload.as_ref()).unwrap())
            .filter(|e| e.name == name)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Hand-made task events.

fn env<E: Event>(key: Uuid, event: &E) -> Envelope {
    catalog::envelope("taskkeeper", &key.to_string(), event)
}

fn created_v1(task: Uuid, title: &str, assignee: Uuid) -> Envelope {
    env(
        task,
        &tasks_pb::TaskCreatedV1 {
            task_id: task.to_string(),
            public_id: "7".into(),
            title: title.into(),
            description: "legacy".into(),
            assignee_id: assignee.to_string(),
            status: "open".into(),
            sequence: 1,
        },
    )
}

fn created_v2(task: Uuid, title: &str, jira_id: &str, assignee: Uuid) -> Envelope {
    env(
        task,
        &tasks_pb::TaskCreated {
            task_id: task.to_string(),
            public_id: "8".into(),
            title: title.into(),
            jira_id: jira_id.into(),
            description: "fresh".into(),
            assignee_id: assignee.to_string(),
            status: "open".into(),
            sequence: 1,
        },
    )
}

fn assigned(task: Uuid, title: &str, jira_id: &str, assignee: Uuid, sequence: i64) -> Envelope {
    env(
        task,
        &tasks_pb::TaskAssigned {
            task_id: task.to_string(),
            public_id: "8".into(),
            title: title.into(),
            jira_id: jira_id.into(),
            description: "fresh".into(),
            assignee_id: assignee.to_string(),
            status: "open".into(),
            sequence,
        },
    )
}

fn completed(task: Uuid, title: &str, jira_id: &str, assignee: Uuid, sequence: i64) -> Envelope {
    env(
        task,
        &tasks_pb::TaskCompleted {
            task_id: task.to_string(),
            public_id: "8".into(),
            title: title.into(),
            jira_id: jira_id.into(),
            description: "fresh".into(),
            assignee_id: assignee.to_string(),
            status: "done".into(),
            sequence,
        },
    )
}

fn chunk(moves: &[(Uuid, Uuid, i64)]) -> Envelope {
    let id = Uuid::now_v7();
    env(
        id,
        &tasks_pb::ReassignChunk {
            reassign_id: id.to_string(),
            chunk_index: 0,
            chunk_count: 1,
            tasks: moves
                .iter()
                .map(|(task, assignee, sequence)| tasks_pb::ReassignedTask {
                    task_id: task.to_string(),
                    assignee_id: assignee.to_string(),
                    sequence: *sequence,
                })
                .collect(),
        },
    )
}

fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn field<T>(r: Result<tonic::Response<T>, tonic::Status>, name: &str) {
    let Err(status) = r else {
        panic!("expected INVALID_ARGUMENT on {name}")
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{name}:")),
        "{status:?}"
    );
}

fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

// ---------------------------------------------------------------------------------------
// Tests.

/// A whole day through the real mesh: tasks created, completed and reassigned in
/// TaskKeeper reach the ledger over the buses; balances, audit log, management earnings
/// and analytics match figures computed by hand from the prices; the day close pays the
/// positive balance (mail received with the amount), carries the negative one, and
/// closes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_day_by_hand() {
    let smtp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = smtp.local_addr().unwrap().port();
    let sink = Sink::start(smtp);
    let w = spawn_world(Options {
        mesh: true,
        smtp_port: port,
        scheduler: None,
    })
    .await;

    // Morning: only w1 can take tasks; w1 gets and completes two.
    let w1 = w.user("worker1", account_pb::Role::Worker).await;
    w.assignable_in_taskkeeper(w1.id, true).await;
    let t1 = w.create_task(&w1.token, "Feed the parrots", "POP-1").await;
    let t2 = w.create_task(&w1.token, "Clean the cage", "POP-2").await;
    assert_eq!(t1.assignee_id, w1.id.to_string());
    assert_eq!(t2.assignee_id, w1.id.to_string());
    w.complete(&w1.token, &t1.id).await;
    w.complete(&w1.token, &t2.id).await;

    // Noon: w1 leaves; w2 arrives, gets a task, and a manager reassigns it (to w2 again,
    // the only assignable user): two fees for w2, none done.
    AccountServiceClient::new(w.account.clone().unwrap())
        .delete_account(with_token(
            &w.admin,
            account_pb::DeleteAccountRequest {
                id: w1.id.to_string(),
            },
        ))
        .await
        .unwrap();
    w.assignable_in_taskkeeper(w1.id, false).await;
    let w2 = w.user("worker2", account_pb::Role::Worker).await;
    w.assignable_in_taskkeeper(w2.id, true).await;
    let t3 = w.create_task(&w2.token, "Count the seeds", "").await;
    assert_eq!(t3.assignee_id, w2.id.to_string());
    let manager = w.user("boss", account_pb::Role::Manager).await;
    let moved = w
        .tasks()
        .reassign_open_tasks(with_token(
            &manager.token,
            tasks_pb::ReassignOpenTasksRequest {},
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.reassigned, 1);

    popug_testkit::eventually(WAIT, "six ledger entries", || async {
        (w.entry_count().await == 6).then_some(())
    })
    .await;
    let (f1, r1) = w.prices(&t1.id).await;
    let (f2, r2) = w.prices(&t2.id).await;
    let (f3, _) = w.prices(&t3.id).await;
    let w1_expected = r1 + r2 - f1 - f2;
    let w2_expected = -2 * f3;

    // Balances: own, and anyone's for an admin.
    let balance = |token: String, user: String| {
        let mut client = w.accounting();
        async move {
            client
                .get_balance(with_token(&token, pb::GetBalanceRequest { user_id: user }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let b1 = balance(w.admin.clone(), w1.id.to_string()).await;
    assert_eq!(b1.balance_cents, w1_expected);
    let b2 = balance(w2.token.clone(), String::new()).await;
    assert_eq!(b2.balance_cents, w2_expected);
    assert_eq!(b2.user_id, w2.id.to_string());
    let today = b2.billing_day.clone();

    // The audit log of w2 for today: two fees for "Count the seeds".
    let log = w
        .accounting()
        .list_entries(with_token(&w2.token, pb::ListEntriesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.entries.len(), 2);
    for e in &log.entries {
        assert_eq!(e.kind, pb::EntryKind::AssignFee as i32);
        assert_eq!(e.amount_cents, -f3);
        assert_eq!(e.title, "Count the seeds");
        assert_eq!(e.task_id, t3.id);
        assert_eq!(e.billing_day, today);
    }
    // w1's log, paged by one: fee, fee, reward, reward with their Jira ids.
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = w
            .accounting()
            .list_entries(with_token(
                &w.admin,
                pb::ListEntriesRequest {
                    user_id: w1.id.to_string(),
                    billing_day: today.clone(),
                    page_size: 1,
                    page_token: token.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut summary: Vec<(i32, i64, String)> = seen
        .iter()
        .map(|e| (e.kind, e.amount_cents, e.jira_id.clone()))
        .collect();
    summary.sort();
    let mut expected = vec![
        (pb::EntryKind::AssignFee as i32, -f1, "POP-1".to_owned()),
        (pb::EntryKind::AssignFee as i32, -f2, "POP-2".to_owned()),
        (
            pb::EntryKind::CompletionReward as i32,
            r1,
            "POP-1".to_owned(),
        ),
        (
            pb::EntryKind::CompletionReward as i32,
            r2,
            "POP-2".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(summary, expected);

    // Management earnings: fees collected minus rewards paid.
    let earned = f1 + f2 + 2 * f3 - r1 - r2;
    let earnings = w
        .accounting()
        .get_management_earnings(with_token(
            &w.admin,
            pb::GetManagementEarningsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let now = earnings.today.unwrap();
    assert_eq!(now.earnings_cents, earned);
    assert_eq!(now.fees_cents, f1 + f2 + 2 * f3);
    assert_eq!(now.rewards_cents, r1 + r2);
    assert_eq!(earnings.days.len(), 1);

    // Analytics: the dashboard and the most expensive task of the day, week and month.
    let dashboard = w
        .analytics()
        .get_dashboard(with_token(&w.admin, analytics_pb::GetDashboardRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dashboard.management_earnings_cents, earned);
    assert_eq!(dashboard.negative_balance_popugs, 1);
    assert_eq!(dashboard.billing_day, today);
    let (top_task, top_reward) = if r2 > r1 { (&t2, r2) } else { (&t1, r1) };
    for period in [
        analytics_pb::Period::Day,
        analytics_pb::Period::Week,
        analytics_pb::Period::Month,
    ] {
        let top = w
            .analytics()
            .get_most_expensive_task(with_token(
                &w.admin,
                analytics_pb::GetMostExpensiveTaskRequest {
                    period: period as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(top.reward_cents, top_reward, "{period:?}");
        assert_eq!(top.task_id, top_task.id, "{period:?}");
        assert_eq!(top.title, top_task.title);
        assert_eq!(top.assignee_id, w1.id.to_string());
    }
    let none = w
        .analytics()
        .get_most_expensive_task(with_token(
            &w.admin,
            analytics_pb::GetMostExpensiveTaskRequest {
                period: analytics_pb::Period::Custom as i32,
                from_day: "2020-01-01".into(),
                to_day: "2020-01-31".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none.task.is_none());
    w.assert_invariants().await;

    // Evening: the admin closes the day.
    let closed = w
        .accounting()
        .close_day(with_token(&w.admin, pb::CloseDayRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(closed.closed_now);
    assert_eq!(closed.billing_day, today);
    assert!(
        w1_expected > 0,
        "rewards never fall below fees: {w1_expected}"
    );
    assert_eq!(closed.payouts, 1);
    assert_eq!(closed.paid_cents, w1_expected);
    assert_eq!(w.db_balance(w1.id).await, 0);
    assert_eq!(
        w.db_balance(w2.id).await,
        w2_expected,
        "negative carried over"
    );

    // The mail reaches w1 with the amount, once; the payout shows it as sent.
    let mail = popug_testkit::eventually(WAIT, "the payout mail", || async {
        sink.messages().into_iter().next()
    })
    .await;
    assert!(mail.contains(&w1.email), "{mail}");
    assert!(mail.contains(&dollars(w1_expected)), "{mail}");
    popug_testkit::eventually(WAIT, "payout marked sent", || async {
        let payouts = w
            .accounting()
            .list_payouts(with_token(
                &w.admin,
                pb::ListPayoutsRequest {
                    user_id: w1.id.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .payouts;
        (payouts.len() == 1
            && payouts[0].mail_status == pb::MailStatus::Sent as i32
            && payouts[0].amount_cents == w1_expected)
            .then_some(())
    })
    .await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(
        balance(w1.token.clone(), String::new()).await.balance_cents,
        0
    );

    // Closing the same day again does nothing.
    let again = w
        .accounting()
        .close_day(with_token(
            &w.admin,
            pb::CloseDayRequest {
                billing_day: today.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.closed_now);
    assert_eq!(again.paid_cents, w1_expected);
    w.assert_invariants().await;

    // The accounting bus carries what happened.
    popug_testkit::eventually(WAIT, "accounting events", || async {
        let applied = w.accounting_events("accounting.entry_applied").await.len();
        let closed = w.accounting_events("accounting.day_closed").await.len();
        let sent = w.accounting_events("accounting.payout_sent").await.len();
        (applied == 7 && closed == 1 && sent == 1).then_some(())
    })
    .await;
}

/// Every role against every RPC (REQUIREMENTS §2), missing tokens and bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_per_role_and_bad_input() {
    let w = spawn_world(Options {
        mesh: true,
        smtp_port: free_port().await,
        scheduler: None,
    })
    .await;
    let worker = w.user("worker", account_pb::Role::Worker).await;
    let accountant = w.user("counter", account_pb::Role::Accountant).await;
    let manager = w.user("boss", account_pb::Role::Manager).await;
    let admin = w.admin.clone();
    let other = worker.id.to_string();

    let balance = |token: &str, user: &str| {
        let mut c = w.accounting();
        let req = with_token(
            token,
            pb::GetBalanceRequest {
                user_id: user.into(),
            },
        );
        async move { code(c.get_balance(req).await) }
    };
    let entries = |token: &str, user: &str| {
        let mut c = w.accounting();
        let req = with_token(
            token,
            pb::ListEntriesRequest {
                user_id: user.into(),
                ..Default::default()
            },
        );
        async move { code(c.list_entries(req).await) }
    };
    let payouts = |token: &str, user: &str| {
        let mut c = w.accounting();
        let req = with_token(
            token,
            pb::ListPayoutsRequest {
                user_id: user.into(),
                ..Default::default()
            },
        );
        async move { code(c.list_payouts(req).await) }
    };
    let earnings = |token: &str| {
        let mut c = w.accounting();
        let req = with_token(token, pb::GetManagementEarningsRequest::default());
        async move { code(c.get_management_earnings(req).await) }
    };
    let dashboard = |token: &str| {
        let mut c = w.analytics();
        let req = with_token(token, analytics_pb::GetDashboardRequest {});
        async move { code(c.get_dashboard(req).await) }
    };
    let expensive = |token: &str| {
        let mut c = w.analytics();
        let req = with_token(
            token,
            analytics_pb::GetMostExpensiveTaskRequest {
                period: analytics_pb::Period::Day as i32,
                ..Default::default()
            },
        );
        async move { code(c.get_most_expensive_task(req).await) }
    };
    let close_future = |token: &str| {
        let mut c = w.accounting();
        // A day far ahead: allowed callers get FAILED_PRECONDITION, nothing is closed.
        let req = with_token(
            token,
            pb::CloseDayRequest {
                billing_day: "2999-01-01".into(),
            },
        );
        async move { code(c.close_day(req).await) }
    };

    use Code::{FailedPrecondition as Fp, Ok as Yes, PermissionDenied as No};
    // (token, own, other's, earnings, analytics, close)
    let table = [
        (&worker.token, Yes, No, No, No, No),
        (&accountant.token, Yes, Yes, Yes, No, No),
        (&manager.token, Yes, No, No, No, No),
        (&admin, Yes, Yes, Yes, Yes, Fp),
    ];
    for (i, (token, own, others, earn, analytics, close)) in table.into_iter().enumerate() {
        assert_eq!(balance(token, "").await, own, "row {i} own balance");
        assert_eq!(entries(token, "").await, own, "row {i} own entries");
        assert_eq!(payouts(token, "").await, own, "row {i} own payouts");
        let other_expected = if i == 0 { Yes } else { others }; // the worker asks about themselves
        assert_eq!(
            balance(token, &other).await,
            other_expected,
            "row {i} other's balance"
        );
        assert_eq!(
            entries(token, &other).await,
            other_expected,
            "row {i} other's entries"
        );
        assert_eq!(
            payouts(token, &other).await,
            other_expected,
            "row {i} other's payouts"
        );
        assert_eq!(earnings(token).await, earn, "row {i} earnings");
        assert_eq!(dashboard(token).await, analytics, "row {i} dashboard");
        assert_eq!(expensive(token).await, analytics, "row {i} most expensive");
        assert_eq!(close_future(token).await, close, "row {i} close");
    }
    // The worker asking about the accountant is refused.
    assert_eq!(balance(&worker.token, &accountant.id.to_string()).await, No);

    // No token, a forged token.
    let status = w
        .accounting()
        .get_balance(Request::new(pb::GetBalanceRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(balance("not-a-token", "").await, Code::Unauthenticated);

    // Bad input names its field.
    field(
        w.accounting()
            .get_balance(with_token(
                &admin,
                pb::GetBalanceRequest {
                    user_id: "x".into(),
                },
            ))
            .await,
        "user_id",
    );
    field(
        w.accounting()
            .list_entries(with_token(
                &admin,
                pb::ListEntriesRequest {
                    billing_day: "03.03.2026".into(),
                    ..Default::default()
                },
            ))
            .await,
        "billing_day",
    );
    field(
        w.accounting()
            .list_entries(with_token(
                &admin,
                pb::ListEntriesRequest {
                    page_size: 1000,
                    ..Default::default()
                },
            ))
            .await,
        "page_size",
    );
    field(
        w.accounting()
            .get_management_earnings(with_token(
                &admin,
                pb::GetManagementEarningsRequest {
                    from_day: "2026-03-05".into(),
                    to_day: "2026-03-01".into(),
                },
            ))
            .await,
        "to_day",
    );
    field(
        w.analytics()
            .get_most_expensive_task(with_token(
                &admin,
                analytics_pb::GetMostExpensiveTaskRequest::default(),
            ))
            .await,
        "period",
    );
    field(
        w.analytics()
            .get_most_expensive_task(with_token(
                &admin,
                analytics_pb::GetMostExpensiveTaskRequest {
                    period: analytics_pb::Period::Custom as i32,
                    from_day: "2026-03-01".into(),
                    ..Default::default()
                },
            ))
            .await,
        "to_day",
    );
}

/// Every event delivered twice gives one entry; out-of-order arrivals (a reassign before
/// the creation, a completion before the reassign chunk, a task before its user) lose,
/// double and misattribute nothing; one price per task; v1 and v2 both read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_and_out_of_order_keep_the_ledger_exact() {
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: free_port().await,
        scheduler: None,
    })
    .await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    // Task X: the reassign to A (seq 2) arrives before X's creation (v1) and its
    // assignment to B (seq 1).
    let x = Uuid::now_v7();
    let early_chunk = chunk(&[(x, a, 2)]);
    w.deliver(&early_chunk).await.unwrap();
    let rows = w.rows().await;
    assert_eq!(rows.len(), 1);
    assert!(
        !rows[0].text_known,
        "a placeholder until the creation arrives"
    );
    assert_eq!(rows[0].user_id, a);
    let x_created = created_v1(x, "[POP-7] - Legacy task", b);
    let x_assigned = assigned(x, "Legacy task", "POP-7", b, 1);
    for e in [&x_created, &x_assigned] {
        w.deliver(e).await.unwrap();
    }
    // Task Y: created and assigned to B, completed by A (seq 3) before the chunk that
    // gave it to A (seq 2).
    let y = Uuid::now_v7();
    let y_events = [
        created_v2(y, "Modern task", "POP-8", b),
        assigned(y, "Modern task", "POP-8", b, 1),
        completed(y, "Modern task", "POP-8", a, 3),
        chunk(&[(y, a, 2)]),
    ];
    for e in &y_events {
        w.deliver(e).await.unwrap();
    }

    // Everything once more, in another order: nothing changes.
    let before = w.rows().await;
    for e in y_events
        .iter()
        .rev()
        .chain([&x_assigned, &x_created, &early_chunk])
    {
        w.deliver(e).await.unwrap();
    }
    let rows = w.rows().await;
    assert_eq!(rows, before, "a redelivery added or changed an entry");

    let (fx, _) = w.prices(&x.to_string()).await;
    let (fy, ry) = w.prices(&y.to_string()).await;
    let mut summary: Vec<(Uuid, &str, i64, Uuid)> = rows
        .iter()
        .map(|r| (r.user_id, r.kind.as_str(), r.amount, r.task_id.unwrap()))
        .collect();
    summary.sort();
    let mut expected = vec![
        (a, "assign_fee", -fx, x),
        (b, "assign_fee", -fx, x),
        (b, "assign_fee", -fy, y),
        (a, "completion_reward", ry, y),
        (a, "assign_fee", -fy, y),
    ];
    expected.sort();
    assert_eq!(summary, expected);
    // The placeholder got X's text from the v1 title, split.
    for r in rows.iter().filter(|r| r.task_id == Some(x)) {
        assert!(r.text_known);
        assert_eq!(
            (r.jira_id.as_str(), r.title.as_str()),
            ("POP-7", "Legacy task")
        );
    }
    // The newest assignment wins whatever the order: Y is A's (seq 3), X is A's (seq 2).
    let owners: Vec<(Uuid, Option<Uuid>, i64, bool)> =
        sqlx::query_as("SELECT id, assignee_id, sequence, completed FROM tasks ORDER BY id")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    assert_eq!(owners, vec![(x, Some(a), 2, false), (y, Some(a), 3, true)]);
    assert_eq!(w.db_balance(a).await, -fx + ry - fy);
    assert_eq!(w.db_balance(b).await, -fx - fy);
    w.assert_invariants().await;

    // Through the real consumers, across buses: a reassign applied before the task's
    // creation and assignment arrive; the placeholder is filled, both fees stand.
    let v = Uuid::now_v7();
    let early = chunk(&[(v, a, 2)]);
    w.js.publish(
        w.topology.subject(&early.name),
        early.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    popug_testkit::eventually(WAIT, "the early chunk applied", || async {
        (w.entry_count().await == 6).then_some(())
    })
    .await;
    for e in [
        created_v2(v, "Late news", "POP-9", b),
        assigned(v, "Late news", "POP-9", b, 1),
    ] {
        w.js.publish(w.topology.subject(&e.name), e.encode_to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    popug_testkit::eventually(WAIT, "the creation applied", || async {
        let rows = w.rows().await;
        let v_rows: Vec<&Row> = rows.iter().filter(|r| r.task_id == Some(v)).collect();
        (v_rows.len() == 2
            && v_rows
                .iter()
                .all(|r| r.text_known && r.title == "Late news"))
        .then_some(())
    })
    .await;
    let (fv, _) = w.prices(&v.to_string()).await;
    assert_eq!(w.db_balance(a).await, -fx + ry - fy - fv);
    assert_eq!(w.db_balance(b).await, -fx - fy - fv);

    // Through the bus: the same event published twice (different message ids) is
    // applied once by the consumer.
    let z = Uuid::now_v7();
    let z_assigned = assigned(z, "Bus task", "", b, 1);
    for _ in 0..2 {
        w.js.publish(
            w.topology.subject(&z_assigned.name),
            z_assigned.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let marker = assigned(Uuid::now_v7(), "Marker", "", b, 1);
    w.js.publish(
        w.topology.subject(&marker.name),
        marker.encode_to_vec().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    popug_testkit::eventually(WAIT, "the marker applied", || async {
        (w.entry_count().await == 9).then_some(())
    })
    .await;
    let z_entries = w
        .rows()
        .await
        .iter()
        .filter(|r| r.task_id == Some(z))
        .count();
    assert_eq!(z_entries, 1);
    w.assert_invariants().await;
}

/// A whole consumer batch booked at once (the set-based path) ends exactly where the
/// same events applied one by one in that order would: a reassign before the task's
/// creation, a completion before the reassign that precedes it, a completion older than
/// a later reassign (it is paid but does not mark the task completed), duplicates; and
/// each `entry_applied` carries the balance right after its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_books_like_one_event_after_another() {
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: free_port().await,
        scheduler: None,
    })
    .await;
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    let early = chunk(&[(x, a, 2), (y, a, 2)]);
    let batch = vec![
        early.clone(),
        completed(x, "Batch X", "POP-20", a, 3),
        created_v2(x, "Batch X", "POP-20", b),
        assigned(x, "Batch X", "POP-20", b, 1),
        created_v1(y, "[POP-21] - Batch Y", b),
        assigned(y, "Batch Y", "POP-21", b, 1),
        chunk(&[(y, c, 4)]),
        completed(y, "Batch Y", "POP-21", a, 3),
        // A duplicate inside the batch adds nothing.
        early,
    ];
    let mut tx = w.pool.begin().await.unwrap();
    w.ledger.handle_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    let before = w.rows().await;
    // Redelivered as a batch, and one by one: nothing changes.
    let mut tx = w.pool.begin().await.unwrap();
    w.ledger.handle_batch(&mut tx, &batch).await.unwrap();
    tx.commit().await.unwrap();
    for e in &batch {
        w.deliver(e).await.unwrap();
    }
    let rows = w.rows().await;
    assert_eq!(rows, before, "a redelivery added or changed an entry");

    let (fx, rx) = w.prices(&x.to_string()).await;
    let (fy, ry) = w.prices(&y.to_string()).await;
    let mut summary: Vec<(Uuid, &str, i64, Uuid)> = rows
        .iter()
        .map(|r| (r.user_id, r.kind.as_str(), r.amount, r.task_id.unwrap()))
        .collect();
    summary.sort();
    let mut expected = vec![
        (a, "assign_fee", -fx, x),
        (a, "completion_reward", rx, x),
        (b, "assign_fee", -fx, x),
        (a, "assign_fee", -fy, y),
        (b, "assign_fee", -fy, y),
        (c, "assign_fee", -fy, y),
        (a, "completion_reward", ry, y),
    ];
    expected.sort();
    assert_eq!(summary, expected);
    for r in &rows {
        let text = if r.task_id == Some(x) {
            ("POP-20", "Batch X")
        } else {
            ("POP-21", "Batch Y")
        };
        assert!(r.text_known, "placeholder left: {r:?}");
        assert_eq!((r.jira_id.as_str(), r.title.as_str()), text);
    }
    let mut owners: Vec<(Uuid, Option<Uuid>, i64, bool)> =
        sqlx::query_as("SELECT id, assignee_id, sequence, completed FROM tasks")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    owners.sort();
    let mut expected = vec![(x, Some(a), 3, true), (y, Some(c), 4, false)];
    expected.sort();
    assert_eq!(owners, expected);
    assert_eq!(w.db_balance(a).await, -fx + rx - fy + ry);
    assert_eq!(w.db_balance(b).await, -fx - fy);
    assert_eq!(w.db_balance(c).await, -fy);
    w.assert_invariants().await;

    // One entry_applied per entry, each with the balance right after it.
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT envelope FROM eventbus.outbox")
        .fetch_all(&w.pool)
        .await
        .unwrap();
    let mut applied: Vec<pb::EntryApplied> = bodies
        .iter()
        .map(|b| Envelope::decode(b.as_slice()).unwrap())
        .filter(|e| e.name == "accounting.entry_applied")
        .map(|e| pb::EntryApplied::decode(e.payload.as_ref()).unwrap())
        .collect();
    applied.sort_by_key(|e| e.entry_id.parse::<i64>().unwrap());
    assert_eq!(applied.len(), rows.len());
    for user in [a, b, c] {
        let mut running = 0;
        for e in applied.iter().filter(|e| e.user_id == user.to_string()) {
            running += e.amount_cents;
            assert_eq!(
                e.balance_cents, running,
                "balance after entry {}",
                e.entry_id
            );
        }
        assert_eq!(running, w.db_balance(user).await);
    }
}

/// What can never be applied goes to the dead-letter stream with its reason, and the
/// consumer carries on with the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_dead_letters() {
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: free_port().await,
        scheduler: None,
    })
    .await;
    let task = Uuid::now_v7();
    let mut unknown_version = created_v2(task, "Future", "", Uuid::now_v7());
    unknown_version.version = 99;
    let mut bad_payload = assigned(task, "x", "", Uuid::now_v7(), 1);
    bad_payload.payload = vec![0xff, 0xff, 0xff].into();
    let mut bad_ids = assigned(task, "x", "", Uuid::now_v7(), 1);
    bad_ids.payload = tasks_pb::TaskAssigned {
        task_id: "not-a-uuid".into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into();
    let subject = w.topology.subject("task.assigned");
    for body in [
        unknown_version.encode_to_vec(),
        bad_payload.encode_to_vec(),
        bad_ids.encode_to_vec(),
        b"not an envelope at all".to_vec(),
    ] {
        w.js.publish(subject.clone(), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let good = assigned(task, "Good", "", Uuid::now_v7(), 1);
    w.js.publish(subject.clone(), good.encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    popug_testkit::eventually(WAIT, "the good event applied", || async {
        (w.entry_count().await == 1).then_some(())
    })
    .await;
    let letters: Vec<DeadLetter> = popug_testkit::eventually(WAIT, "four dead letters", || async {
        let letters: Vec<DeadLetter> = w
            .stream(Bus::DeadLetter)
            .await
            .iter()
            .map(|m| DeadLetter::decode(m.payload.as_ref()).unwrap())
            .collect();
        (letters.len() == 4).then_some(letters)
    })
    .await;
    assert!(letters.iter().all(|l| l.consumer == "accounting-tasks"));
    assert!(letters.iter().all(|l| !l.reason.is_empty()));
    // Two task consumers share the durable consumer, so the letters come in any order.
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    for expected in [
        "v99",
        "payload undecodable",
        "not-a-uuid",
        "undecodable envelope",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says {expected:?}: {reasons:?}"
        );
    }
    // Also refused when handed to the handler directly.
    assert!(matches!(
        w.deliver(&unknown_version).await,
        Err(HandleError::Permanent(_))
    ));
    w.assert_invariants().await;
}

/// Two replicas closing the same day at once: one closes it, the other finds it closed;
/// each positive balance is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_day_closes_close_once() {
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: free_port().await,
        scheduler: None,
    })
    .await;
    let users: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for (i, user) in users.iter().enumerate() {
        let task = Uuid::now_v7();
        w.deliver(&assigned(task, "t", "", *user, 1)).await.unwrap();
        if i % 2 == 0 {
            w.deliver(&completed(task, "t", "", *user, 2))
                .await
                .unwrap();
        }
    }
    let positive: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE balance > 0")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    let owed: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(balance), 0)::bigint FROM balances WHERE balance > 0",
    )
    .fetch_one(&w.pool)
    .await
    .unwrap();
    // A second replica: its own pool on the same database.
    let other = Accounting {
        pool: sqlx::PgPool::connect(&w.database_url).await.unwrap(),
        outbox: w.service.outbox.clone(),
        cutoff: Duration::ZERO,
    };
    let (one, two) = tokio::join!(w.service.close_day(None), other.close_day(None));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.day, two.day);
    assert!(one.closed_now ^ two.closed_now, "exactly one close");
    let winner = if one.closed_now { &one } else { &two };
    assert_eq!(winner.payouts, positive);
    assert_eq!(winner.paid_cents, owed);
    let payouts: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE kind = 'payout'")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(payouts, positive);
    let closed_days: i64 = sqlx::query_scalar("SELECT count(*) FROM billing_days")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(closed_days, 1);
    let negative: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE balance < 0")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(negative, 10, "negative balances carried over");
    // Entries after the close go to the next billing day.
    let late = Uuid::now_v7();
    w.deliver(&assigned(late, "late", "", users[0], 1))
        .await
        .unwrap();
    let day: time::Date = sqlx::query_scalar("SELECT billing_day FROM entries WHERE task_id = $1")
        .bind(late)
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert!(day > one.day);
    w.assert_invariants().await;
}

/// A day close racing the consumers: every entry lands either before the close (and
/// is paid out with it) or in the next billing day, never lost between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_close_racing_the_consumers_loses_nothing() {
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: free_port().await,
        scheduler: None,
    })
    .await;
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let feed = |offset: usize| {
        let users = users.clone();
        let w = &w;
        async move {
            for i in 0..40 {
                let user = users[(i + offset) % users.len()];
                let task = Uuid::now_v7();
                w.deliver(&assigned(task, "t", "", user, 1)).await.unwrap();
                w.deliver(&completed(task, "t", "", user, 2)).await.unwrap();
            }
        }
    };
    let close = async {
        // Close while the feeders are mid-way.
        popug_testkit::eventually(WAIT, "some entries", || async {
            (w.entry_count().await >= 40).then_some(())
        })
        .await;
        w.service.close_day(None).await.unwrap()
    };
    let ((), (), closed) = tokio::join!(feed(0), feed(3), close);
    assert!(closed.closed_now);
    let day = closed.day;
    // Nothing positive is left in the closed day, and each payout is exactly what its
    // user earned up to the close.
    let per_user: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id,
                COALESCE(sum(amount) FILTER (WHERE kind <> 'payout'), 0)::bigint,
                COALESCE(-sum(amount) FILTER (WHERE kind = 'payout'), 0)::bigint
         FROM entries WHERE billing_day <= $1 GROUP BY user_id",
    )
    .bind(day)
    .fetch_all(&w.pool)
    .await
    .unwrap();
    let mut paid_total = 0;
    for (user, earned, paid) in &per_user {
        if *earned > 0 {
            assert_eq!(paid, earned, "{user}");
        } else {
            assert_eq!(*paid, 0, "{user}");
        }
        paid_total += paid;
    }
    assert_eq!(paid_total, closed.paid_cents);
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE kind <> 'payout'")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(total, 2 * 2 * 40);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE billing_day > $1")
        .bind(day)
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert!(
        after > 0 && after < total,
        "the close fell mid-way: {after}"
    );
    w.assert_invariants().await;
}

/// The automatic close at the cutoff: a billing day left open past its end is closed by
/// the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_closes_a_past_day() {
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: free_port().await,
        scheduler: Some(Duration::from_millis(100)),
    })
    .await;
    let user = Uuid::now_v7();
    let task = Uuid::now_v7();
    w.deliver(&assigned(task, "t", "", user, 1)).await.unwrap();
    w.deliver(&completed(task, "t", "", user, 2)).await.unwrap();
    let owed = w.db_balance(user).await;
    // Pretend yesterday is still open, as after a night without any replica running.
    sqlx::query("UPDATE billing_state SET open_day = open_day - 1")
        .execute(&w.pool)
        .await
        .unwrap();
    let yesterday: time::Date = sqlx::query_scalar("SELECT open_day FROM billing_state")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    let paid: i64 = popug_testkit::eventually(WAIT, "the scheduled close", || async {
        sqlx::query_scalar("SELECT paid_cents FROM billing_days WHERE day = $1")
            .bind(yesterday)
            .fetch_optional(&w.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(paid, owed);
    assert_eq!(w.db_balance(user).await, 0);
    // Today stays open.
    let open: time::Date = sqlx::query_scalar("SELECT open_day FROM billing_state")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(open, yesterday.next_day().unwrap());
    w.assert_invariants().await;
}

/// SMTP down: the mails fail and are retried with backoff; SMTP up: each is delivered,
/// exactly once, and stays sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_down_then_up_sends_each_mail_once() {
    let port = free_port().await;
    let w = spawn_world(Options {
        mesh: false,
        smtp_port: port,
        scheduler: None,
    })
    .await;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, user) in users.iter().enumerate() {
        w.known_user(*user, &format!("popug{i}@test.example")).await;
        let task = Uuid::now_v7();
        w.deliver(&assigned(task, "t", "", *user, 1)).await.unwrap();
        w.deliver(&completed(task, "t", "", *user, 2))
            .await
            .unwrap();
    }
    // A payout to a user Accounting has not heard of yet waits for their address.
    let stranger = Uuid::now_v7();
    let task = Uuid::now_v7();
    w.deliver(&assigned(task, "t", "", stranger, 1))
        .await
        .unwrap();
    w.deliver(&completed(task, "t", "", stranger, 2))
        .await
        .unwrap();

    let closed = w.service.close_day(None).await.unwrap();
    assert_eq!(closed.payouts, 4);
    popug_testkit::eventually(WAIT, "failed attempts while SMTP is down", || async {
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payout_mails WHERE status = 'failed' AND attempts >= 2",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
        (failed == 3).then_some(())
    })
    .await;

    let sink = Sink::start(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    popug_testkit::eventually(WAIT, "three mails sent", || async {
        let sent: i64 =
            sqlx::query_scalar("SELECT count(*) FROM payout_mails WHERE status = 'sent'")
                .fetch_one(&w.pool)
                .await
                .unwrap();
        (sent == 3).then_some(())
    })
    .await;
    // The stranger arrives: their mail goes too.
    w.known_user(stranger, "stranger@test.example").await;
    popug_testkit::eventually(WAIT, "four mails sent", || async {
        (sink.messages().len() == 4).then_some(())
    })
    .await;
    // More mailer rounds — a second mailer, as another replica would run — send nothing
    // again.
    let before = w.accounting_events("accounting.payout_sent").await.len();
    let opts = Options {
        mesh: false,
        smtp_port: port,
        scheduler: None,
    };
    let replica = accounting::mailer::Mailer::new(
        w.pool.clone(),
        popug_eventbus::Outbox::new(w.topology.clone(), "accounting"),
        &settings(
            w.database_url.clone(),
            w.topology.prefix(),
            String::new(),
            &opts,
        ),
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(replica.round().await.unwrap(), 0, "nothing left to send");
    }
    let messages = sink.messages();
    assert_eq!(messages.len(), 4);
    for (i, _) in users.iter().enumerate() {
        let to = format!("popug{i}@test.example");
        assert_eq!(
            messages.iter().filter(|m| m.contains(&to)).count(),
            1,
            "{to}"
        );
    }
    let amounts: Vec<(i64, String)> =
        sqlx::query_as("SELECT amount_cents, status FROM payout_mails ORDER BY entry_id")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    for (amount, status) in &amounts {
        assert_eq!(status, "sent");
        assert!(messages.iter().any(|m| m.contains(&dollars(*amount))));
    }
    assert!(before <= 4);
    popug_testkit::eventually(WAIT, "payout_sent events", || async {
        (w.accounting_events("accounting.payout_sent").await.len() == 4).then_some(())
    })
    .await;
    w.assert_invariants().await;
}
