//! What TaskKeeper publishes and what it consumes.
//!
//! Publishes (through the outbox, in the transaction of the change): `task.created` v2,
//! `task.assigned` and `task.completed` on the task bus, `reassign.chunk` on the reassign
//! bus. Consumes the account bus into its own `users` table with [`Users`], reading
//! every account event through `popug_proto::upcast`.

use popug_eventbus::Envelope;
use popug_proto::popug::tasks::v1 as pb;
use popug_service::{AccountUser, UserCopy};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{self, Moved, TaskRow};

/// Durable consumer name of the account-bus consumer.
pub const USERS_CONSUMER: &str = "taskkeeper-users";

/// The three task events carry the same snapshot of the task.
macro_rules! task_event {
    ($event:ident, $task:expr) => {{
        let task: &TaskRow = $task;
        pb::$event {
            task_id: task.id.to_string(),
            public_id: task.public_id.to_string(),
            title: task.title.clone(),
            jira_id: task.jira_id.clone(),
            description: task.description.clone(),
            assignee_id: task.assignee_id.to_string(),
            status: task.status.as_str().to_owned(),
            sequence: task.sequence,
        }
    }};
}

pub fn task_created(task: &TaskRow) -> pb::TaskCreated {
    task_event!(TaskCreated, task)
}

pub fn task_assigned(task: &TaskRow) -> pb::TaskAssigned {
    task_event!(TaskAssigned, task)
}

pub fn task_completed(task: &TaskRow) -> pb::TaskCompleted {
    task_event!(TaskCompleted, task)
}

/// The envelopes of one reassign: `moved` split into chunks of `chunk_size`, every moved
/// task in exactly one chunk. No chunk at all when nothing moved.
pub fn reassign_chunks(
    producer: &str,
    reassign_id: Uuid,
    moved: &[Moved],
    chunk_size: usize,
) -> Vec<Envelope> {
    ReassignChunks::new(producer, reassign_id, moved, chunk_size)
        .flatten()
        .collect()
}

/// The envelopes of one reassign, built a few chunks at a time: each `next()` yields the
/// envelopes of up to `chunks_per_batch` consecutive chunks, so a caller can write them
/// and drop them before building the next ones (a million tasks make about 80 MB of
/// chunks; only one batch of them is ever in memory). Together the batches are exactly
/// [`reassign_chunks`]: indexes 0..count in order, every moved task in exactly one chunk.
pub struct ReassignChunks<'a> {
    producer: &'a str,
    key: String,
    moved: std::slice::Chunks<'a, Moved>,
    count: usize,
    next_index: usize,
    chunks_per_batch: usize,
}

impl<'a> ReassignChunks<'a> {
    pub fn new(
        producer: &'a str,
        reassign_id: Uuid,
        moved: &'a [Moved],
        chunk_size: usize,
    ) -> ReassignChunks<'a> {
        let chunk_size = chunk_size.max(1);
        ReassignChunks {
            producer,
            key: reassign_id.to_string(),
            moved: moved.chunks(chunk_size),
            count: moved.len().div_ceil(chunk_size),
            next_index: 0,
            chunks_per_batch: 1,
        }
    }

    /// Chunks per batch yielded by the iterator (at least 1).
    pub fn batches_of(mut self, chunks_per_batch: usize) -> ReassignChunks<'a> {
        self.chunks_per_batch = chunks_per_batch.max(1);
        self
    }

    /// How many chunks the whole reassign has.
    pub fn chunk_count(&self) -> usize {
        self.count
    }

    fn chunk(&self, index: usize, tasks: &[Moved]) -> Envelope {
        let event = pb::ReassignChunk {
            reassign_id: self.key.clone(),
            // Far below i32::MAX for any table this service can hold.
            chunk_index: i32::try_from(index).unwrap_or(i32::MAX),
            chunk_count: i32::try_from(self.count).unwrap_or(i32::MAX),
            tasks: tasks
                .iter()
                .map(|m| pb::ReassignedTask {
                    task_id: m.id.to_string(),
                    assignee_id: m.assignee_id.to_string(),
                    sequence: m.sequence,
                })
                .collect(),
        };
        popug_eventbus::envelope(self.producer, &self.key, &event)
    }
}

impl Iterator for ReassignChunks<'_> {
    type Item = Vec<Envelope>;

    fn next(&mut self) -> Option<Vec<Envelope>> {
        let mut batch = Vec::with_capacity(self.chunks_per_batch.min(self.count));
        while batch.len() < self.chunks_per_batch {
            let Some(tasks) = self.moved.next() else {
                break;
            };
            batch.push(self.chunk(self.next_index, tasks));
            self.next_index += 1;
        }
        (!batch.is_empty()).then_some(batch)
    }
}

/// Keeps TaskKeeper's copy of the users it may assign to.
#[derive(Debug, Clone, Default)]
pub struct Users;

impl UserCopy for Users {
    async fn apply(&self, conn: &mut PgConnection, user: &AccountUser<'_>) -> sqlx::Result<()> {
        store::apply_user(conn, user).await.map(drop)
    }

    async fn versions(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<(Uuid, i64)>> {
        store::user_versions(conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use popug_proto::catalog::open;

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

    #[test]
    fn chunk_batches_are_the_chunks_in_order() {
        let moved: Vec<Moved> = (0..2501)
            .map(|i| Moved {
                id: Uuid::from_u128(i),
                assignee_id: Uuid::from_u128(i % 7),
                sequence: 3,
            })
            .collect();
        let batches: Vec<Vec<Envelope>> =
            ReassignChunks::new("taskkeeper", Uuid::nil(), &moved, 100)
                .batches_of(7)
                .collect();
        // 26 chunks in batches of 7: 7, 7, 7, 5.
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [7, 7, 7, 5]);
        let mut seen = Vec::new();
        for (i, envelope) in batches.iter().flatten().enumerate() {
            let chunk = open::<pb::ReassignChunk>(envelope).unwrap_or_default();
            assert_eq!(chunk.chunk_index as usize, i);
            assert_eq!(chunk.chunk_count, 26);
            seen.extend(chunk.tasks.into_iter().map(|t| t.task_id));
        }
        let expected: Vec<String> = moved.iter().map(|m| m.id.to_string()).collect();
        assert_eq!(seen, expected);
        assert_eq!(
            ReassignChunks::new("taskkeeper", Uuid::nil(), &[], 100).chunk_count(),
            0
        );
        assert!(
            ReassignChunks::new("taskkeeper", Uuid::nil(), &[], 100)
                .next()
                .is_none()
        );
    }
}
