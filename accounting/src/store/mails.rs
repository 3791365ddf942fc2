//! Payout e-mails: one per payout entry, `new → sending → sent`, or `failed` and retried
//! while a next attempt is set. A mail left in `sending` is never claimed again.

use sqlx::PgConnection;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::domain::{Cents, MailStatus};

/// One payout with its mail.
#[derive(Debug, Clone)]
pub struct PayoutRow {
    pub entry_id: i64,
    pub user_id: Uuid,
    /// What was paid (positive).
    pub amount: Cents,
    pub billing_day: Date,
    pub status: MailStatus,
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
    sqlx::query_as!(
        PayoutRow,
        r#"SELECT entry_id, user_id, amount_cents AS "amount: Cents", billing_day,
                  status AS "status: MailStatus", attempts, created_at, sent_at
           FROM payout_mails
           WHERE user_id = $1 AND ($2::bigint IS NULL OR entry_id < $2)
           ORDER BY entry_id DESC LIMIT $3"#,
        user,
        before,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// A mail claimed for sending.
#[derive(Debug, Clone)]
pub struct ClaimedMail {
    pub entry_id: i64,
    pub user_id: Uuid,
    pub amount: Cents,
    pub billing_day: Date,
    pub attempts: i32,
    pub email: String,
    pub name: String,
}

/// Moves up to `limit` due mails (new, or failed with a retry due, of users whose e-mail
/// is known) to `sending` and returns them. Concurrent mailers skip each other's rows.
pub async fn claim(conn: &mut PgConnection, limit: i64) -> Result<Vec<ClaimedMail>, sqlx::Error> {
    sqlx::query_as!(
        ClaimedMail,
        r#"WITH due AS (
               SELECT m.entry_id FROM payout_mails m
               WHERE m.status IN ($2, $3) AND m.next_attempt_at <= now()
                 AND EXISTS (SELECT 1 FROM users u WHERE u.id = m.user_id AND u.email <> '')
               ORDER BY m.next_attempt_at LIMIT $1
               FOR UPDATE SKIP LOCKED
           )
           UPDATE payout_mails m SET status = $4, attempts = m.attempts + 1
           FROM due, users u
           WHERE m.entry_id = due.entry_id AND u.id = m.user_id
             AND m.status IN ($2, $3)
           RETURNING m.entry_id, m.user_id, m.amount_cents AS "amount: Cents", m.billing_day,
                     m.attempts, u.email, u.name"#,
        limit,
        MailStatus::New as MailStatus,
        MailStatus::Failed as MailStatus,
        MailStatus::Sending as MailStatus,
    )
    .fetch_all(conn)
    .await
}

/// Marks a claimed mail sent and returns when; `None` when it was not in `sending`
/// (nothing changed).
pub async fn mark_sent(
    conn: &mut PgConnection,
    entry_id: i64,
) -> Result<Option<OffsetDateTime>, sqlx::Error> {
    let sent_at = sqlx::query_scalar!(
        "UPDATE payout_mails SET status = $2, sent_at = now(), next_attempt_at = NULL,
                last_error = NULL
         WHERE entry_id = $1 AND status = $3 RETURNING sent_at",
        entry_id,
        MailStatus::Sent as MailStatus,
        MailStatus::Sending as MailStatus,
    )
    .fetch_optional(conn)
    .await?;
    Ok(sent_at.flatten())
}

/// Marks a claimed mail failed; `retry_in` `None` gives up on it.
pub async fn mark_failed(
    conn: &mut PgConnection,
    entry_id: i64,
    error: &str,
    retry_in: Option<std::time::Duration>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE payout_mails SET status = $4, last_error = $2,
                next_attempt_at = CASE WHEN $3::double precision IS NULL THEN NULL
                                       ELSE now() + make_interval(secs => $3) END
         WHERE entry_id = $1 AND status = $5",
        entry_id,
        error,
        retry_in.map(|d| d.as_secs_f64()),
        MailStatus::Failed as MailStatus,
        MailStatus::Sending as MailStatus,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Payout mails not sent, by state: (queued, sending, retrying, given up).
pub async fn unsent(conn: &mut PgConnection) -> Result<(i64, i64, i64, i64), sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT count(*) FILTER (WHERE status = 'new') AS "queued!",
                  count(*) FILTER (WHERE status = 'sending') AS "sending!",
                  count(*) FILTER (WHERE status = 'failed' AND next_attempt_at IS NOT NULL)
                      AS "retrying!",
                  count(*) FILTER (WHERE status = 'failed' AND next_attempt_at IS NULL)
                      AS "given_up!"
           FROM payout_mails WHERE status <> 'sent'"#
    )
    .fetch_one(conn)
    .await?;
    Ok((row.queued, row.sending, row.retrying, row.given_up))
}
