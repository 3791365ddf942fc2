//! What Accounting answers and does, independent of gRPC: balances, the audit log,
//! management earnings, payouts, analytics and the day close, with the access rules of
//! REQUIREMENTS §2.

use std::time::Duration;

use popug_auth::{Caller, Permission};
use popug_eventbus::{Outbox, catalog};
use popug_proto::popug::accounting::v1 as pb;
use sqlx::PgPool;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::domain::{self, Period};
use crate::error::Error;
use crate::events::{PRODUCER, entry_applied};
use crate::store::{self, EntryRow, PayoutRow, timestamp};

/// Days a per-day earnings query may span.
pub const MAX_RANGE_DAYS: i64 = 366;

/// The service's state, shared by the gRPC handlers and the workers.
pub struct Accounting {
    pub pool: PgPool,
    pub outbox: Outbox,
    /// Where a billing day ends after midnight UTC.
    pub cutoff: Duration,
}

/// Management earnings of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earnings {
    pub day: Date,
    pub fees: i64,
    pub rewards: i64,
}

impl Earnings {
    /// −(fees debited + rewards credited) = fees collected − rewards paid.
    pub fn earnings(&self) -> i64 {
        self.fees - self.rewards
    }
}

/// The outcome of a day close.
#[derive(Debug, Clone)]
pub struct Closed {
    pub day: Date,
    /// False when the day had been closed before.
    pub closed_now: bool,
    pub payouts: i64,
    pub paid_cents: i64,
}

impl Accounting {
    /// The calendar day it is now, under the configured cutoff.
    pub fn today(&self) -> Date {
        domain::calendar_day(OffsetDateTime::now_utc(), self.cutoff)
    }

    /// The billing day entries go to now.
    pub async fn current_day(&self) -> Result<Date, Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(store::open_day(&mut conn).await?.max(self.today()))
    }

    /// Whose data the caller asks for: themselves when `user` is empty; anyone else only
    /// with accounting.read_all.
    pub fn subject(caller: &Caller, user: &str) -> Result<Uuid, Error> {
        let id = if user.is_empty() {
            caller.id
        } else {
            domain::parse_id("user_id", user)?
        };
        if id != caller.id && !caller.has(Permission::AccountingReadAll) {
            return Err(Error::PermissionDenied(
                "requires permission accounting.read_all to see another user's accounts".into(),
            ));
        }
        if id == caller.id
            && !caller.has(Permission::AccountingReadOwn)
            && !caller.has(Permission::AccountingReadAll)
        {
            return Err(Error::PermissionDenied(
                "requires permission accounting.read_own".into(),
            ));
        }
        Ok(id)
    }

    pub async fn balance(&self, user: Uuid) -> Result<(i64, Date), Error> {
        let mut conn = self.pool.acquire().await?;
        let balance = store::balance(&mut conn, user).await?;
        let day = store::open_day(&mut conn).await?.max(self.today());
        Ok((balance, day))
    }

    /// A page of a user's entries of one day; the token is the last entry id.
    pub async fn entries(
        &self,
        user: Uuid,
        day: Option<Date>,
        after: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<EntryRow>, String), Error> {
        let day = match day {
            Some(day) => day,
            None => self.current_day().await?,
        };
        let mut conn = self.pool.acquire().await?;
        let rows = store::entries_page(&mut conn, user, day, after.unwrap_or(0), limit).await?;
        let next = match rows.last() {
            Some(last) if rows.len() as i64 == limit => last.id.to_string(),
            _ => String::new(),
        };
        Ok((rows, next))
    }

    /// Earnings of every day in `from ..= to` (zero for days without entries).
    pub async fn earnings(&self, from: Date, to: Date) -> Result<Vec<Earnings>, Error> {
        let mut conn = self.pool.acquire().await?;
        let rows = store::fees_and_rewards(&mut conn, from, to).await?;
        let mut out = Vec::new();
        let mut day = from;
        let mut rows = rows.into_iter().peekable();
        while day <= to {
            let (fees, rewards) = match rows.peek() {
                Some((d, f, r)) if *d == day => {
                    let found = (*f, *r);
                    rows.next();
                    found
                }
                _ => (0, 0),
            };
            out.push(Earnings { day, fees, rewards });
            match day.next_day() {
                Some(next) => day = next,
                None => break,
            }
        }
        Ok(out)
    }

    pub async fn payouts(
        &self,
        user: Uuid,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<PayoutRow>, String), Error> {
        let mut conn = self.pool.acquire().await?;
        let rows = store::payouts_page(&mut conn, user, before, limit).await?;
        let next = match rows.last() {
            Some(last) if rows.len() as i64 == limit => last.entry_id.to_string(),
            _ => String::new(),
        };
        Ok((rows, next))
    }

    /// Today's earnings and how many popugs are below zero.
    pub async fn dashboard(&self) -> Result<(Earnings, i64), Error> {
        let day = self.current_day().await?;
        let today = self
            .earnings(day, day)
            .await?
            .into_iter()
            .next()
            .unwrap_or(Earnings {
                day,
                fees: 0,
                rewards: 0,
            });
        let mut conn = self.pool.acquire().await?;
        let negative = store::negative_balances(&mut conn).await?;
        Ok((today, negative))
    }

    pub async fn most_expensive(&self, period: Period) -> Result<Option<EntryRow>, Error> {
        let (from, to) = period.range();
        let mut conn = self.pool.acquire().await?;
        Ok(store::most_expensive(&mut conn, from, to).await?)
    }

    /// Closes every open billing day up to `day` (the open day when `None`), in one
    /// transaction under the billing-state lock, so each day closes exactly once however
    /// many replicas try. The first day closed pays out every positive balance.
    pub async fn close_day(&self, day: Option<Date>) -> Result<Closed, Error> {
        let mut tx = self.pool.begin().await?;
        let open = store::lock_open_day(&mut tx).await?;
        // Empty: the open day, or today when today is closed already (then a no-op).
        let day = day.unwrap_or_else(|| open.min(self.today()));
        if day < open {
            let record = store::closed_day(&mut tx, day).await?;
            return Ok(Closed {
                day,
                closed_now: false,
                payouts: record.as_ref().map_or(0, |r| r.payouts),
                paid_cents: record.as_ref().map_or(0, |r| r.paid_cents),
            });
        }
        if day > self.today() {
            return Err(Error::FailedPrecondition(format!(
                "billing day {} has not begun",
                domain::format_day(day)
            )));
        }
        let mut closing = open;
        let mut payouts = 0;
        let mut paid_cents = 0;
        let mut events = Vec::new();
        while closing <= day {
            let paid = store::pay_out(&mut tx, closing).await?;
            let total: i64 = paid.iter().map(|p| p.amount).sum();
            let record =
                store::record_closed_day(&mut tx, closing, paid.len() as i64, total).await?;
            for p in &paid {
                let entry = EntryRow {
                    id: p.id,
                    user_id: p.user_id,
                    kind: "payout".into(),
                    amount: -p.amount,
                    task_id: None,
                    jira_id: String::new(),
                    title: String::new(),
                    description: String::new(),
                    billing_day: closing,
                    created_at: p.created_at,
                };
                events.push(catalog::envelope(
                    PRODUCER,
                    &p.user_id.to_string(),
                    &entry_applied(&entry, 0),
                ));
            }
            events.push(catalog::envelope(
                PRODUCER,
                &domain::format_day(closing),
                &pb::DayClosed {
                    billing_day: domain::format_day(closing),
                    payouts: record.payouts,
                    paid_cents: record.paid_cents,
                    closed_at: Some(timestamp(record.closed_at)),
                },
            ));
            tracing::info!(day = %domain::format_day(closing), payouts = record.payouts, paid_cents = record.paid_cents, "billing day closed");
            payouts += record.payouts;
            paid_cents += record.paid_cents;
            match closing.next_day() {
                Some(next) => closing = next,
                None => break,
            }
        }
        store::set_open_day(&mut tx, closing).await?;
        for batch in events.chunks(500) {
            self.outbox.add_envelopes(&mut tx, batch).await?;
        }
        tx.commit().await?;
        self.outbox.notify();
        Ok(Closed {
            day,
            closed_now: true,
            payouts,
            paid_cents,
        })
    }

    /// Closes every day before today that is still open (the scheduler's step).
    pub async fn close_due(&self) -> Result<Option<Closed>, Error> {
        let yesterday = self.today().previous_day();
        let open = {
            let mut conn = self.pool.acquire().await?;
            store::open_day(&mut conn).await?
        };
        match yesterday {
            Some(day) if open <= day => self.close_day(Some(day)).await.map(Some),
            _ => Ok(None),
        }
    }

    /// Runs [`Accounting::close_due`] every `interval` until `shutdown`.
    pub async fn run_scheduler(
        self: std::sync::Arc<Self>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            match self.close_due().await {
                Ok(Some(closed)) => {
                    tracing::info!(day = %domain::format_day(closed.day), payouts = closed.payouts, "scheduled day close")
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "scheduled day close failed"),
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
