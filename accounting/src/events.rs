//! What Accounting consumes and what it publishes.
//!
//! Consumes the account bus into its own `users` (name and e-mail for payout mails) with
//! [`Users`], and the task and reassign buses into the ledger with [`Ledger`]. Publishes,
//! through its outbox in the transaction of the change, `accounting.entry_applied` per
//! entry, `accounting.day_closed` and `accounting.payout_sent`.
//!
//! Out-of-order delivery is normal: whichever event shows a task first draws its prices;
//! an entry written before the task's text arrived gets a placeholder that the text fills
//! later; a fee or reward goes to the user the causing event names, known or not yet.

use std::collections::{BTreeMap, HashSet};

use popug_eventbus::{Envelope, HandleError, Handler, Outbox};
use popug_proto::catalog::{Unreadable, is, open};
use popug_proto::popug::accounting::v1 as pb;
use popug_proto::popug::tasks::v1 as tasks;
use popug_proto::upcast;
use popug_service::{AccountUser, UserCopy};
use sqlx::PgConnection;
use time::Date;
use uuid::Uuid;

use crate::domain::{BillingClock, Cents, EntryKind, Prices, format_day};
use crate::store::ledger::{EntryLeg, EntryRow};
use crate::store::tasks::{SeenTask, TaskText};
use crate::store::{billing, ledger, tasks as task_store, users};

/// Durable consumer names.
pub const USERS_CONSUMER: &str = "accounting-users";
pub const TASKS_CONSUMER: &str = "accounting-tasks";
pub const REASSIGNS_CONSUMER: &str = "accounting-reassigns";

/// Messages per batch transaction of the task consumer: the ledger books a whole batch
/// with a few statements, so bigger batches mean fewer round trips and commits.
pub const TASKS_BATCH: usize = 2_000;
/// Task consumers running side by side on the one durable consumer (each message goes to
/// one of them): the ledger is order-independent and locks tasks and balances in key
/// order, so two batches apply in parallel on two database connections.
pub const TASKS_CONSUMERS: usize = 2;
/// Messages per batch of the reassign consumer: each chunk holds up to a thousand legs,
/// so a batch stays around a few seconds, far inside the consumer's ack wait.
pub const REASSIGNS_BATCH: usize = 20;

/// Producer name on every envelope.
pub const PRODUCER: &str = "accounting";

/// `accounting.entry_applied` for a written entry and the balance after it.
pub fn entry_applied(entry: &EntryRow, balance: Cents) -> pb::EntryApplied {
    pb::EntryApplied {
        entry_id: entry.id.to_string(),
        user_id: entry.user_id.to_string(),
        kind: entry_kind(entry.kind) as i32,
        amount_cents: entry.amount.get(),
        task_id: entry.task_id.map(|t| t.to_string()).unwrap_or_default(),
        billing_day: format_day(entry.billing_day),
        balance_cents: balance.get(),
        created_at: Some(popug_grpc::timestamp(entry.created_at)),
    }
}

/// The wire form of an entry kind (events and the API).
pub fn entry_kind(kind: EntryKind) -> pb::EntryKind {
    match kind {
        EntryKind::AssignFee => pb::EntryKind::AssignFee,
        EntryKind::CompletionReward => pb::EntryKind::CompletionReward,
        EntryKind::Payout => pb::EntryKind::Payout,
    }
}

fn uuid(field: &str, raw: &str) -> Result<Uuid, HandleError> {
    Uuid::parse_str(raw).map_err(|_| HandleError::Permanent(format!("bad {field} {raw:?}")))
}

/// Keeps Accounting's copy of the users (name and e-mail for payout mails).
#[derive(Debug, Clone, Default)]
pub struct Users;

impl UserCopy for Users {
    async fn apply(&self, conn: &mut PgConnection, user: &AccountUser<'_>) -> sqlx::Result<()> {
        users::apply(conn, user).await.map(drop)
    }

    async fn versions(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<(Uuid, i64)>> {
        users::versions(conn).await
    }
}

/// Applies task and reassign events to the ledger. Each entry is keyed by its event leg
/// (event id, task id, kind), so a redelivered event never adds a second one.
///
/// Set-based: the legs of a whole consumer batch (or of one event) are booked with a
/// handful of statements — tasks seen and assignments noted for every task at once (rows
/// locked in id order), entries and balances in one statement (balances locked in user
/// order), their `entry_applied` events in one more — with exactly the effects of booking
/// the legs one by one in delivery order.
#[derive(Clone)]
pub struct Ledger {
    pub outbox: Outbox,
    pub clock: BillingClock,
}

/// Legs booked per round of statements; a consumer batch of reassign chunks is split.
const LEGS_PER_ROUND: usize = 5_000;

/// A task's text, as an event carries it.
#[derive(Debug, Clone)]
struct Text {
    public_id: String,
    jira_id: String,
    title: String,
    description: String,
}

impl Text {
    fn borrow(&self) -> TaskText<'_> {
        TaskText {
            public_id: &self.public_id,
            jira_id: &self.jira_id,
            title: &self.title,
            description: &self.description,
        }
    }
}

/// One assignment or completion to book.
#[derive(Debug, Clone)]
struct Leg {
    event_id: Uuid,
    task_id: Uuid,
    user_id: Uuid,
    sequence: i64,
    text: Option<Text>,
    /// The entry it books; none for a creation (the assignment comes as its own event).
    kind: Option<EntryKind>,
}

/// The one leg of a task event (they all carry the whole task): a macro, as the three
/// messages share their fields but not a type.
macro_rules! task_leg {
    ($event_id:expr, $t:expr, $kind:expr) => {{
        let t = $t;
        Leg {
            event_id: $event_id,
            task_id: uuid("task id", &t.task_id)?,
            user_id: uuid("assignee id", &t.assignee_id)?,
            sequence: t.sequence,
            text: Some(Text {
                public_id: t.public_id,
                jira_id: t.jira_id,
                title: t.title,
                description: t.description,
            }),
            kind: $kind,
        }
    }};
}

/// The legs of one event, or why it can never be applied.
fn legs_of(envelope: &Envelope) -> Result<Vec<Leg>, HandleError> {
    let event_id = uuid("event id", &envelope.event_id)?;
    if envelope.name == "task.created" {
        let created = upcast::task_created(envelope)?;
        Ok(vec![task_leg!(event_id, created, None)])
    } else if is::<tasks::TaskAssigned>(envelope) {
        let assigned = open::<tasks::TaskAssigned>(envelope)?;
        Ok(vec![task_leg!(
            event_id,
            assigned,
            Some(EntryKind::AssignFee)
        )])
    } else if is::<tasks::TaskCompleted>(envelope) {
        let completed = open::<tasks::TaskCompleted>(envelope)?;
        let kind = Some(EntryKind::CompletionReward);
        Ok(vec![task_leg!(event_id, completed, kind)])
    } else if is::<tasks::ReassignChunk>(envelope) {
        let chunk = open::<tasks::ReassignChunk>(envelope)?;
        chunk
            .tasks
            .iter()
            .map(|t| {
                Ok(Leg {
                    event_id,
                    task_id: uuid("task id", &t.task_id)?,
                    user_id: uuid("assignee id", &t.assignee_id)?,
                    sequence: t.sequence,
                    text: None,
                    kind: Some(EntryKind::AssignFee),
                })
            })
            .collect()
    } else {
        Err(Unreadable::unknown(envelope).into())
    }
}

/// What the legs, applied one by one in order, do to each task they name (by id).
fn seen_tasks(legs: &[Leg]) -> Vec<SeenTask<'_>> {
    let mut tasks: BTreeMap<Uuid, SeenTask<'_>> = BTreeMap::new();
    for leg in legs {
        let task = tasks.entry(leg.task_id).or_insert_with(|| SeenTask {
            id: leg.task_id,
            prices: Prices::draw(),
            text: None,
            sequence: i64::MIN,
            assignee: leg.user_id,
            completion: None,
        });
        if task.text.is_none() {
            task.text = leg.text.as_ref().map(Text::borrow);
        }
        // A leg changes the assignment only when newer than everything before it
        // (`tasks::note_assignments`); so does a completion mark the task completed.
        if leg.sequence > task.sequence {
            if leg.kind == Some(EntryKind::CompletionReward) {
                task.completion = Some(leg.sequence);
            }
            task.sequence = leg.sequence;
            task.assignee = leg.user_id;
        }
    }
    tasks.into_values().collect()
}

impl Ledger {
    /// The billing day entries written now go to; share-locks the billing state until
    /// the transaction ends, so no day closes under them.
    async fn billing_day(&self, conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
        let open = billing::open_day_shared(conn).await?;
        Ok(self.clock.billing_day(open))
    }

    /// Books `legs` (in order) and adds their entry_applied events to the outbox.
    async fn book(&self, conn: &mut PgConnection, legs: &[Leg]) -> Result<(), sqlx::Error> {
        if legs.is_empty() {
            return Ok(());
        }
        let day = self.billing_day(conn).await?;
        let tasks = seen_tasks(legs);
        let filled: HashSet<Uuid> = task_store::see(conn, &tasks).await?.into_iter().collect();
        task_store::note_assignments(conn, &tasks).await?;
        // The text of a filled placeholder is the one this batch brought.
        let texts: Vec<(Uuid, TaskText<'_>)> = tasks
            .iter()
            .filter(|t| filled.contains(&t.id))
            .filter_map(|t| Some((t.id, t.text?)))
            .collect();
        task_store::fill_entry_texts(conn, &texts).await?;
        // Every task is stored by now, with the prices its first sighting drew.
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        let prices = task_store::prices(conn, &ids).await?;
        let entries: Vec<EntryLeg> = legs
            .iter()
            .filter_map(|leg| {
                let kind = leg.kind?;
                Some(EntryLeg {
                    event_id: leg.event_id,
                    task_id: leg.task_id,
                    user_id: leg.user_id,
                    kind,
                    amount: prices.get(&leg.task_id)?.entry_amount(kind),
                    sequence: leg.sequence,
                })
            })
            .collect();
        let written = ledger::add_entries(conn, &entries, day).await?;
        let applied: Vec<Envelope> = written
            .iter()
            .map(|(entry, balance)| {
                popug_eventbus::envelope(
                    PRODUCER,
                    &entry.user_id.to_string(),
                    &entry_applied(entry, *balance),
                )
            })
            .collect();
        if !applied.is_empty() {
            self.outbox.add_envelopes(conn, &applied).await?;
        }
        Ok(())
    }
}

impl Handler for Ledger {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandleError> {
        self.handle_batch(conn, std::slice::from_ref(envelope))
            .await
    }

    fn batches(&self) -> bool {
        true
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        envelopes: &[Envelope],
    ) -> Result<(), HandleError> {
        let mut legs = Vec::new();
        for envelope in envelopes {
            let mut more = legs_of(envelope)?;
            if !legs.is_empty() && legs.len() + more.len() > LEGS_PER_ROUND {
                self.book(conn, &legs).await?;
                legs.clear();
            }
            legs.append(&mut more);
        }
        self.book(conn, &legs).await?;
        Ok(())
    }
}
