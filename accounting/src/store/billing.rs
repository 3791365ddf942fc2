//! Billing days: the one-row open day that every ledger writer share-locks and the day
//! close locks for update, the record of every closed day, and the payouts a close makes.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::domain::{Cents, EntryKind};

/// Opens the first billing day, `today`, unless a day is open already (every start; the
/// first one on an empty database decides it).
pub async fn init_open_day(conn: &mut PgConnection, today: Date) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO billing_state (open_day) VALUES ($1) ON CONFLICT (id) DO NOTHING",
        today,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The open billing day, share-locked until the transaction ends: a day close (which
/// locks it for update) waits for this transaction, and this one for a running close.
pub async fn open_day_shared(conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
    sqlx::query_scalar!("SELECT open_day FROM billing_state FOR SHARE")
        .fetch_one(conn)
        .await
}

/// The open billing day, without a lock (for reads).
pub async fn open_day(conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
    sqlx::query_scalar!("SELECT open_day FROM billing_state")
        .fetch_one(conn)
        .await
}

/// The open billing day, locked for update: one day close at a time, across replicas.
pub async fn lock_open_day(conn: &mut PgConnection) -> Result<Date, sqlx::Error> {
    sqlx::query_scalar!("SELECT open_day FROM billing_state FOR UPDATE")
        .fetch_one(conn)
        .await
}

pub async fn set_open_day(conn: &mut PgConnection, day: Date) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE billing_state SET open_day = $1", day)
        .execute(conn)
        .await?;
    Ok(())
}

/// A closed day's record.
#[derive(Debug, Clone)]
pub struct ClosedDay {
    pub day: Date,
    pub payouts: i64,
    pub paid: Cents,
    pub closed_at: OffsetDateTime,
}

pub async fn closed_day(
    conn: &mut PgConnection,
    day: Date,
) -> Result<Option<ClosedDay>, sqlx::Error> {
    sqlx::query_as!(
        ClosedDay,
        r#"SELECT day, payouts, paid_cents AS "paid: Cents", closed_at
           FROM billing_days WHERE day = $1"#,
        day,
    )
    .fetch_optional(conn)
    .await
}

/// The last billing day closed, if any.
pub async fn last_closed_day(conn: &mut PgConnection) -> Result<Option<Date>, sqlx::Error> {
    sqlx::query_scalar!("SELECT max(day) FROM billing_days")
        .fetch_one(conn)
        .await
}

/// Records `day` as closed; the primary key makes a second close of it fail.
pub async fn record_closed_day(
    conn: &mut PgConnection,
    day: Date,
    payouts: i64,
    paid: Cents,
) -> Result<ClosedDay, sqlx::Error> {
    sqlx::query_as!(
        ClosedDay,
        r#"INSERT INTO billing_days (day, payouts, paid_cents) VALUES ($1, $2, $3)
           RETURNING day, payouts, paid_cents AS "paid: Cents", closed_at"#,
        day,
        payouts,
        paid.get(),
    )
    .fetch_one(conn)
    .await
}

/// Every positive balance, locked for update until the transaction ends.
pub async fn positive_balances(conn: &mut PgConnection) -> Result<Vec<(Uuid, Cents)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT user_id, balance AS "balance: Cents" FROM balances
           WHERE balance > 0 ORDER BY user_id FOR UPDATE"#
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.user_id, r.balance)).collect())
}

/// A payout written by a day close.
#[derive(Debug, Clone)]
pub struct Paid {
    pub id: i64,
    pub user_id: Uuid,
    /// The payout entry (negative: it debits the balance to zero).
    pub amount: Cents,
    pub created_at: OffsetDateTime,
}

/// Writes, in one statement, each payout of `day` (user and payout entry amount): the
/// payout entry, the balance moved by it, and a payout mail (status new) for the amount
/// paid. Returns the entries in id order.
pub async fn pay_out(
    conn: &mut PgConnection,
    day: Date,
    payouts: &[(Uuid, Cents)],
) -> Result<Vec<Paid>, sqlx::Error> {
    let users: Vec<Uuid> = payouts.iter().map(|(user, _)| *user).collect();
    let amounts: Vec<i64> = payouts.iter().map(|(_, amount)| amount.get()).collect();
    let paid: Vec<i64> = payouts.iter().map(|(_, a)| a.magnitude().get()).collect();
    sqlx::query_as!(
        Paid,
        r#"WITH payouts AS (
               SELECT * FROM UNNEST($2::uuid[], $3::bigint[], $4::bigint[])
                   AS p(user_id, amount, paid)
           ), entries AS (
               INSERT INTO entries (user_id, kind, amount, billing_day)
               SELECT user_id, $5, amount, $1 FROM payouts ORDER BY user_id
               RETURNING id, user_id, amount, created_at
           ), moved AS (
               UPDATE balances b SET balance = b.balance + p.amount
               FROM payouts p WHERE b.user_id = p.user_id
           ), mails AS (
               INSERT INTO payout_mails (entry_id, user_id, amount_cents, billing_day)
               SELECT e.id, e.user_id, p.paid, $1 FROM entries e JOIN payouts p USING (user_id)
           )
           SELECT id AS "id!", user_id AS "user_id!", amount AS "amount!: Cents",
                  created_at AS "created_at!"
           FROM entries ORDER BY id"#,
        day,
        &users,
        &amounts,
        &paid,
        EntryKind::Payout as EntryKind,
    )
    .fetch_all(conn)
    .await
}
