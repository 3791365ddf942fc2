//! SQL for users, tasks, the ledger, balances, billing days and payout mails. Functions
//! take a connection so callers choose the transaction.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::domain::Prices;

/// A user as an account event describes it.
#[derive(Debug, Clone)]
pub struct UserSnapshot<'a> {
    pub id: Uuid,
    pub username: &'a str,
    pub name: &'a str,
    pub email: &'a str,
    pub role: &'a str,
    pub active: bool,
    pub version: i64,
}

/// Inserts the user, or overwrites it when `version` is newer than the stored one.
/// Returns whether the row changed.
pub async fn apply_user(
    conn: &mut PgConnection,
    user: &UserSnapshot<'_>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO users (id, username, name, email, role, active, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET
             username = EXCLUDED.username, name = EXCLUDED.name, email = EXCLUDED.email,
             role = EXCLUDED.role, active = EXCLUDED.active, version = EXCLUDED.version,
             updated_at = now()
         WHERE users.version < EXCLUDED.version",
    )
    .bind(user.id)
    .bind(user.username)
    .bind(user.name)
    .bind(user.email)
    .bind(user.role)
    .bind(user.active)
    .bind(user.version)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The open billing day, share-locked until the transaction ends: a day close (which
/// locks it for update) waits for this transaction, and this one for a running close.
pub async fn open_day_shared(conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
    sqlx::query_scalar("SELECT open_day FROM billing_state FOR SHARE")
        .fetch_one(conn)
        .await
}

/// The open billing day, without a lock (for reads).
pub async fn open_day(conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
    sqlx::query_scalar("SELECT open_day FROM billing_state")
        .fetch_one(conn)
        .await
}

/// What an event says about a task's text.
#[derive(Debug, Clone, Copy)]
pub struct TaskText<'a> {
    pub public_id: &'a str,
    pub jira_id: &'a str,
    pub title: &'a str,
    pub description: &'a str,
}

/// One task as a batch of event legs shows it, for [`see_tasks`] and
/// [`note_assignments`]: what the legs, applied in their order, would do to it.
#[derive(Debug, Clone)]
pub struct SeenTask<'a> {
    pub id: Uuid,
    /// Used only if this is the task's first sighting.
    pub prices: Prices,
    /// The first text any leg carries.
    pub text: Option<TaskText<'a>>,
    /// The highest sequence among the legs, and the assignee of the first leg with it.
    pub sequence: i64,
    pub assignee: Uuid,
    /// The highest sequence of a completion that was newer than every leg before it
    /// (only such a completion can mark the task completed).
    pub completion: Option<i64>,
}

/// [`see_task`] for many tasks in one statement (locking their rows in id order):
/// inserts the unseen ones with their drawn prices, fills the text of placeholders.
/// `tasks` must hold each id once. Returns the placeholders it filled (their entries
/// still lack the text: [`fill_entry_texts`]).
pub async fn see_tasks(
    conn: &mut PgConnection,
    tasks: &[SeenTask<'_>],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let n = tasks.len();
    let (mut ids, mut fees, mut rewards, mut known) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut public_ids, mut jira_ids, mut titles, mut descriptions) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for task in tasks {
        ids.push(task.id);
        fees.push(task.prices.fee_cents);
        rewards.push(task.prices.reward_cents);
        known.push(task.text.is_some());
        let text = task.text.as_ref();
        public_ids.push(text.map_or("", |t| t.public_id));
        jira_ids.push(text.map_or("", |t| t.jira_id));
        titles.push(text.map_or("", |t| t.title));
        descriptions.push(text.map_or("", |t| t.description));
    }
    sqlx::query_as::<_, (Uuid, bool)>(
        "INSERT INTO tasks (id, fee_cents, reward_cents, text_known, public_id, jira_id, title, description)
         SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::boolean[], $5::text[],
                              $6::text[], $7::text[], $8::text[])
         ORDER BY 1
         ON CONFLICT (id) DO UPDATE SET
             text_known = true, public_id = EXCLUDED.public_id, jira_id = EXCLUDED.jira_id,
             title = EXCLUDED.title, description = EXCLUDED.description
         WHERE NOT tasks.text_known AND EXCLUDED.text_known
         RETURNING id, xmax <> 0 AS filled",
    )
    .bind(&ids)
    .bind(&fees)
    .bind(&rewards)
    .bind(&known)
    .bind(&public_ids)
    .bind(&jira_ids)
    .bind(&titles)
    .bind(&descriptions)
    .fetch_all(&mut *conn)
    .await
    .map(|rows| {
        // Inserted rows have no xmax; updated ones (filled placeholders) have ours.
        rows.into_iter()
            .filter_map(|(id, filled)| filled.then_some(id))
            .collect()
    })
}

/// Gives the entries still without text of `tasks` their task's text, now known (what
/// [`see_task`] does when it fills a placeholder).
pub async fn fill_entry_texts(
    conn: &mut PgConnection,
    tasks: &[(Uuid, TaskText<'_>)],
) -> Result<(), sqlx::Error> {
    if tasks.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = tasks.iter().map(|(id, _)| *id).collect();
    let jira_ids: Vec<&str> = tasks.iter().map(|(_, t)| t.jira_id).collect();
    let titles: Vec<&str> = tasks.iter().map(|(_, t)| t.title).collect();
    let descriptions: Vec<&str> = tasks.iter().map(|(_, t)| t.description).collect();
    sqlx::query(
        "UPDATE entries e SET text_known = true, jira_id = t.jira_id, title = t.title,
                description = t.description
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
              AS t(id, jira_id, title, description)
         WHERE e.task_id = ANY($1) AND e.task_id = t.id AND NOT e.text_known",
    )
    .bind(&ids)
    .bind(&jira_ids)
    .bind(&titles)
    .bind(&descriptions)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`note_assignment`] for many tasks in one statement, with the outcome of applying
/// each task's legs in order. Call after [`see_tasks`] (the rows are locked then).
pub async fn note_assignments(
    conn: &mut PgConnection,
    tasks: &[SeenTask<'_>],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    let sequences: Vec<i64> = tasks.iter().map(|t| t.sequence).collect();
    let assignees: Vec<Uuid> = tasks.iter().map(|t| t.assignee).collect();
    let completions: Vec<Option<i64>> = tasks.iter().map(|t| t.completion).collect();
    sqlx::query(
        "UPDATE tasks t SET assignee_id = i.assignee, sequence = i.sequence,
                completed = t.completed OR COALESCE(i.completion > t.sequence, false)
         FROM UNNEST($1::uuid[], $2::bigint[], $3::uuid[], $4::bigint[])
              AS i(id, sequence, assignee, completion)
         WHERE t.id = i.id AND t.sequence < i.sequence",
    )
    .bind(&ids)
    .bind(&sequences)
    .bind(&assignees)
    .bind(&completions)
    .execute(conn)
    .await?;
    Ok(())
}

/// One fee or reward to write with [`add_entries`]; the amount and the text come from
/// the task as stored.
#[derive(Debug, Clone, Copy)]
pub struct EntryLeg {
    pub event_id: Uuid,
    pub task_id: Uuid,
    pub user_id: Uuid,
    pub kind: Kind,
}

/// [`add_entry`] for many legs in one statement: writes, in order, the entry of every leg
/// that has none yet (a redelivered leg is skipped), at its task's price and with its
/// task's text, and moves the balances (locked in user order). Returns the entries
/// written, in id order, each with the balance right after it.
pub async fn add_entries(
    conn: &mut PgConnection,
    legs: &[EntryLeg],
    billing_day: Date,
) -> Result<Vec<(EntryRow, i64)>, sqlx::Error> {
    if legs.is_empty() {
        return Ok(Vec::new());
    }
    let events: Vec<Uuid> = legs.iter().map(|l| l.event_id).collect();
    let tasks: Vec<Uuid> = legs.iter().map(|l| l.task_id).collect();
    let users: Vec<Uuid> = legs.iter().map(|l| l.user_id).collect();
    let kinds: Vec<&str> = legs.iter().map(|l| l.kind.as_str()).collect();
    let rows: Vec<AppliedRow> = sqlx::query_as(&format!(
        "WITH legs AS (
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[])
                 WITH ORDINALITY AS l(event_id, task_id, user_id, kind, n)
         ), written AS (
             INSERT INTO entries (user_id, kind, amount, event_id, task_id, text_known, jira_id,
                                  title, description, billing_day)
             SELECT l.user_id, l.kind,
                    CASE l.kind WHEN 'assign_fee' THEN -t.fee_cents ELSE t.reward_cents END,
                    l.event_id, l.task_id, t.text_known, t.jira_id, t.title, t.description, $5
             FROM legs l JOIN tasks t ON t.id = l.task_id
             ORDER BY l.n
             ON CONFLICT DO NOTHING
             RETURNING {ENTRY_COLUMNS}
         ), moved AS (
             INSERT INTO balances (user_id, balance)
             SELECT user_id, sum(amount)::bigint FROM written GROUP BY user_id ORDER BY user_id
             ON CONFLICT (user_id) DO UPDATE SET balance = balances.balance + EXCLUDED.balance
             RETURNING user_id, balance
         )
         SELECT written.*, moved.balance FROM written JOIN moved USING (user_id)
         ORDER BY written.id"
    ))
    .bind(&events)
    .bind(&tasks)
    .bind(&users)
    .bind(&kinds)
    .bind(billing_day)
    .fetch_all(conn)
    .await?;
    // `balance` is each user's balance after all of them; walk back to the balance
    // right after each entry.
    let mut after: std::collections::HashMap<Uuid, i64> = std::collections::HashMap::new();
    let mut out: Vec<(EntryRow, i64)> = Vec::with_capacity(rows.len());
    for row in rows.into_iter().rev() {
        let left = after.entry(row.entry.user_id).or_insert(row.balance);
        let balance = *left;
        *left -= row.entry.amount;
        out.push((row.entry, balance));
    }
    out.reverse();
    Ok(out)
}

#[derive(sqlx::FromRow)]
struct AppliedRow {
    #[sqlx(flatten)]
    entry: EntryRow,
    balance: i64,
}

/// Kind of a ledger entry, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    AssignFee,
    CompletionReward,
    Payout,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AssignFee => "assign_fee",
            Kind::CompletionReward => "completion_reward",
            Kind::Payout => "payout",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        [Kind::AssignFee, Kind::CompletionReward, Kind::Payout]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// One row of `entries`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EntryRow {
    pub id: i64,
    pub user_id: Uuid,
    pub kind: String,
    pub amount: i64,
    pub task_id: Option<Uuid>,
    pub jira_id: String,
    pub title: String,
    pub description: String,
    pub billing_day: Date,
    pub created_at: OffsetDateTime,
}

const ENTRY_COLUMNS: &str =
    "id, user_id, kind, amount, task_id, jira_id, title, description, billing_day, created_at";

pub async fn balance(conn: &mut PgConnection, user: Uuid) -> Result<i64, sqlx::Error> {
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM balances WHERE user_id = $1")
            .bind(user)
            .fetch_optional(conn)
            .await?;
    Ok(balance.unwrap_or(0))
}

/// A user's entries of one billing day after entry `after`, oldest first.
pub async fn entries_page(
    conn: &mut PgConnection,
    user: Uuid,
    day: Date,
    after: i64,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries
         WHERE user_id = $1 AND billing_day = $2 AND id > $3
         ORDER BY id LIMIT $4"
    ))
    .bind(user)
    .bind(day)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Fees debited and rewards credited per billing day in `from ..= to` (both positive),
/// only the days that have any.
pub async fn fees_and_rewards(
    conn: &mut PgConnection,
    from: Date,
    to: Date,
) -> Result<Vec<(Date, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT billing_day,
                COALESCE(-sum(amount) FILTER (WHERE kind = 'assign_fee'), 0)::bigint,
                COALESCE(sum(amount) FILTER (WHERE kind = 'completion_reward'), 0)::bigint
         FROM entries
         WHERE billing_day BETWEEN $1 AND $2 AND kind <> 'payout'
         GROUP BY billing_day ORDER BY billing_day",
    )
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}

/// How many users have a balance below zero.
pub async fn negative_balances(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM balances WHERE balance < 0")
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
    sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries
         WHERE kind = 'completion_reward' AND billing_day BETWEEN $1 AND $2
         ORDER BY amount DESC, id LIMIT 1"
    ))
    .bind(from)
    .bind(to)
    .fetch_optional(conn)
    .await
}

/// One payout with its mail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PayoutRow {
    pub entry_id: i64,
    pub user_id: Uuid,
    pub amount_cents: i64,
    pub billing_day: Date,
    pub status: String,
    pub attempts: i32,
    pub created_at: OffsetDateTime,
    pub sent_at: Option<OffsetDateTime>,
}

/// A user's payouts before entry `before`, newest first.
pub async fn payouts_page(
    conn: &mut PgConnection,
    user: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<PayoutRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT entry_id, user_id, amount_cents, billing_day, status, attempts, created_at, sent_at
         FROM payout_mails
         WHERE user_id = $1 AND ($2::bigint IS NULL OR entry_id < $2)
         ORDER BY entry_id DESC LIMIT $3",
    )
    .bind(user)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The open billing day, locked for update: one day close at a time, across replicas.
pub async fn lock_open_day(conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
    sqlx::query_scalar("SELECT open_day FROM billing_state FOR UPDATE")
        .fetch_one(conn)
        .await
}

pub async fn set_open_day(conn: &mut PgConnection, day: Date) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE billing_state SET open_day = $1")
        .bind(day)
        .execute(conn)
        .await?;
    Ok(())
}

/// A closed day's record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClosedDay {
    pub day: Date,
    pub payouts: i64,
    pub paid_cents: i64,
    pub closed_at: OffsetDateTime,
}

pub async fn closed_day(
    conn: &mut PgConnection,
    day: Date,
) -> Result<Option<ClosedDay>, sqlx::Error> {
    sqlx::query_as("SELECT day, payouts, paid_cents, closed_at FROM billing_days WHERE day = $1")
        .bind(day)
        .fetch_optional(conn)
        .await
}

/// A payout written by a day close.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Paid {
    pub id: i64,
    pub user_id: Uuid,
    pub amount: i64,
    pub created_at: OffsetDateTime,
}

/// Pays out every positive balance for `day` in one statement: a payout entry bringing
/// it to zero, the balance zeroed, a mail row (status new). Zero and negative balances
/// stay as they are. Returns the payouts (amounts positive).
pub async fn pay_out(conn: &mut PgConnection, day: Date) -> Result<Vec<Paid>, sqlx::Error> {
    sqlx::query_as(
        "WITH old AS (
             SELECT user_id, balance FROM balances WHERE balance > 0 FOR UPDATE
         ), zeroed AS (
             UPDATE balances b SET balance = 0 FROM old
             WHERE b.user_id = old.user_id
             RETURNING b.user_id, old.balance
         ), paid AS (
             INSERT INTO entries (user_id, kind, amount, billing_day)
             SELECT user_id, 'payout', -balance, $1 FROM zeroed
             RETURNING id, user_id, amount, created_at
         ), mails AS (
             INSERT INTO payout_mails (entry_id, user_id, amount_cents, billing_day)
             SELECT id, user_id, -amount, $1 FROM paid
         )
         SELECT id, user_id, -amount AS amount, created_at FROM paid ORDER BY id",
    )
    .bind(day)
    .fetch_all(conn)
    .await
}

pub async fn record_closed_day(
    conn: &mut PgConnection,
    day: Date,
    payouts: i64,
    paid_cents: i64,
) -> Result<ClosedDay, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO billing_days (day, payouts, paid_cents) VALUES ($1, $2, $3)
         RETURNING day, payouts, paid_cents, closed_at",
    )
    .bind(day)
    .bind(payouts)
    .bind(paid_cents)
    .fetch_one(conn)
    .await
}

/// A mail claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedMail {
    pub entry_id: i64,
    pub user_id: Uuid,
    pub amount_cents: i64,
    pub billing_day: Date,
    pub attempts: i32,
    pub email: String,
    pub name: String,
}

/// Moves up to `limit` due mails (new, or failed with a retry due, of users whose e-mail
/// is known) to `sending` and returns them. Concurrent mailers skip each other's rows.
pub async fn claim_mails(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<ClaimedMail>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT m.entry_id FROM payout_mails m
             WHERE m.status IN ('new', 'failed') AND m.next_attempt_at <= now()
               AND EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id AND u.email <> '')
             ORDER BY m.next_attempt_at LIMIT $1
             FOR UPDATE SKIP LOCKED
         )
         UPDATE payout_mails m SET status = 'sending', attempts = m.attempts + 1
         FROM due, users u
         WHERE m.entry_id = due.entry_id AND u.id = m.user_id
           AND m.status IN ('new', 'failed')
         RETURNING m.entry_id, m.user_id, m.amount_cents, m.billing_day, m.attempts,
                   u.email, u.name",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Marks a claimed mail sent; false when it was not in `sending` (nothing changed).
pub async fn mail_sent(
    conn: &mut PgConnection,
    entry_id: i64,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE payout_mails SET status = 'sent', sent_at = now(), next_attempt_at = NULL,
                last_error = NULL
         WHERE entry_id = $1 AND status = 'sending' RETURNING sent_at",
    )
    .bind(entry_id)
    .fetch_optional(conn)
    .await
    .map(Option::flatten)
}

/// Marks a claimed mail failed; `retry_in` `None` gives up on it.
pub async fn mail_failed(
    conn: &mut PgConnection,
    entry_id: i64,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE payout_mails SET status = 'failed', last_error = $2,
                next_attempt_at = CASE WHEN $3::double precision IS NULL THEN NULL
                                       ELSE now() + make_interval(secs => $3) END
         WHERE entry_id = $1 AND status = 'sending'",
    )
    .bind(entry_id)
    .bind(error)
    .bind(retry_in.map(|d| d.as_secs_f64()))
    .execute(conn)
    .await?;
    Ok(())
}

pub fn timestamp(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        // Always in 0..1e9.
        nanos: at.nanosecond() as i32,
    }
}
