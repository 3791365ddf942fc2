//! SQL for users and tasks. Functions take a connection so callers choose the transaction.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use popug_proto::popug::tasks::v1 as pb;

/// One row of `tasks`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaskRow {
    pub id: Uuid,
    pub public_id: i64,
    pub title: String,
    pub jira_id: String,
    pub description: String,
    pub assignee_id: Uuid,
    pub status: String,
    pub sequence: i64,
    pub created_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

const COLUMNS: &str = "id, public_id, title, jira_id, description, assignee_id, status, \
                       sequence, created_at, completed_at";

impl TaskRow {
    pub fn is_done(&self) -> bool {
        self.status == "done"
    }

    pub fn to_proto(&self) -> pb::Task {
        pb::Task {
            id: self.id.to_string(),
            public_id: self.public_id.to_string(),
            title: self.title.clone(),
            jira_id: self.jira_id.clone(),
            description: self.description.clone(),
            assignee_id: self.assignee_id.to_string(),
            status: if self.is_done() {
                pb::TaskStatus::Done
            } else {
                pb::TaskStatus::Open
            } as i32,
            sequence: self.sequence,
            created_at: Some(timestamp(self.created_at)),
            completed_at: self.completed_at.map(timestamp),
        }
    }
}

pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always in 0..1e9.
        nanos: at.nanosecond() as i32,
    }
}

/// A user as an account event describes it.
#[derive(Debug, Clone)]
pub struct UserSnapshot<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub role: &'a str,
    pub active: bool,
    pub assignable: bool,
    pub version: i64,
}

/// Inserts the user, or overwrites it when `version` is newer than the stored one; an
/// older or equal version changes nothing. Returns whether the row changed.
pub async fn apply_user(
    conn: &mut PgConnection,
    user: &UserSnapshot<'_>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (id, username, role, active, assignable, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET
             username = EXCLUDED.username, role = EXCLUDED.role, active = EXCLUDED.active,
             assignable = EXCLUDED.assignable, version = EXCLUDED.version, updated_at = now()
         WHERE users.version < EXCLUDED.version",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(user.role)
    .bind(user.active)
    .bind(user.assignable)
    .bind(user.version)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A uniformly random assignable user: a random offset into their count, in one
/// statement (so the count and the pick see the same snapshot).
pub async fn random_assignee(conn: &mut PgConnection) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM users WHERE assignable ORDER BY id
         OFFSET (SELECT floor(random() * count(*))::bigint FROM users WHERE assignable)
         LIMIT 1",
    )
    .fetch_optional(conn)
    .await
}

pub struct InsertTask<'a> {
    pub title: &'a str,
    pub jira_id: &'a str,
    pub description: &'a str,
    pub assignee_id: Uuid,
}

pub async fn insert_task(
    conn: &mut PgConnection,
    new: InsertTask<'_>,
) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "INSERT INTO tasks (id, title, jira_id, description, assignee_id, status)
         VALUES ($1, $2, $3, $4, $5, 'open') RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.title)
    .bind(new.jira_id)
    .bind(new.description)
    .bind(new.assignee_id)
    .fetch_one(conn)
    .await
}

pub async fn task_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The task, locked until the transaction ends (a reassign waits for it, and it for a
/// reassign).
pub async fn task_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Marks an open task done, bumping its sequence.
pub async fn complete_task(conn: &mut PgConnection, id: Uuid) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE tasks SET status = 'done', sequence = sequence + 1, completed_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Up to `limit` tasks after `after` (by public id), optionally of one status and assignee.
pub async fn page(
    conn: &mut PgConnection,
    after: i64,
    status: Option<&str>,
    assignee: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM tasks
         WHERE public_id > $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::uuid IS NULL OR assignee_id = $3)
         ORDER BY public_id LIMIT $4"
    ))
    .bind(after)
    .bind(status)
    .bind(assignee)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One task moved by a reassign.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Moved {
    pub id: Uuid,
    pub assignee_id: Uuid,
    pub sequence: i64,
}

/// Gives every open task a uniformly random assignable user, in one statement; returns
/// what moved. The `status = 'open'` recheck on the updated row means a task completed by
/// a transaction that committed while this one waited for its lock is left alone.
///
/// The assignable ids are gathered once into an array and each row takes a random
/// element, so the update is a single pass over `tasks` in physical order: no join of a
/// million picks back onto `tasks` (a hash join that spilled to disk and visited the heap
/// and its indexes in random order, more than doubling the time at a million tasks).
/// `random()` is volatile, so it is drawn per row; `floor(random() * n)` is uniform over
/// `0..n`.
pub async fn reassign_open(conn: &mut PgConnection) -> Result<Vec<Moved>, sqlx::Error> {
    sqlx::query_as(
        "WITH pool AS MATERIALIZED (
             SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE assignable
         )
         UPDATE tasks
         SET assignee_id = pool.ids[1 + floor(random() * cardinality(pool.ids))::int],
             sequence = tasks.sequence + 1
         FROM pool
         WHERE tasks.status = 'open' AND cardinality(pool.ids) > 0
         RETURNING tasks.id, tasks.assignee_id, tasks.sequence",
    )
    .fetch_all(conn)
    .await
}

/// How many users may be assigned tasks now.
pub async fn assignable_count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM users WHERE assignable")
        .fetch_one(conn)
        .await
}
