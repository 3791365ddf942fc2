//! Accounting's own metrics. The ledger's totals are read from the database (entries are
//! never removed, so a count is a counter and exact across restarts and replicas — take
//! the max over replicas, not the sum); day closes and payout mails are counted by the
//! process that did them, when they commit.

use std::future::Future;
use std::time::Duration;

use popug_metrics::names;
use sqlx::PgPool;
use time::{Date, Time};

use crate::domain::EntryKind;
use crate::store::{billing, ledger, mails};

/// How often the ledger's totals are read.
pub const EVERY: Duration = Duration::from_secs(15);

/// Reads the ledger's totals every `every` until `stop`.
pub async fn record_every(pool: PgPool, every: Duration, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    register();
    loop {
        if let Err(error) = record(&pool).await {
            tracing::debug!(%error, "ledger metrics not updated");
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn record(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let totals = ledger::kind_totals(&mut conn).await?;
    for kind in [
        EntryKind::AssignFee,
        EntryKind::CompletionReward,
        EntryKind::Payout,
    ] {
        // Every kind from the start, at zero until its first entry.
        let (entries, cents) = totals
            .iter()
            .find(|t| t.kind == kind)
            .map_or((0, 0), |t| (t.entries, t.cents));
        let kind = kind.name();
        metrics::counter!(names::LEDGER_ENTRIES, "kind" => kind)
            .absolute(u64::try_from(entries).unwrap_or(0));
        metrics::counter!(names::LEDGER_CENTS, "kind" => kind)
            .absolute(u64::try_from(cents).unwrap_or(0));
    }
    if let Some(day) = billing::last_closed_day(&mut conn).await? {
        closed(day);
    }
    let (queued, sending, retrying, given_up) = mails::unsent(&mut conn).await?;
    for (state, count) in [
        ("queued", queued),
        ("sending", sending),
        ("retrying", retrying),
        ("given_up", given_up),
    ] {
        metrics::gauge!(names::PAYOUT_MAILS_UNSENT, "state" => state).set(count as f64);
    }
    Ok(())
}

/// This process's day closes and mail attempts, at zero from the start (an alert on
/// increase() sees the first).
pub fn register() {
    metrics::counter!(names::DAY_CLOSES).increment(0);
    for status in ["sent", "failed"] {
        metrics::counter!(names::PAYOUT_MAILS, "status" => status).increment(0);
    }
}

/// Sets the last closed billing day.
pub fn closed(day: Date) {
    let start = day.with_time(Time::MIDNIGHT).assume_utc().unix_timestamp();
    metrics::gauge!(names::LAST_CLOSED_DAY).set(start as f64);
}
