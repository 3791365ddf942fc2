//! What Accounting answers and does, independent of gRPC: balances, the audit log,
//! management earnings, payouts, prices, analytics and the day close. Who may call each
//! RPC is decided before it (the policies in `proto/`); the row-level rule — one's own
//! ledger, anyone's with `accounting.read_all` — is [`Accounting::subject`].

use std::collections::HashMap;
use std::time::Duration;

use popug_auth::{Caller, Permission};
use popug_eventbus::Outbox;
use popug_proto::popug::accounting::v1 as pb;
use sqlx::PgPool;
use time::Date;
use uuid::Uuid;

use crate::domain::{BillingClock, Cents, EntryKind, Period, Prices, format_day};
use crate::error::Error;
use crate::events::{PRODUCER, entry_applied};
use crate::store::billing::{self, ClosedDay};
use crate::store::ledger::{self, EntryRow};
use crate::store::mails::{self, PayoutRow};
use crate::store::{tasks, users};

/// Days a per-day earnings query may span.
pub const MAX_RANGE_DAYS: i64 = 366;

/// The service's state, shared by the gRPC handlers and the workers.
pub struct Accounting {
    pub pool: PgPool,
    pub outbox: Outbox,
    pub clock: BillingClock,
}

/// Management earnings of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Earnings {
    pub day: Date,
    /// Fees as booked (debits: zero or negative).
    pub fees: Cents,
    /// Rewards as booked (credits: zero or positive).
    pub rewards: Cents,
}

impl Earnings {
    /// −(fees debited + rewards credited) = fees collected − rewards paid.
    pub fn management(&self) -> Cents {
        -(self.fees + self.rewards)
    }
}

/// The outcome of a day close.
#[derive(Debug, Clone)]
pub struct Closed {
    pub day: Date,
    /// False when the day had been closed before.
    pub closed_now: bool,
    pub payouts: i64,
    pub paid: Cents,
}

impl Accounting {
    /// Today's billing day (see [`BillingClock::billing_day`]).
    pub async fn current_day(&self) -> Result<Date, Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(self.clock.billing_day(billing::open_day(&mut conn).await?))
    }

    /// Whose ledger the caller asks for: their own when `user` is empty; anyone else's
    /// only with `accounting.read_all`, and only someone Accounting knows (NOT_FOUND
    /// otherwise). The caller's own is always there (zero before their first entry).
    pub async fn subject(&self, caller: &Caller, user: &str) -> Result<Uuid, Error> {
        let id = if user.is_empty() {
            caller.id
        } else {
            popug_errors::input::id("user_id", user)?
        };
        if id == caller.id {
            return Ok(id);
        }
        if !caller.has(Permission::AccountingReadAll) {
            return Err(Error::PermissionDenied(
                "requires permission accounting.read_all to see another user's accounts".into(),
            ));
        }
        let mut conn = self.pool.acquire().await?;
        if users::known(&mut conn, id).await? {
            Ok(id)
        } else {
            Err(Error::NotFound("user"))
        }
    }

    /// A user's balance and today's billing day.
    pub async fn balance(&self, user: Uuid) -> Result<(Cents, Date), Error> {
        let mut conn = self.pool.acquire().await?;
        let balance = ledger::balance(&mut conn, user).await?.unwrap_or_default();
        let day = self.clock.billing_day(billing::open_day(&mut conn).await?);
        Ok((balance, day))
    }

    /// A page of a user's entries of one day (today's by default); the token is the last
    /// entry id.
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
        let rows = ledger::entries_page(&mut conn, user, day, after.unwrap_or(0), limit).await?;
        let next = match rows.last() {
            Some(last) if rows.len() as i64 == limit => last.id.to_string(),
            _ => String::new(),
        };
        Ok((rows, next))
    }

    /// Earnings of every day in `from ..= to` (zero for days without entries).
    pub async fn earnings(&self, from: Date, to: Date) -> Result<Vec<Earnings>, Error> {
        let mut conn = self.pool.acquire().await?;
        let mut totals = ledger::day_totals(&mut conn, from, to)
            .await?
            .into_iter()
            .peekable();
        let mut out = Vec::new();
        let mut day = from;
        while day <= to {
            let mut earnings = Earnings {
                day,
                fees: Cents::ZERO,
                rewards: Cents::ZERO,
            };
            if let Some(t) = totals.next_if(|t| t.day == day) {
                earnings.fees = t.fees;
                earnings.rewards = t.rewards;
            }
            out.push(earnings);
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
        let rows = mails::payouts_page(&mut conn, user, before, limit).await?;
        let next = match rows.last() {
            Some(last) if rows.len() as i64 == limit => last.entry_id.to_string(),
            _ => String::new(),
        };
        Ok((rows, next))
    }

    /// The prices of the tasks among `ids` that Accounting has seen.
    pub async fn prices(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Prices>, Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(tasks::prices(&mut conn, ids).await?)
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
                fees: Cents::ZERO,
                rewards: Cents::ZERO,
            });
        let mut conn = self.pool.acquire().await?;
        let negative = ledger::negative_balances(&mut conn).await?;
        Ok((today, negative))
    }

    pub async fn most_expensive(&self, period: Period) -> Result<Option<EntryRow>, Error> {
        let (from, to) = period.range();
        let mut conn = self.pool.acquire().await?;
        Ok(ledger::most_expensive(&mut conn, from, to).await?)
    }

    /// Closes every open billing day up to `day` (the open day when `None`), in one
    /// transaction under the billing-state lock, so each day closes exactly once however
    /// many replicas try. The first day closed pays out every positive balance.
    pub async fn close_day(&self, day: Option<Date>) -> Result<Closed, Error> {
        popug_errors::retry(|| self.close_day_once(day)).await
    }

    async fn close_day_once(&self, day: Option<Date>) -> Result<Closed, Error> {
        let mut tx = self.pool.begin().await?;
        let open = billing::lock_open_day(&mut tx).await?;
        let today = self.clock.today();
        // Empty: the open day, or today when today is closed already (then a no-op).
        let day = day.unwrap_or_else(|| open.min(today));
        if day < open {
            let record = billing::closed_day(&mut tx, day).await?;
            return Ok(Closed {
                day,
                closed_now: false,
                payouts: record.as_ref().map_or(0, |r| r.payouts),
                paid: record.as_ref().map_or(Cents::ZERO, |r| r.paid),
            });
        }
        if day > today {
            return Err(Error::FailedPrecondition(format!(
                "billing day {} has not begun",
                format_day(day)
            )));
        }
        let mut closing = open;
        let mut closed = Closed {
            day,
            closed_now: true,
            payouts: 0,
            paid: Cents::ZERO,
        };
        let mut events = Vec::new();
        while closing <= day {
            let record = self.close_one(&mut tx, closing, &mut events).await?;
            closed.payouts += record.payouts;
            closed.paid = closed.paid + record.paid;
            match closing.next_day() {
                Some(next) => closing = next,
                None => break,
            }
        }
        billing::set_open_day(&mut tx, closing).await?;
        for batch in events.chunks(500) {
            self.outbox.add_envelopes(&mut tx, batch).await?;
        }
        tx.commit().await?;
        self.outbox.notify();
        let days = (day - open).whole_days() + 1;
        metrics::counter!(popug_metrics::names::DAY_CLOSES).increment(days.unsigned_abs());
        crate::metrics::closed(day);
        Ok(closed)
    }

    /// Closes one day inside the close's transaction: pays out every positive balance
    /// and records the day; its events go to `events`.
    async fn close_one(
        &self,
        tx: &mut sqlx::PgConnection,
        day: Date,
        events: &mut Vec<popug_eventbus::Envelope>,
    ) -> Result<ClosedDay, Error> {
        let payouts: Vec<(Uuid, Cents)> = billing::positive_balances(tx)
            .await?
            .into_iter()
            .map(|(user, balance)| (user, EntryKind::Payout.entry_amount(balance)))
            .collect();
        let paid = billing::pay_out(tx, day, &payouts).await?;
        let total: Cents = paid.iter().map(|p| p.amount.magnitude()).sum();
        let record = billing::record_closed_day(tx, day, paid.len() as i64, total).await?;
        for p in &paid {
            let entry = EntryRow {
                id: p.id,
                user_id: p.user_id,
                kind: EntryKind::Payout,
                amount: p.amount,
                task_id: None,
                jira_id: String::new(),
                title: String::new(),
                description: String::new(),
                billing_day: day,
                created_at: p.created_at,
            };
            let applied = entry_applied(&entry, Cents::ZERO);
            events.push(popug_eventbus::envelope(
                PRODUCER,
                &p.user_id.to_string(),
                &applied,
            ));
        }
        let closed = pb::DayClosed {
            billing_day: format_day(day),
            payouts: record.payouts,
            paid_cents: record.paid.get(),
            closed_at: Some(popug_grpc::timestamp(record.closed_at)),
        };
        events.push(popug_eventbus::envelope(
            PRODUCER,
            &format_day(day),
            &closed,
        ));
        tracing::info!(day = %format_day(day), payouts = record.payouts, paid = %record.paid, "billing day closed");
        Ok(record)
    }

    /// Closes every day before today that is still open (the scheduler's step).
    pub async fn close_due(&self) -> Result<Option<Closed>, Error> {
        let yesterday = self.clock.today().previous_day();
        let open = {
            let mut conn = self.pool.acquire().await?;
            billing::open_day(&mut conn).await?
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
                    tracing::info!(day = %format_day(closed.day), payouts = closed.payouts, "scheduled day close")
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
