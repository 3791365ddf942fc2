//! SQL for users and tasks, checked against the schema at compile time. Functions take a
//! connection so callers choose the transaction; rows come out typed.

use popug_auth::Role;
use popug_service::AccountUser;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Status;

/// One row of `tasks`.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: Uuid,
    pub public_id: i64,
    pub title: String,
    pub jira_id: String,
    pub description: String,
    pub assignee_id: Uuid,
    pub status: Status,
    pub sequence: i64,
    pub created_at: OffsetDateTime,
    pub completed_at: Option<OffsetDateTime>,
}

impl TaskRow {
    pub fn is_done(&self) -> bool {
        self.status == Status::Done
    }
}

/// Active and of a role that is given tasks.
fn assignable(user: &AccountUser<'_>) -> bool {
    user.active && user.role.is_assignable()
}

/// Inserts the user, or overwrites it when `version` is newer than the stored one; an
/// older or equal version changes nothing. Returns whether the row changed.
pub async fn apply_user(
    conn: &mut PgConnection,
    user: &AccountUser<'_>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query!(
        "INSERT INTO users (id, username, role, active, assignable, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (id) DO UPDATE SET
             username = EXCLUDED.username, role = EXCLUDED.role, active = EXCLUDED.active,
             assignable = EXCLUDED.assignable, version = EXCLUDED.version, updated_at = now()
         WHERE users.version < EXCLUDED.version",
        user.id,
        user.username,
        user.role as Role,
        user.active,
        assignable(user),
        user.version,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The version of every user in the copy.
pub async fn user_versions(conn: &mut PgConnection) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query!("SELECT id, version FROM users")
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.version)).collect())
}

/// A uniformly random assignable user: a random offset into their count, in one
/// statement (so the count and the pick see the same snapshot).
pub async fn random_assignee(conn: &mut PgConnection) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
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
    sqlx::query_as!(
        TaskRow,
        r#"INSERT INTO tasks (id, title, jira_id, description, assignee_id, status)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, public_id, title, jira_id, description, assignee_id,
                     status AS "status: Status", sequence, created_at, completed_at"#,
        Uuid::now_v7(),
        new.title,
        new.jira_id,
        new.description,
        new.assignee_id,
        Status::Open as Status,
    )
    .fetch_one(conn)
    .await
}

pub async fn task_by_id(conn: &mut PgConnection, id: Uuid) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"SELECT id, public_id, title, jira_id, description, assignee_id,
                  status AS "status: Status", sequence, created_at, completed_at
           FROM tasks WHERE id = $1"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// The task, locked until the transaction ends (a reassign waits for it, and it for a
/// reassign).
pub async fn task_for_update(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<TaskRow>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"SELECT id, public_id, title, jira_id, description, assignee_id,
                  status AS "status: Status", sequence, created_at, completed_at
           FROM tasks WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Marks an open task done, bumping its sequence.
pub async fn complete_task(conn: &mut PgConnection, id: Uuid) -> Result<TaskRow, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"UPDATE tasks SET status = $2, sequence = sequence + 1, completed_at = now()
           WHERE id = $1
           RETURNING id, public_id, title, jira_id, description, assignee_id,
                     status AS "status: Status", sequence, created_at, completed_at"#,
        id,
        Status::Done as Status,
    )
    .fetch_one(conn)
    .await
}

/// Up to `limit` tasks after `after` (by public id), optionally of one status and assignee.
pub async fn page(
    conn: &mut PgConnection,
    after: i64,
    status: Option<Status>,
    assignee: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TaskRow>, sqlx::Error> {
    sqlx::query_as!(
        TaskRow,
        r#"SELECT id, public_id, title, jira_id, description, assignee_id,
                  status AS "status: Status", sequence, created_at, completed_at
           FROM tasks
           WHERE public_id > $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::uuid IS NULL OR assignee_id = $3)
           ORDER BY public_id LIMIT $4"#,
        after,
        status as Option<Status>,
        assignee,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One task moved by a reassign.
#[derive(Debug, Clone)]
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
    sqlx::query_as!(
        Moved,
        r#"WITH pool AS MATERIALIZED (
               SELECT array_agg(id ORDER BY id) AS ids FROM users WHERE assignable
           )
           UPDATE tasks
           SET assignee_id = pool.ids[1 + floor(random() * cardinality(pool.ids))::int],
               sequence = tasks.sequence + 1
           FROM pool
           WHERE tasks.status = 'open' AND cardinality(pool.ids) > 0
           RETURNING tasks.id, tasks.assignee_id AS "assignee_id!", tasks.sequence"#,
    )
    .fetch_all(conn)
    .await
}

/// How many users may be assigned tasks now.
pub async fn assignable_count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM users WHERE assignable"#)
        .fetch_one(conn)
        .await
}

/// Takes the lock a reassign holds until its transaction ends, so reassigns serialize.
pub async fn lock_reassign(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    /// Advisory lock key ("reassign" in ASCII).
    const REASSIGN_LOCK: i64 = 0x7265_6173_7369_676e;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", REASSIGN_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}
