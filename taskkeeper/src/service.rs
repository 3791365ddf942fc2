//! What TaskKeeper does, independent of gRPC. Every change writes its events to the
//! outbox in the same transaction.

use popug_auth::{Caller, Permission};
use popug_errors::retry;
use popug_eventbus::Outbox;
use popug_idempotency::Key;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{NewTask, Status};
use crate::error::Error;
use crate::events;
use crate::store::{self, InsertTask, TaskRow};

/// `reassign.chunk` envelopes written per outbox statement (and held in memory at once).
const CHUNKS_PER_STATEMENT: usize = 50;

/// Producer name on every envelope.
pub const PRODUCER: &str = "taskkeeper";

/// The service's state, shared by the gRPC handlers.
pub struct Tasks {
    pub pool: PgPool,
    pub outbox: Outbox,
    /// Task → assignee pairs per `reassign.chunk`.
    pub chunk_size: usize,
}

/// Filters of a task listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<Status>,
    pub assignee: Option<Uuid>,
}

/// What one reassign did.
#[derive(Debug, Clone)]
pub struct Reassigned {
    pub reassign_id: Uuid,
    pub count: i64,
}

impl Tasks {
    /// Creates an open task assigned to a uniformly random assignable user, with its
    /// `task.created` v2 and `task.assigned` events. With an idempotency `key` that an
    /// earlier call already used, returns that call's task instead (no second task, no
    /// second event).
    pub async fn create(&self, new: &NewTask, key: Option<&Key>) -> Result<TaskRow, Error> {
        retry(|| self.create_once(new, key)).await
    }

    async fn create_once(&self, new: &NewTask, key: Option<&Key>) -> Result<TaskRow, Error> {
        let mut tx = self.pool.begin().await?;
        if let Some(key) = key
            && let Some(earlier) = popug_idempotency::claim(&mut tx, key).await?
        {
            let id = Uuid::parse_str(&earlier).map_err(|e| Error::Internal(e.into()))?;
            return store::task_by_id(&mut tx, id)
                .await?
                .ok_or(Error::NotFound("task"));
        }
        let assignee = store::random_assignee(&mut tx).await?.ok_or_else(|| {
            Error::FailedPrecondition("no active assignable user to give the task to".into())
        })?;
        let task = store::insert_task(
            &mut tx,
            InsertTask {
                title: new.title.as_str(),
                jira_id: new.jira_id.as_ref().map_or("", |j| j.as_str()),
                description: new.description.as_str(),
                assignee_id: assignee,
            },
        )
        .await?;
        let id = task.id.to_string();
        let envelopes = [
            popug_eventbus::envelope(PRODUCER, &id, &events::task_created(&task)),
            popug_eventbus::envelope(PRODUCER, &id, &events::task_assigned(&task)),
        ];
        self.outbox.add_envelopes(&mut tx, &envelopes).await?;
        if let Some(key) = key {
            popug_idempotency::complete(&mut tx, key, &id).await?;
        }
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(task = %task.id, assignee = %task.assignee_id, "task created");
        Ok(task)
    }

    /// A task the caller may see: their own, or any with `tasks.read_all`.
    pub async fn get(&self, caller: &Caller, id: Uuid) -> Result<TaskRow, Error> {
        let mut conn = self.pool.acquire().await?;
        let task = store::task_by_id(&mut conn, id)
            .await?
            .ok_or(Error::NotFound("task"))?;
        if task.assignee_id != caller.id && !caller.has(Permission::TasksReadAll) {
            return Err(Error::PermissionDenied(
                "only the assignee or tasks.read_all may see this task".into(),
            ));
        }
        Ok(task)
    }

    /// A page of tasks after `after`; callers without `tasks.read_all` see only their own.
    pub async fn list(
        &self,
        caller: &Caller,
        filter: ListFilter,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<TaskRow>, String), Error> {
        let assignee = if caller.has(Permission::TasksReadAll) {
            filter.assignee
        } else {
            match filter.assignee {
                Some(other) if other != caller.id => {
                    return Err(Error::PermissionDenied(
                        "requires permission tasks.read_all to list others' tasks".into(),
                    ));
                }
                _ => Some(caller.id),
            }
        };
        let mut conn = self.pool.acquire().await?;
        let rows = store::page(&mut conn, after, filter.status, assignee, limit).await?;
        let next = match rows.last() {
            Some(last) if rows.len() as i64 == limit => last.public_id.to_string(),
            _ => String::new(),
        };
        Ok((rows, next))
    }

    /// Completes the caller's own task: idempotent for the assignee, final. The row lock
    /// orders it against a reassign.
    pub async fn complete(&self, caller: &Caller, id: Uuid) -> Result<TaskRow, Error> {
        retry(|| self.complete_once(caller, id)).await
    }

    async fn complete_once(&self, caller: &Caller, id: Uuid) -> Result<TaskRow, Error> {
        let mut tx = self.pool.begin().await?;
        let task = store::task_for_update(&mut tx, id)
            .await?
            .ok_or(Error::NotFound("task"))?;
        if task.assignee_id != caller.id {
            return Err(Error::PermissionDenied(
                "only the task's assignee may complete it".into(),
            ));
        }
        if task.is_done() {
            return Ok(task);
        }
        let task = store::complete_task(&mut tx, id).await?;
        self.outbox
            .add(
                &mut tx,
                &task.id.to_string(),
                &events::task_completed(&task),
            )
            .await?;
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(task = %task.id, assignee = %task.assignee_id, "task completed");
        Ok(task)
    }

    /// Gives every open task a random assignable user in one set-based update, and writes
    /// the `reassign.chunk` events in the same transaction. Reassigns serialize on an
    /// advisory lock. With no assignable user, FAILED_PRECONDITION (nothing moves).
    pub async fn reassign(&self) -> Result<Reassigned, Error> {
        let mut tx = self.pool.begin().await?;
        // Reassigns serialize instead of interleaving their chunk events.
        store::lock_reassign(&mut tx).await?;
        if store::assignable_count(&mut tx).await? == 0 {
            return Err(Error::FailedPrecondition(
                "no active assignable user to give tasks to".into(),
            ));
        }
        let started = std::time::Instant::now();
        let moved = store::reassign_open(&mut tx).await?;
        let updated = started.elapsed();
        let reassign_id = Uuid::now_v7();
        // The chunks are built and written a bounded batch at a time (about 4 MB of
        // envelopes per statement at the default chunk size), never all at once: a
        // million tasks make about 80 MB of chunks.
        let batches = events::ReassignChunks::new(PRODUCER, reassign_id, &moved, self.chunk_size)
            .batches_of(CHUNKS_PER_STATEMENT);
        let chunks = batches.chunk_count();
        for batch in batches {
            self.outbox.add_envelopes(&mut tx, &batch).await?;
        }
        let written = started.elapsed();
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(
            %reassign_id,
            moved = moved.len(),
            chunks,
            update_ms = updated.as_millis() as u64,
            outbox_ms = (written - updated).as_millis() as u64,
            commit_ms = (started.elapsed() - written).as_millis() as u64,
            "open tasks reassigned"
        );
        Ok(Reassigned {
            reassign_id,
            count: moved.len() as i64,
        })
    }
}
