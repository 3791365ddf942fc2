//! What TaskKeeper publishes and what it consumes.
//!
//! Publishes (through the outbox, in the transaction of the change): `task.created` v2,
//! `task.assigned` and `task.completed` on the task bus, `reassign.chunk` on the reassign
//! bus. Consumes the account bus into its own `users` table with [`Users`].
//! [`read_task_created`] reads both versions of `task.created`, as every consumer must.

use popug_auth::Role;
use popug_eventbus::catalog::{self, is, open};
use popug_eventbus::{Envelope, HandleError, Handler};
use popug_proto::popug::account::v1 as account;
use popug_proto::popug::tasks::v1 as pb;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, Moved, TaskRow, UserSnapshot};

/// Durable consumer name of the account-bus consumer.
pub const USERS_CONSUMER: &str = "taskkeeper-users";

pub fn task_created(task: &TaskRow) -> pb::TaskCreated {
    pb::TaskCreated {
        task_id: task.id.to_string(),
        public_id: task.public_id.to_string(),
        title: task.title.clone(),
        jira_id: task.jira_id.clone(),
        description: task.description.clone(),
        assignee_id: task.assignee_id.to_string(),
        status: task.status.clone(),
        sequence: task.sequence,
    }
}

pub fn task_assigned(task: &TaskRow) -> pb::TaskAssigned {
    pb::TaskAssigned {
        task_id: task.id.to_string(),
        public_id: task.public_id.to_string(),
        title: task.title.clone(),
        jira_id: task.jira_id.clone(),
        description: task.description.clone(),
        assignee_id: task.assignee_id.to_string(),
        status: task.status.clone(),
        sequence: task.sequence,
    }
}

pub fn task_completed(task: &TaskRow) -> pb::TaskCompleted {
    pb::TaskCompleted {
        task_id: task.id.to_string(),
        public_id: task.public_id.to_string(),
        title: task.title.clone(),
        jira_id: task.jira_id.clone(),
        description: task.description.clone(),
        assignee_id: task.assignee_id.to_string(),
        status: task.status.clone(),
        sequence: task.sequence,
    }
}

/// The envelopes of one reassign: `moved` split into chunks of `chunk_size`, every moved
/// task in exactly one chunk. No chunk at all when nothing moved.
pub fn reassign_chunks(
    producer: &str,
    reassign_id: Uuid,
    moved: &[Moved],
    chunk_size: usize,
) -> Vec<Envelope> {
    let chunk_size = chunk_size.max(1);
    let count = moved.len().div_ceil(chunk_size);
    let key = reassign_id.to_string();
    moved
        .chunks(chunk_size)
        .enumerate()
        .map(|(index, chunk)| {
            let event = pb::ReassignChunk {
                reassign_id: key.clone(),
                // Far below i32::MAX for any table this service can hold.
                chunk_index: i32::try_from(index).unwrap_or(i32::MAX),
                chunk_count: i32::try_from(count).unwrap_or(i32::MAX),
                tasks: chunk
                    .iter()
                    .map(|m| pb::ReassignedTask {
                        task_id: m.id.to_string(),
                        assignee_id: m.assignee_id.to_string(),
                        sequence: m.sequence,
                    })
                    .collect(),
            };
            catalog::envelope(producer, &key, &event)
        })
        .collect()
}

/// `task.created` in either version, as v2. A v1 title like `"[UBERPOP-42] - Title"` is
/// split into jira_id `UBERPOP-42` and title `Title`; any other v1 title is kept whole.
pub fn read_task_created(envelope: &Envelope) -> Result<pb::TaskCreated, HandleError> {
    if is::<pb::TaskCreated>(envelope) {
        return open::<pb::TaskCreated>(envelope);
    }
    if is::<pb::TaskCreatedV1>(envelope) {
        let v1 = open::<pb::TaskCreatedV1>(envelope)?;
        let (jira_id, title) = split_v1_title(&v1.title);
        return Ok(pb::TaskCreated {
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
        if crate::domain::is_jira_id(id) {
            let title = title.trim_start();
            let title = title.strip_prefix('-').unwrap_or(title).trim();
            return (id.to_owned(), title.to_owned());
        }
    }
    (String::new(), trimmed.to_owned())
}

/// Applies account events to `users`: idempotent (a replay changes nothing) and
/// order-safe (only a higher `version` overwrites).
#[derive(Debug, Clone, Default)]
pub struct Users;

impl Users {
    fn snapshot(envelope: &Envelope) -> Result<account::AccountSnapshot, HandleError> {
        let snapshot = if is::<account::AccountCreated>(envelope) {
            open::<account::AccountCreated>(envelope)?.account
        } else if is::<account::AccountUpdated>(envelope) {
            open::<account::AccountUpdated>(envelope)?.account
        } else if is::<account::AccountDeleted>(envelope) {
            open::<account::AccountDeleted>(envelope)?.account
        } else {
            return Err(HandleError::Permanent(format!(
                "unknown event {} v{}",
                envelope.name, envelope.version
            )));
        };
        snapshot.ok_or_else(|| HandleError::Permanent("account snapshot missing".into()))
    }
}

impl Handler for Users {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandleError> {
        let snapshot = Users::snapshot(envelope)?;
        let id = Uuid::parse_str(&snapshot.id)
            .map_err(|_| HandleError::Permanent(format!("bad account id {:?}", snapshot.id)))?;
        // A deleted account is deactivated: never assignable again, whatever it says.
        let active = snapshot.active && !is::<account::AccountDeleted>(envelope);
        let assignable = active && snapshot.role.parse::<Role>().is_ok_and(Role::is_assignable);
        let changed = store::apply_user(
            conn,
            &UserSnapshot {
                id,
                username: &snapshot.username,
                role: &snapshot.role,
                active,
                assignable,
                version: snapshot.version,
            },
        )
        .await?;
        tracing::debug!(account = %id, version = snapshot.version, changed, "account event applied");
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
            split_v1_title("[AB-1]Title"),
            ("AB-1".to_owned(), "Title".to_owned())
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

    #[test]
    fn chunks_cover_every_task_once() {
        let moved: Vec<Moved> = (0..2501)
            .map(|i| Moved {
                id: Uuid::from_u128(i),
                assignee_id: Uuid::nil(),
                sequence: 2,
            })
            .collect();
        let envelopes = reassign_chunks("taskkeeper", Uuid::nil(), &moved, 1000);
        assert_eq!(envelopes.len(), 3);
        let mut seen = Vec::new();
        for (i, envelope) in envelopes.iter().enumerate() {
            let chunk = open::<pb::ReassignChunk>(envelope).unwrap_or_default();
            assert_eq!(chunk.chunk_index as usize, i);
            assert_eq!(chunk.chunk_count, 3);
            seen.extend(chunk.tasks.into_iter().map(|t| t.task_id));
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 2501);
        assert!(reassign_chunks("taskkeeper", Uuid::nil(), &[], 1000).is_empty());
    }
}
