//! Where a consumer's events go.
//!
//! - [`Transactional`] applies a batch in one database transaction with a [`Handler`]:
//!   for each event the processed-events row is inserted first (a duplicate finds it there
//!   and is skipped), then the handler's effect runs under a savepoint — exactly-once
//!   effects, made final by the commit after the dead letters are out.
//! - [`Stateless`] applies a batch with an [`Effect`] that needs no database, for effects
//!   that are idempotent by nature (dropping cache keys): a redelivery applies them again.
//!
//! A permanent refusal of a whole batch is retried event by event, so only the event at
//! fault is dead-lettered; a transient one asks for the whole batch again.
//!
//! # The processed-events row and its outcome
//!
//! The row (consumer, event id) says what became of the event, and is written in the
//! transaction that does it:
//!
//! - `applied` — the handler's effects committed with the row. Any later copy of the event
//!   (a redelivery, the same envelope republished, a replayed dead letter) is skipped.
//! - `dead` — the handler refused the event for good: its savepoint was rolled back (none
//!   of its effects exist) and the row was kept, marked dead, in the same transaction that
//!   went on with the batch, committed after the dead letter was published. A later copy
//!   is applied again (the row turns `applied` first, in that copy's transaction); refused
//!   again, it is marked dead again and dead-lettered again.
//!
//! So "row says dead" is "no effect of the event exists for this consumer", and the upsert
//! that turns it applied (`ON CONFLICT … DO UPDATE … WHERE outcome = 'dead'`) row-locks
//! it: two copies applied at once (the original still being redelivered while its replay
//! arrives, two consumers of one durable name) serialize on the row; the second waits for
//! the first's transaction and then sees `applied` (skipped), or `dead` (the first
//! refused it again, or rolled back: it tries in turn). Each event's effects therefore
//! commit at most once per consumer, and a dead event can always be brought back.
//! Events that never reach a sink (an undecodable envelope, a bad event id, a failing
//! upcaster) have no row at all. See `crate::dead_letters` for the replay side.

use std::collections::HashSet;
use std::future::Future;

use popug_proto::catalog::Unreadable;
use sqlx::{Acquire, PgConnection, PgPool, Postgres, Transaction};
use tracing::Instrument;
use uuid::Uuid;

use crate::{BusError, Envelope};

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// It can never be applied: dead-letter it and carry on.
    #[error("{0}")]
    Permanent(String),
    /// It may work later (database down, ...): roll back and redeliver.
    #[error("{0}")]
    Transient(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(error: sqlx::Error) -> HandleError {
        HandleError::Transient(format!("database: {error}"))
    }
}

impl From<Unreadable> for HandleError {
    fn from(error: Unreadable) -> HandleError {
        HandleError::Permanent(error.0)
    }
}

/// Applies one event inside the batch transaction.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;

    /// Whether the consumer should offer whole batches to [`Handler::handle_batch`]
    /// (default: no, every event goes to [`Handler::handle`] under its own savepoint).
    fn batches(&self) -> bool {
        false
    }

    /// Applies several events at once, with the same effects as [`Handler::handle`] on
    /// each in turn. The consumer passes only events it has not processed before, each
    /// once, in delivery order, under one savepoint. On a permanent error it rolls that
    /// savepoint back and applies the events one by one with `handle`, so only the event
    /// at fault is dead-lettered; on a transient one the whole batch is redelivered.
    fn handle_batch(
        &self,
        conn: &mut PgConnection,
        envelopes: &[Envelope],
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        async move {
            for envelope in envelopes {
                self.handle(conn, envelope).await?;
            }
            Ok(())
        }
    }
}

/// Applies events without a database. A redelivered event is applied again, so the
/// effect must be idempotent by nature.
pub trait Effect: Send + Sync + 'static {
    /// Applies `envelopes` (in delivery order). On a permanent error the consumer applies
    /// them one by one, so only the event at fault is dead-lettered.
    fn apply(&self, envelopes: &[Envelope])
    -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// A transient failure: the whole batch is asked for again.
#[derive(Debug)]
pub struct Retry(pub String);

impl From<sqlx::Error> for Retry {
    fn from(error: sqlx::Error) -> Retry {
        Retry(format!("database: {error}"))
    }
}

/// What a sink made of a batch: what is left to finish it, and the events (by index) it
/// gave up on, each with the reason.
pub type Applied<P> = (P, Vec<(usize, String)>);

/// Where a consumer's decoded events go: [`Transactional`] or [`Stateless`].
pub trait Sink: Send + Sync + 'static {
    /// What is left to do once the dead letters are out (a transaction to commit).
    type Pending: Send;

    /// Applies `envelopes` (each with its event id), returning the indexes of those it
    /// gives up on, with the reason.
    fn apply(
        &self,
        consumer: &str,
        ids: &[Uuid],
        envelopes: &[Envelope],
    ) -> impl Future<Output = Result<Applied<Self::Pending>, Retry>> + Send;

    /// Makes the batch's effects final.
    fn finish(&self, pending: Self::Pending) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// A sink applying events with `handler` in one transaction per batch, exactly once.
pub struct Transactional<H> {
    pub pool: PgPool,
    pub handler: H,
}

impl<H: Handler> Transactional<H> {
    pub fn new(pool: PgPool, handler: H) -> Transactional<H> {
        Transactional { pool, handler }
    }

    /// Offers the fresh events (no row, or a dead one) to the handler at once, under one
    /// savepoint that also holds their processed-events rows; false when it refused them
    /// (apply one by one: the rows are back as they were).
    async fn apply_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        consumer: &str,
        ids: &[Uuid],
        envelopes: &[Envelope],
    ) -> Result<bool, Retry> {
        let mut savepoint = tx.begin().await?;
        // Distinct (an upsert may touch a row once per statement) and in key order (two
        // batches lock the rows they share in the same order).
        let fresh: HashSet<Uuid> = sqlx::query_scalar!(
            "INSERT INTO eventbus.processed_events AS p (consumer, event_id)
             SELECT $1, event_id FROM (SELECT DISTINCT event_id FROM UNNEST($2::uuid[]) AS t(event_id)) d
             ORDER BY event_id
             ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'applied', processed_at = now()
             WHERE p.outcome = 'dead'
             RETURNING p.event_id",
            consumer,
            ids,
        )
        .fetch_all(&mut *savepoint)
        .await?
        .into_iter()
        .collect();
        let mut taken = HashSet::new();
        let batch: Vec<Envelope> = ids
            .iter()
            .zip(envelopes)
            .filter(|(id, _)| fresh.contains(id) && taken.insert(**id))
            .map(|(_, envelope)| envelope.clone())
            .collect();
        if batch.is_empty() {
            savepoint.commit().await?;
            return Ok(true);
        }
        let span = tracing::info_span!(
            "consume_batch",
            consumer,
            events = batch.len(),
            otel.kind = "consumer",
        );
        let outcome = self
            .handler
            .handle_batch(&mut savepoint, &batch)
            .instrument(span)
            .await;
        match outcome {
            Ok(()) => {
                savepoint.commit().await?;
                Ok(true)
            }
            Err(HandleError::Permanent(reason)) => {
                tracing::debug!(consumer, %reason, "batch refused; applying its events one by one");
                savepoint.rollback().await?;
                Ok(false)
            }
            Err(HandleError::Transient(reason)) => Err(Retry(reason)),
        }
    }
}

impl<H: Handler> Sink for Transactional<H> {
    type Pending = Transaction<'static, Postgres>;

    async fn apply(
        &self,
        consumer: &str,
        ids: &[Uuid],
        envelopes: &[Envelope],
    ) -> Result<Applied<Self::Pending>, Retry> {
        let mut tx = self.pool.begin().await?;
        if self.handler.batches()
            && envelopes.len() > 1
            && self.apply_batch(&mut tx, consumer, ids, envelopes).await?
        {
            return Ok((tx, Vec::new()));
        }
        let mut dead = Vec::new();
        let mut taken = HashSet::new();
        for (index, (&event_id, envelope)) in ids.iter().zip(envelopes).enumerate() {
            // A copy later in the same batch is skipped even when the first one died (its
            // row, dead, is this transaction's own).
            if !taken.insert(event_id) {
                continue;
            }
            // New, or dead before: applied now (the row says so until a refusal below).
            let fresh = sqlx::query!(
                "INSERT INTO eventbus.processed_events AS p (consumer, event_id) VALUES ($1, $2)
                 ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'applied', processed_at = now()
                 WHERE p.outcome = 'dead'",
                consumer,
                event_id,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !fresh {
                continue;
            }
            let span = tracing::info_span!(
                "consume",
                consumer,
                event = %envelope.name,
                event_id = %envelope.event_id,
                otel.kind = "consumer",
            );
            popug_telemetry::extract(&span, &envelope.trace_context);
            let mut savepoint = tx.begin().await?;
            let outcome = self
                .handler
                .handle(&mut savepoint, envelope)
                .instrument(span)
                .await;
            match outcome {
                Ok(()) => savepoint.commit().await?,
                Err(HandleError::Permanent(reason)) => {
                    savepoint.rollback().await?;
                    // Nothing of it applied: a replay (or any later copy) applies it.
                    sqlx::query!(
                        "UPDATE eventbus.processed_events SET outcome = 'dead'
                         WHERE consumer = $1 AND event_id = $2",
                        consumer,
                        event_id,
                    )
                    .execute(&mut *tx)
                    .await?;
                    dead.push((index, reason));
                }
                Err(HandleError::Transient(reason)) => return Err(Retry(reason)),
            }
        }
        Ok((tx, dead))
    }

    async fn finish(&self, tx: Self::Pending) -> Result<(), BusError> {
        tx.commit().await?;
        Ok(())
    }
}

/// A sink applying events with an [`Effect`], no database involved.
pub struct Stateless<E>(pub E);

impl<E: Effect> Sink for Stateless<E> {
    type Pending = ();

    async fn apply(
        &self,
        _consumer: &str,
        _ids: &[Uuid],
        envelopes: &[Envelope],
    ) -> Result<Applied<()>, Retry> {
        match self.0.apply(envelopes).await {
            Ok(()) => return Ok(((), Vec::new())),
            Err(HandleError::Transient(reason)) => return Err(Retry(reason)),
            Err(HandleError::Permanent(_)) => {}
        }
        let mut dead = Vec::new();
        for (index, envelope) in envelopes.iter().enumerate() {
            match self.0.apply(std::slice::from_ref(envelope)).await {
                Ok(()) => {}
                Err(HandleError::Permanent(reason)) => dead.push((index, reason)),
                Err(HandleError::Transient(reason)) => return Err(Retry(reason)),
            }
        }
        Ok(((), dead))
    }

    async fn finish(&self, (): ()) -> Result<(), BusError> {
        Ok(())
    }
}
