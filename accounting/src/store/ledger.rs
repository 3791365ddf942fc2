//! The ledger (the audit log): immutable entries, each fee or reward tied to the event leg
//! that caused it, and the balances kept in step with them.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::domain::{Cents, EntryKind};

/// One row of `entries`.
#[derive(Debug, Clone)]
pub struct EntryRow {
    pub id: i64,
    pub user_id: Uuid,
    pub kind: EntryKind,
    /// Signed: a debit is negative.
    pub amount: Cents,
    pub task_id: Option<Uuid>,
    pub jira_id: String,
    pub title: String,
    pub description: String,
    pub billing_day: Date,
    pub created_at: OffsetDateTime,
}

/// One fee or reward to write with [`add_entries`]; the text comes from the task as
/// stored.
#[derive(Debug, Clone, Copy)]
pub struct EntryLeg {
    pub event_id: Uuid,
    pub task_id: Uuid,
    pub user_id: Uuid,
    pub kind: EntryKind,
    /// The entry's signed amount (the task's price, as `kind` books it).
    pub amount: Cents,
    /// The task's sequence the leg is about: one fee per (task, sequence).
    pub sequence: i64,
}

/// Writes, in order and in one statement, the entry of every leg that has none yet — a
/// redelivered leg is skipped by the unique event leg, an assignment published again
/// under another event id by the unique (task, sequence) of fees, a second completion by
/// the one reward per task — with its task's text, and moves
/// each balance by its entries (balances locked in user order). Returns the entries
/// written, in id order, each with the balance right after it.
pub async fn add_entries(
    conn: &mut PgConnection,
    legs: &[EntryLeg],
    billing_day: Date,
) -> Result<Vec<(EntryRow, Cents)>, sqlx::Error> {
    if legs.is_empty() {
        return Ok(Vec::new());
    }
    let events: Vec<Uuid> = legs.iter().map(|l| l.event_id).collect();
    let tasks: Vec<Uuid> = legs.iter().map(|l| l.task_id).collect();
    let users: Vec<Uuid> = legs.iter().map(|l| l.user_id).collect();
    let kinds: Vec<EntryKind> = legs.iter().map(|l| l.kind).collect();
    let amounts: Vec<i64> = legs.iter().map(|l| l.amount.get()).collect();
    let sequences: Vec<i64> = legs.iter().map(|l| l.sequence).collect();
    let rows = sqlx::query!(
        r#"WITH legs AS (
               SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[],
                                    $7::bigint[])
                   WITH ORDINALITY AS l(event_id, task_id, user_id, kind, amount, sequence, n)
           ), written AS (
               INSERT INTO entries (user_id, kind, amount, event_id, task_id, sequence, text_known,
                                    jira_id, title, description, billing_day)
               SELECT l.user_id, l.kind, l.amount, l.event_id, l.task_id, l.sequence,
                      t.text_known, t.jira_id, t.title, t.description, $6
               FROM legs l JOIN tasks t ON t.id = l.task_id
               ORDER BY l.n
               ON CONFLICT DO NOTHING
               RETURNING id, user_id, kind, amount, task_id, jira_id, title, description,
                         billing_day, created_at
           ), moved AS (
               INSERT INTO balances (user_id, balance)
               SELECT user_id, sum(amount)::bigint FROM written GROUP BY user_id ORDER BY user_id
               ON CONFLICT (user_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance
               RETURNING user_id, balance
           )
           SELECT w.id AS "id!", w.user_id AS "user_id!", w.kind AS "kind!: EntryKind",
                  w.amount AS "amount!: Cents", w.task_id, w.jira_id AS "jira_id!",
                  w.title AS "title!", w.description AS "description!",
                  w.billing_day AS "billing_day!", w.created_at AS "created_at!",
                  m.balance AS "balance!: Cents"
           FROM written w JOIN moved m USING (user_id)
           ORDER BY w.id"#,
        &events,
        &tasks,
        &users,
        &kinds as &[EntryKind],
        &amounts,
        billing_day,
        &sequences,
    )
    .fetch_all(conn)
    .await?;
    // `balance` is each user's balance after all of them; walk back to the balance
    // right after each entry.
    let mut after: std::collections::HashMap<Uuid, Cents> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows.into_iter().rev() {
        let left = after.entry(row.user_id).or_insert(row.balance);
        let balance = *left;
        *left = *left - row.amount;
        let entry = EntryRow {
            id: row.id,
            user_id: row.user_id,
            kind: row.kind,
            amount: row.amount,
            task_id: row.task_id,
            jira_id: row.jira_id,
            title: row.title,
            description: row.description,
            billing_day: row.billing_day,
            created_at: row.created_at,
        };
        out.push((entry, balance));
    }
    out.reverse();
    Ok(out)
}

/// The balance of a user the ledger knows; `None` for one it has never booked.
pub async fn balance(conn: &mut PgConnection, user: Uuid) -> Result<Option<Cents>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT balance AS "balance: Cents" FROM balances WHERE user_id = $1"#,
        user,
    )
    .fetch_optional(conn)
    .await
}

/// A user's entries of one billing day after entry `after`, oldest first.
pub async fn entries_page(
    conn: &mut PgConnection,
    user: Uuid,
    day: Date,
    after: i64,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as!(
        EntryRow,
        r#"SELECT id, user_id, kind AS "kind: EntryKind", amount AS "amount: Cents", task_id,
                  jira_id, title, description, billing_day, created_at
           FROM entries
           WHERE user_id = $1 AND billing_day = $2 AND id > $3
           ORDER BY id LIMIT $4"#,
        user,
        day,
        after,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The fees and rewards of one billing day, as booked (fees negative, rewards positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayTotals {
    pub day: Date,
    pub fees: Cents,
    pub rewards: Cents,
}

/// [`DayTotals`] of every billing day in `from ..= to` that has any.
pub async fn day_totals(
    conn: &mut PgConnection,
    from: Date,
    to: Date,
) -> Result<Vec<DayTotals>, sqlx::Error> {
    sqlx::query_as!(
        DayTotals,
        r#"SELECT billing_day AS day,
                  COALESCE(sum(amount) FILTER (WHERE kind = $3), 0)::bigint AS "fees!: Cents",
                  COALESCE(sum(amount) FILTER (WHERE kind = $4), 0)::bigint AS "rewards!: Cents"
           FROM entries
           WHERE billing_day BETWEEN $1 AND $2 AND kind IN ($3, $4)
           GROUP BY billing_day ORDER BY billing_day"#,
        from,
        to,
        EntryKind::AssignFee as EntryKind,
        EntryKind::CompletionReward as EntryKind,
    )
    .fetch_all(conn)
    .await
}

/// How many users' balance differs from the sum of their entries — zero, always: an
/// audit of the rule that every balance moves with its entries, for checks and tests.
pub async fn unbalanced_users(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM balances b
           FULL JOIN (SELECT user_id, sum(amount) AS total FROM entries GROUP BY user_id) e
             USING (user_id)
           WHERE COALESCE(b.balance, 0) <> COALESCE(e.total, 0)"#
    )
    .fetch_one(conn)
    .await
}

/// How many entries of a kind the ledger holds, and the cents they moved (absolute).
pub struct KindTotals {
    pub kind: EntryKind,
    pub entries: i64,
    pub cents: i64,
}

/// [`KindTotals`] of every kind with entries.
pub async fn kind_totals(conn: &mut PgConnection) -> Result<Vec<KindTotals>, sqlx::Error> {
    sqlx::query_as!(
        KindTotals,
        r#"SELECT kind AS "kind: EntryKind", count(*) AS "entries!",
                  COALESCE(sum(abs(amount)), 0)::bigint AS "cents!"
           FROM entries GROUP BY kind"#
    )
    .fetch_all(conn)
    .await
}

/// How many users have a balance below zero.
pub async fn negative_balances(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM balances WHERE balance < 0"#)
        .fetch_one(conn)
        .await
}

/// The completion reward entry with the highest amount in `from ..= to` (the earliest
/// such entry on a tie).
pub async fn most_expensive(
    conn: &mut PgConnection,
    from: Date,
    to: Date,
) -> Result<Option<EntryRow>, sqlx::Error> {
    sqlx::query_as!(
        EntryRow,
        r#"SELECT id, user_id, kind AS "kind: EntryKind", amount AS "amount: Cents", task_id,
                  jira_id, title, description, billing_day, created_at
           FROM entries
           WHERE kind = $3 AND billing_day BETWEEN $1 AND $2
           ORDER BY amount DESC, id LIMIT 1"#,
        from,
        to,
        EntryKind::CompletionReward as EntryKind,
    )
    .fetch_optional(conn)
    .await
}
