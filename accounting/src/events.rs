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

use std::time::Duration;

use popug_eventbus::catalog::{self, is, open};
use popug_eventbus::{Envelope, HandleError, Handler, Outbox};
use popug_proto::popug::account::v1 as account;
use popug_proto::popug::accounting::v1 as pb;
use popug_proto::popug::tasks::v1 as tasks;
use sqlx::PgConnection;
use time::Date;
use uuid::Uuid;

use crate::domain::{self, Prices};
use crate::store::{self, EntryRow, Kind, NewEntry, TaskText, UserSnapshot, timestamp};

/// Durable consumer names.
pub const USERS_CONSUMER: &str = "accounting-users";
pub const TASKS_CONSUMER: &str = "accounting-tasks";
pub const REASSIGNS_CONSUMER: &str = "accounting-reassigns";

/// Producer name on every envelope.
pub const PRODUCER: &str = "accounting";

/// `accounting.entry_applied` for a written entry and the balance after it.
pub fn entry_applied(entry: &EntryRow, balance: i64) -> pb::EntryApplied {
    pb::EntryApplied {
        entry_id: entry.id.to_string(),
        user_id: entry.user_id.to_string(),
        kind: entry_kind(&entry.kind) as i32,
        amount_cents: entry.amount,
        task_id: entry.task_id.map(|t| t.to_string()).unwrap_or_default(),
        billing_day: domain::format_day(entry.billing_day),
        balance_cents: balance,
        created_at: Some(timestamp(entry.created_at)),
    }
}

pub fn entry_kind(raw: &str) -> pb::EntryKind {
    match Kind::parse(raw) {
        Some(Kind::AssignFee) => pb::EntryKind::AssignFee,
        Some(Kind::CompletionReward) => pb::EntryKind::CompletionReward,
        Some(Kind::Payout) => pb::EntryKind::Payout,
        None => pb::EntryKind::Unspecified,
    }
}

/// `task.created` in either version, as v2. A v1 title like `"[UBERPOP-42] - Title"` is
/// split into jira_id `UBERPOP-42` and title `Title`; any other v1 title is kept whole.
pub fn read_task_created(envelope: &Envelope) -> Result<tasks::TaskCreated, HandleError> {
    if is::<tasks::TaskCreated>(envelope) {
        return open::<tasks::TaskCreated>(envelope);
    }
    if is::<tasks::TaskCreatedV1>(envelope) {
        let v1 = open::<tasks::TaskCreatedV1>(envelope)?;
        let (jira_id, title) = split_v1_title(&v1.title);
        return Ok(tasks::TaskCreated {
            task_id: v1.task_id,
            public_id: v1.public_id,
            title,
            jira_id,
            description: v1.description,
            assignee_id: v1.assignee_id,
            status: v1.status,
            sequence: v1.sequence,
        });
    }
    Err(HandleError::Permanent(format!(
        "not a task.created event: {} v{}",
        envelope.name, envelope.version
    )))
}

/// `"[UBERPOP-42] - Title"` → (`"UBERPOP-42"`, `"Title"`); anything else → (`""`, whole).
pub fn split_v1_title(mixed: &str) -> (String, String) {
    let trimmed = mixed.trim();
    if let Some(rest) = trimmed.strip_prefix('[')
        && let Some((id, title)) = rest.split_once(']')
    {
        let id = id.trim();
        if is_jira_id(id) {
            let title = title.trim_start();
            let title = title.strip_prefix('-').unwrap_or(title).trim();
            return (id.to_owned(), title.to_owned());
        }
    }
    (String::new(), trimmed.to_owned())
}

/// `^[A-Z][A-Z0-9]+-[0-9]+$`
fn is_jira_id(s: &str) -> bool {
    let Some((project, number)) = s.split_once('-') else {
        return false;
    };
    let project = project.as_bytes();
    project.len() >= 2
        && project[0].is_ascii_uppercase()
        && project[1..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

fn uuid(field: &str, raw: &str) -> Result<Uuid, HandleError> {
    Uuid::parse_str(raw).map_err(|_| HandleError::Permanent(format!("bad {field} {raw:?}")))
}

/// Applies account events to `users`: idempotent and order-safe (only a higher
/// `version` overwrites).
#[derive(Debug, Clone, Default)]
pub struct Users;

impl Handler for Users {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandleError> {
        let (snapshot, deleted) = if is::<account::AccountCreated>(envelope) {
            (open::<account::AccountCreated>(envelope)?.account, false)
        } else if is::<account::AccountUpdated>(envelope) {
            (open::<account::AccountUpdated>(envelope)?.account, false)
        } else if is::<account::AccountDeleted>(envelope) {
            (open::<account::AccountDeleted>(envelope)?.account, true)
        } else {
            return Err(HandleError::Permanent(format!(
                "unknown event {} v{}",
                envelope.name, envelope.version
            )));
        };
        let snapshot =
            snapshot.ok_or_else(|| HandleError::Permanent("account snapshot missing".into()))?;
        let id = uuid("account id", &snapshot.id)?;
        store::apply_user(
            conn,
            &UserSnapshot {
                id,
                username: &snapshot.username,
                name: &snapshot.name,
                email: &snapshot.email,
                role: &snapshot.role,
                active: snapshot.active && !deleted,
                version: snapshot.version,
            },
        )
        .await?;
        Ok(())
    }
}

/// Applies task and reassign events to the ledger. Each entry is keyed by its event leg
/// (event id, task id, kind), so a redelivered event never adds a second one.
#[derive(Clone)]
pub struct Ledger {
    pub outbox: Outbox,
    /// Where a billing day ends after midnight UTC.
    pub cutoff: Duration,
}

/// One assignment or completion to book.
struct Leg<'a> {
    task_id: Uuid,
    user_id: Uuid,
    sequence: i64,
    text: Option<TaskText<'a>>,
    kind: Option<Kind>,
}

impl Ledger {
    /// The billing day entries written now go to: the open day, or today when the open
    /// day is already past. Share-locks the billing state until the transaction ends.
    async fn billing_day(&self, conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
        let open = store::open_day_shared(conn).await?;
        let today = domain::calendar_day(time::OffsetDateTime::now_utc(), self.cutoff);
        Ok(open.max(today))
    }

    /// Books the legs of one event; returns the entry_applied envelopes to publish.
    async fn book(
        &self,
        conn: &mut PgConnection,
        event_id: Uuid,
        legs: &[Leg<'_>],
    ) -> Result<Vec<Envelope>, sqlx::Error> {
        let day = self.billing_day(conn).await?;
        let mut out = Vec::new();
        for leg in legs {
            let task = store::see_task(conn, leg.task_id, Prices::draw(), leg.text).await?;
            store::note_assignment(
                conn,
                leg.task_id,
                leg.user_id,
                leg.sequence,
                leg.kind == Some(Kind::CompletionReward),
            )
            .await?;
            let amount = match leg.kind {
                Some(Kind::AssignFee) => -task.fee_cents,
                Some(Kind::CompletionReward) => task.reward_cents,
                Some(Kind::Payout) | None => continue,
            };
            let Some(kind) = leg.kind else { continue };
            let written = store::add_entry(
                conn,
                &NewEntry {
                    user_id: leg.user_id,
                    kind,
                    amount,
                    event_id,
                    task: &task,
                    billing_day: day,
                },
            )
            .await?;
            if let Some((entry, balance)) = written {
                out.push(catalog::envelope(
                    PRODUCER,
                    &entry.user_id.to_string(),
                    &entry_applied(&entry, balance),
                ));
            }
        }
        Ok(out)
    }
}

impl Handler for Ledger {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandleError> {
        let event_id = uuid("event id", &envelope.event_id)?;
        let applied = if envelope.name == "task.created" {
            let t = read_task_created(envelope)?;
            let text = TaskText {
                public_id: &t.public_id,
                jira_id: &t.jira_id,
                title: &t.title,
                description: &t.description,
            };
            let leg = Leg {
                task_id: uuid("task id", &t.task_id)?,
                user_id: uuid("assignee id", &t.assignee_id)?,
                sequence: t.sequence,
                text: Some(text),
                kind: None,
            };
            self.book(conn, event_id, &[leg]).await?
        } else if is::<tasks::TaskAssigned>(envelope) || is::<tasks::TaskCompleted>(envelope) {
            // Both carry the same fields; only the kind of entry differs.
            let (t, kind) = if is::<tasks::TaskAssigned>(envelope) {
                (open::<tasks::TaskAssigned>(envelope)?, Kind::AssignFee)
            } else {
                let c = open::<tasks::TaskCompleted>(envelope)?;
                let same = tasks::TaskAssigned {
                    task_id: c.task_id,
                    public_id: c.public_id,
                    title: c.title,
                    jira_id: c.jira_id,
                    description: c.description,
                    assignee_id: c.assignee_id,
                    status: c.status,
                    sequence: c.sequence,
                };
                (same, Kind::CompletionReward)
            };
            let leg = Leg {
                task_id: uuid("task id", &t.task_id)?,
                user_id: uuid("assignee id", &t.assignee_id)?,
                sequence: t.sequence,
                text: Some(TaskText {
                    public_id: &t.public_id,
                    jira_id: &t.jira_id,
                    title: &t.title,
                    description: &t.description,
                }),
                kind: Some(kind),
            };
            self.book(conn, event_id, &[leg]).await?
        } else if is::<tasks::ReassignChunk>(envelope) {
            let chunk = open::<tasks::ReassignChunk>(envelope)?;
            let legs = chunk
                .tasks
                .iter()
                .map(|t| {
                    Ok(Leg {
                        task_id: uuid("task id", &t.task_id)?,
                        user_id: uuid("assignee id", &t.assignee_id)?,
                        sequence: t.sequence,
                        text: None,
                        kind: Some(Kind::AssignFee),
                    })
                })
                .collect::<Result<Vec<_>, HandleError>>()?;
            self.book(conn, event_id, &legs).await?
        } else {
            return Err(HandleError::Permanent(format!(
                "unknown event {} v{}",
                envelope.name, envelope.version
            )));
        };
        if !applied.is_empty() {
            self.outbox.add_envelopes(conn, &applied).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_titles_split() {
        assert_eq!(
            split_v1_title("[UBERPOP-42] - Feed the popugs"),
            ("UBERPOP-42".to_owned(), "Feed the popugs".to_owned())
        );
        assert_eq!(
            split_v1_title("Plain title"),
            (String::new(), "Plain title".to_owned())
        );
        assert_eq!(
            split_v1_title("[not an id] x"),
            (String::new(), "[not an id] x".to_owned())
        );
    }
}
