//! Accounting's ledger against real PostgreSQL, NATS and an SMTP sink. The full-mesh tests
//! run a real TaskKeeper beside Accounting (and Account, which every mesh runs), so every
//! fee and reward arrives over the real buses; the ledger tests deliver hand-made events
//! to the handler, twice and out of order.
//!
//! - [`full_day`] — a whole day by hand through the mesh: balances, audit log, earnings,
//!   analytics, the day close and its mail
//! - [`access`] — who may see what, missing tokens and bad input
//! - [`events`] — redelivery, out-of-order arrivals, batch booking, dead letters,
//!   re-emitted events under new ids
//! - [`dead_letters`] — `accounting dead-letters list|show|replay`: a version learnt
//!   after the fact, replayed and booked once
//! - [`day_close`] — concurrent closes, a close racing the consumers, the scheduler
//! - [`mail`] — payout mails with SMTP down, then up
//! - [`inputs`] — days outside the range, long CUSTOM spans, unknown users
//!
//! Test SQL against Accounting's tables is dynamic (`sqlx::query`), not checked at
//! compile time.

#![allow(clippy::unwrap_used)]

mod access;
mod day_close;
mod dead_letters;
mod events;
mod full_day;
mod inputs;
mod mail;

use accounting::domain::Cents;
use analytics_pb::analytics_service_client::AnalyticsServiceClient;
use pb::accounting_service_client::AccountingServiceClient;
use popug_eventbus::{Bus, Envelope, HandleError, Handler};
use popug_mesh::{Mesh, with_token};
use popug_proto::catalog::Event;
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::accounting::v1 as pb;
use popug_proto::popug::analytics::v1 as analytics_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use prost::Message;
use tonic::transport::Channel;
use uuid::Uuid;

/// Accounting alone (beside Account, which every mesh runs): events are delivered by hand
/// or published on the buses by the test.
async fn ledger_mesh() -> Mesh {
    Mesh::builder().accounting().start().await
}

/// Account, TaskKeeper (reassigning in chunks of two) and Accounting.
fn full_mesh() -> popug_mesh::MeshBuilder {
    Mesh::builder()
        .taskkeeper_with(|s| s.reassign_chunk_size = 2)
        .accounting()
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

const ENTRIES: &str = "SELECT count(*) FROM entries";

/// The ledger's invariants that a query can count the breaches of: (what is broken, the
/// query), each of which must count zero.
const BROKEN: [(&str, &str); 4] = [
    (
        "a balance differs from the sum of its entries",
        "SELECT count(*) FROM balances b
         FULL JOIN (SELECT user_id, sum(amount) AS s FROM entries GROUP BY user_id) e
           USING (user_id)
         WHERE COALESCE(b.balance, 0) <> COALESCE(e.s, 0)",
    ),
    (
        "an entry not at its task's one price",
        "SELECT count(*) FROM entries e JOIN tasks t ON t.id = e.task_id
         WHERE (e.kind = 'assign_fee' AND e.amount <> -t.fee_cents)
            OR (e.kind = 'completion_reward' AND e.amount <> t.reward_cents)",
    ),
    (
        "an entry of a task the ledger does not know",
        "SELECT count(*) FROM entries e WHERE e.task_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = e.task_id)",
    ),
    (
        "a payout without exactly one mail",
        "SELECT count(*) FROM entries e WHERE kind = 'payout'
           AND (SELECT count(*) FROM payout_mails m WHERE m.entry_id = e.id) <> 1",
    ),
];

/// `items`, sorted.
fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

/// What the tests ask of a mesh running Accounting. Test SQL: not checked at compile time.
trait Books {
    fn accounting_client(&self) -> AccountingServiceClient<Channel>;
    fn analytics_client(&self) -> AnalyticsServiceClient<Channel>;
    fn tasks_client(&self) -> tasks_pb::task_service_client::TaskServiceClient<Channel>;
    async fn create_task(&self, token: &str, title: &str, jira_id: &str) -> tasks_pb::Task;
    async fn complete(&self, token: &str, id: &str);
    async fn deliver(&self, envelope: &Envelope) -> Result<(), HandleError>;
    async fn deliver_batch(&self, batch: &[Envelope]) -> Result<(), HandleError>;
    async fn assign_and_complete(&self, user: Uuid);
    async fn publish(&self, envelope: &Envelope);
    async fn known_user(&self, id: Uuid, email: &str);
    async fn rows(&self) -> Vec<Row>;
    async fn owners(&self) -> Vec<(Uuid, Option<Uuid>, i64, bool)>;
    async fn scalar(&self, sql: &str) -> i64;
    async fn entry_count(&self) -> i64;
    async fn wait_for_entries(&self, what: &str, n: i64);
    async fn prices(&self, task: &str) -> (i64, i64);
    async fn db_balance(&self, user: Uuid) -> i64;
    async fn assert_invariants(&self);
    async fn accounting_events(&self, name: &str) -> Vec<Envelope>;
}

impl Books for Mesh {
    fn accounting_client(&self) -> AccountingServiceClient<Channel> {
        AccountingServiceClient::new(self.accounting().channel.clone())
    }

    fn analytics_client(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.accounting().channel.clone())
    }

    fn tasks_client(&self) -> tasks_pb::task_service_client::TaskServiceClient<Channel> {
        tasks_pb::task_service_client::TaskServiceClient::new(self.taskkeeper().channel.clone())
    }

    async fn create_task(&self, token: &str, title: &str, jira_id: &str) -> tasks_pb::Task {
        self.tasks_client()
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
        self.tasks_client()
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
        let node = self.accounting();
        let mut tx = node.pool.begin().await.unwrap();
        node.ledger.handle(&mut tx, envelope).await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    /// Applies `batch` with the ledger's batch handler in one transaction, as the consumer
    /// does with what it fetched at once.
    async fn deliver_batch(&self, batch: &[Envelope]) -> Result<(), HandleError> {
        let node = self.accounting();
        let mut tx = node.pool.begin().await.unwrap();
        node.ledger.handle_batch(&mut tx, batch).await?;
        tx.commit().await.unwrap();
        Ok(())
    }

    /// Delivers a new task assigned to `user` and then completed by them: a fee and a
    /// reward.
    async fn assign_and_complete(&self, user: Uuid) {
        let task = Uuid::now_v7();
        self.deliver(&assigned(task, "t", "", user, 1))
            .await
            .unwrap();
        self.deliver(&completed(task, "t", "", user, 2))
            .await
            .unwrap();
    }

    /// Publishes `envelope` on its bus, for the real consumers.
    async fn publish(&self, envelope: &Envelope) {
        self.js
            .publish(
                self.topology.subject(&envelope.name),
                envelope.encode_to_vec().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
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
        let envelope = popug_eventbus::envelope(
            "account",
            &snapshot.id,
            &account_pb::AccountCreated {
                account: Some(snapshot.clone()),
            },
        );
        let mut tx = self.accounting().pool.begin().await.unwrap();
        popug_service::AccountBus(accounting::events::Users)
            .handle(&mut tx, &envelope)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn rows(&self) -> Vec<Row> {
        sqlx::query_as(
            "SELECT user_id, kind, amount, task_id, title, jira_id, text_known
             FROM entries ORDER BY id",
        )
        .fetch_all(&self.accounting().pool)
        .await
        .unwrap()
    }

    /// Every task the ledger knows, by id: (id, assignee, sequence, completed).
    async fn owners(&self) -> Vec<(Uuid, Option<Uuid>, i64, bool)> {
        sqlx::query_as("SELECT id, assignee_id, sequence, completed FROM tasks ORDER BY id")
            .fetch_all(&self.accounting().pool)
            .await
            .unwrap()
    }

    /// The one number `sql` selects (a count, a sum) from Accounting's database.
    async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.accounting().pool)
            .await
            .unwrap()
    }

    async fn entry_count(&self) -> i64 {
        self.scalar(ENTRIES).await
    }

    /// Waits (as `what`) until the ledger holds exactly `n` entries.
    async fn wait_for_entries(&self, what: &str, n: i64) {
        popug_mesh::wait_for_count(&self.accounting().pool, what, ENTRIES, n).await;
    }

    /// The fee and reward of `task`, in cents.
    async fn prices(&self, task: &str) -> (i64, i64) {
        sqlx::query_as("SELECT fee_cents, reward_cents FROM tasks WHERE id = $1")
            .bind(Uuid::parse_str(task).unwrap())
            .fetch_one(&self.accounting().pool)
            .await
            .unwrap()
    }

    /// The balance as stored (0 for a user the ledger has never booked).
    async fn db_balance(&self, user: Uuid) -> i64 {
        let mut conn = self.accounting().pool.acquire().await.unwrap();
        accounting::store::ledger::balance(&mut conn, user)
            .await
            .unwrap()
            .unwrap_or(Cents::ZERO)
            .get()
    }

    /// The ledger's invariants: each balance is the sum of its user's entries; every
    /// fee and reward traces to exactly one event leg and carries its task's one price;
    /// every payout has exactly one mail.
    async fn assert_invariants(&self) {
        for (broken, sql) in BROKEN {
            assert_eq!(self.scalar(sql).await, 0, "{broken}");
        }
        let (legs, distinct, untraced): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT (event_id, task_id, kind)),
                    count(*) FILTER (WHERE event_id IS NULL OR task_id IS NULL)
             FROM entries WHERE kind <> 'payout'",
        )
        .fetch_one(&self.accounting().pool)
        .await
        .unwrap();
        assert_eq!(legs, distinct, "two entries share an event leg");
        assert_eq!(untraced, 0, "an entry without its event leg");
    }

    /// The accounting bus's events named `name`, so far.
    async fn accounting_events(&self, name: &str) -> Vec<Envelope> {
        self.events(Bus::Accounting)
            .await
            .into_iter()
            .filter(|e| e.name == name)
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Hand-made task events.

fn env<E: Event>(key: Uuid, event: &E) -> Envelope {
    popug_eventbus::envelope("taskkeeper", &key.to_string(), event)
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

/// A task event of type `$event` for `$task`: `TaskCreated` (v2), `TaskAssigned` and
/// `TaskCompleted` carry the same fields.
macro_rules! task_event {
    (
        $event:ident, $task:expr, $title:expr, $jira_id:expr, $assignee:expr, $status:expr,
        $sequence:expr $(,)?
    ) => {
        env(
            $task,
            &tasks_pb::$event {
                task_id: $task.to_string(),
                public_id: "8".into(),
                title: $title.into(),
                jira_id: $jira_id.into(),
                description: "fresh".into(),
                assignee_id: $assignee.to_string(),
                status: $status.into(),
                sequence: $sequence,
            },
        )
    };
}

fn created_v2(task: Uuid, title: &str, jira_id: &str, assignee: Uuid) -> Envelope {
    task_event!(TaskCreated, task, title, jira_id, assignee, "open", 1)
}

fn assigned(task: Uuid, title: &str, jira_id: &str, assignee: Uuid, sequence: i64) -> Envelope {
    task_event!(
        TaskAssigned,
        task,
        title,
        jira_id,
        assignee,
        "open",
        sequence
    )
}

fn completed(task: Uuid, title: &str, jira_id: &str, assignee: Uuid, sequence: i64) -> Envelope {
    task_event!(
        TaskCompleted,
        task,
        title,
        jira_id,
        assignee,
        "done",
        sequence
    )
}

/// A one-chunk reassign moving each (task, assignee, sequence).
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
