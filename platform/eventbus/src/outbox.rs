//! The transactional outbox and its relay.
//!
//! [`Outbox::add`] inserts an event in the caller's transaction, so the event exists if
//! and only if the state change committed. [`Relay`] publishes pending rows in order,
//! waits for JetStream's acknowledgement of each, then marks them published in the same
//! database transaction that selected them. A relay that dies after publishing but
//! before marking publishes the same rows again; their `Nats-Msg-Id` (the event id) makes
//! JetStream drop the copies within the stream's duplicate window.
//!
//! Ordering: rows are taken in id order, and only those written by transactions older
//! than every transaction still running (`writer_xid < xmin`), so a transaction that
//! commits late can never have its events overtaken by a later one. One relay publishes
//! at a time (a transaction-scoped advisory lock), so several replicas are safe.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use popug_metrics::names;
use popug_proto::catalog::Event;
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use tracing::Instrument;
use uuid::Uuid;

use crate::topology::Topology;
use crate::{BusError, Envelope};

/// Advisory lock key held by the relay that is publishing ("outbox" in ASCII).
const RELAY_LOCK: i64 = 0x6f75_7462_6f78;

/// Wraps `event` about entity `key`, produced by `producer`, stamped now and carrying the
/// current span's trace context.
pub fn envelope<E: Event>(producer: &str, key: &str, event: &E) -> Envelope {
    let now = time::OffsetDateTime::now_utc();
    Envelope {
        event_id: Uuid::now_v7().to_string(),
        name: E::NAME.to_owned(),
        version: E::VERSION,
        producer: producer.to_owned(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.unix_timestamp(),
            // Always in 0..1e9, so the cast cannot truncate.
            nanos: now.nanosecond() as i32,
        }),
        trace_context: popug_telemetry::inject(&tracing::Span::current()),
        key: key.to_owned(),
        payload: event.encode_to_vec().into(),
    }
}

/// Writes a service's events into its outbox.
#[derive(Clone)]
pub struct Outbox {
    topology: Topology,
    /// Producer name stamped on every envelope.
    producer: &'static str,
    /// Wakes the local relay as soon as something was written.
    wake: Arc<Notify>,
}

impl Outbox {
    pub fn new(topology: Topology, producer: &'static str) -> Outbox {
        Outbox {
            topology,
            producer,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Adds `event` about entity `key` to the transaction; returns its envelope.
    pub async fn add<E: Event>(
        &self,
        conn: &mut PgConnection,
        key: &str,
        event: &E,
    ) -> Result<Envelope, sqlx::Error> {
        let envelope = envelope(self.producer, key, event);
        self.add_envelopes(conn, std::slice::from_ref(&envelope))
            .await?;
        Ok(envelope)
    }

    /// Adds ready-made envelopes in one statement (for bulk producers), in an
    /// `outbox.write` span; the relay's publish span of an event written in the current
    /// trace is that span's child.
    pub async fn add_envelopes(
        &self,
        conn: &mut PgConnection,
        envelopes: &[Envelope],
    ) -> Result<(), sqlx::Error> {
        let span = tracing::info_span!("outbox.write", events = envelopes.len());
        let here = popug_telemetry::inject(&tracing::Span::current());
        let written = popug_telemetry::inject(&span);
        self.write(conn, envelopes, &here, &written)
            .instrument(span)
            .await
    }

    /// The insert of [`Outbox::add_envelopes`]: an envelope made in the current span
    /// (context `here`) is stored with the write span's context (`written`) for the
    /// relay; one made elsewhere keeps its own.
    async fn write(
        &self,
        conn: &mut PgConnection,
        envelopes: &[Envelope],
        here: &HashMap<String, String>,
        written: &HashMap<String, String>,
    ) -> Result<(), sqlx::Error> {
        let mut ids = Vec::with_capacity(envelopes.len());
        let mut subjects = Vec::with_capacity(envelopes.len());
        let mut bodies = Vec::with_capacity(envelopes.len());
        let mut traces = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            ids.push(
                Uuid::parse_str(&envelope.event_id)
                    .map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            );
            subjects.push(self.topology.subject(&envelope.name));
            bodies.push(envelope.encode_to_vec());
            let trace = if envelope.trace_context == *here {
                written
            } else {
                &envelope.trace_context
            };
            traces
                .push(serde_json::to_string(trace).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        }
        sqlx::query!(
            "INSERT INTO eventbus.outbox (event_id, subject, envelope, trace_context)
             SELECT event_id, subject, envelope, trace_context::jsonb
             FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::text[])
             WITH ORDINALITY AS t(event_id, subject, envelope, trace_context, n) ORDER BY n",
            &ids,
            &subjects,
            &bodies,
            &traces,
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Call after committing a transaction that added events: the relay starts at once
    /// instead of at its next poll.
    pub fn notify(&self) {
        self.wake.notify_one();
    }
}

/// Publishes the outbox. Run one per process; several processes coordinate by lock.
pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    wake: Arc<Notify>,
    /// Rows per transaction.
    batch: i64,
    /// How long to sleep when nothing is pending (also the cross-process latency).
    idle: Duration,
}

/// A batch that is published but not yet marked; dropping it rolls the marking back,
/// exactly as a crash at that point would.
pub struct Published {
    tx: Transaction<'static, Postgres>,
    ids: Vec<i64>,
}

impl Published {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Marks the rows published and commits.
    pub async fn mark(mut self) -> Result<usize, BusError> {
        if !self.ids.is_empty() {
            sqlx::query!(
                "UPDATE eventbus.outbox SET published_at = now() WHERE id = ANY($1)",
                &self.ids,
            )
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(self.ids.len())
    }
}

impl Relay {
    pub fn new(pool: PgPool, js: jetstream::Context, outbox: &Outbox) -> Relay {
        Relay {
            pool,
            js,
            wake: outbox.wake.clone(),
            batch: 1000,
            idle: Duration::from_millis(100),
        }
    }

    /// Publishes pending events until `shutdown` resolves. Errors (NATS or the database
    /// down) are logged and retried with backoff; nothing is marked unless acknowledged.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        let mut last_cleanup = tokio::time::Instant::now();
        let mut last_gauges = None::<tokio::time::Instant>;
        // At zero from the start: an alert on increase() sees the first failure.
        metrics::counter!(names::RELAY_PUBLISHED).increment(0);
        metrics::counter!(names::RELAY_FAILURES).increment(0);
        loop {
            let wait = match self.publish_pending().await {
                Ok(Some(batch)) if batch.is_empty() => self.idle,
                Ok(Some(batch)) => match batch.mark().await {
                    Ok(published) => {
                        metrics::counter!(names::RELAY_PUBLISHED).increment(published as u64);
                        backoff = Duration::from_millis(100);
                        Duration::ZERO
                    }
                    Err(error) => {
                        metrics::counter!(names::RELAY_FAILURES).increment(1);
                        tracing::warn!(%error, "outbox relay could not mark a published batch");
                        backoff
                    }
                },
                // Another replica holds the relay lock.
                Ok(None) => self.idle * 5,
                Err(error) => {
                    metrics::counter!(names::RELAY_FAILURES).increment(1);
                    tracing::warn!(%error, retry_in = ?backoff, "outbox relay failed");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            if last_gauges.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                last_gauges = Some(tokio::time::Instant::now());
                if let Err(error) = self.record_pending().await {
                    tracing::debug!(%error, "outbox gauges not updated");
                }
            }
            if last_cleanup.elapsed() > Duration::from_secs(600) {
                last_cleanup = tokio::time::Instant::now();
                if let Err(error) = self.cleanup().await {
                    tracing::warn!(%error, "outbox cleanup failed");
                }
            }
            if wait.is_zero() {
                continue;
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sets the outbox gauges: rows not yet published and the age of the oldest.
    async fn record_pending(&self) -> Result<(), BusError> {
        let pending = sqlx::query!(
            r#"SELECT count(*) AS "rows!",
                      COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS "age!"
                 FROM eventbus.outbox WHERE published_at IS NULL"#
        )
        .fetch_one(&self.pool)
        .await?;
        metrics::gauge!(names::OUTBOX_PENDING).set(pending.rows as f64);
        metrics::gauge!(names::OUTBOX_OLDEST_AGE).set(pending.age.max(0.0));
        Ok(())
    }

    /// Publishes the next batch of pending events and waits for every acknowledgement;
    /// `None` when another relay holds the lock. The rows are marked only by
    /// [`Published::mark`].
    pub async fn publish_pending(&self) -> Result<Option<Published>, BusError> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
            RELAY_LOCK
        )
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(None);
        }
        let rows = sqlx::query!(
            r#"SELECT id, event_id, subject, envelope, trace_context::text AS "trace_context!"
               FROM eventbus.outbox
               WHERE published_at IS NULL
                 AND writer_xid < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY id LIMIT $1"#,
            self.batch,
        )
        .fetch_all(&mut *tx)
        .await?;

        // Pipelined: every publish is sent before the first ack is awaited; one
        // connection keeps them in order.
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        // One producer span per traced event, from its publish to JetStream's ack; the
        // message carries the span's context, so its consumers are its children.
        let mut spans = Vec::with_capacity(rows.len());
        for row in rows {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", row.event_id.to_string().as_str());
            let written: HashMap<String, String> =
                serde_json::from_str(&row.trace_context).unwrap_or_default();
            if !written.is_empty() {
                let span = tracing::info_span!(
                    "publish",
                    subject = %row.subject,
                    event_id = %row.event_id,
                    otel.kind = "producer",
                );
                popug_telemetry::extract(&span, &written);
                for (key, value) in popug_telemetry::inject(&span) {
                    headers.insert(key.as_str(), value.as_str());
                }
                spans.push(span);
            }
            let ack = self
                .js
                .publish_with_headers(row.subject, headers, Bytes::from(row.envelope))
                .await
                .map_err(BusError::nats)?;
            acks.push(ack);
            ids.push(row.id);
        }
        for ack in acks {
            ack.await.map_err(BusError::nats)?;
        }
        drop(spans);
        Ok(Some(Published { tx, ids }))
    }

    /// Publishes until nothing is left unpublished (rows still invisible to the relay
    /// because an older transaction runs are waited for, polling), or `timeout` passes.
    /// For one-shot commands that must not end before their events are out.
    pub async fn publish_all(&self, timeout: Duration) -> Result<usize, BusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut published = 0;
        loop {
            if let Some(batch) = self.publish_pending().await? {
                published += batch.mark().await?;
            }
            let pending = sqlx::query_scalar!(
                r#"SELECT count(*) AS "pending!" FROM eventbus.outbox WHERE published_at IS NULL"#
            )
            .fetch_one(&self.pool)
            .await?;
            if pending == 0 {
                return Ok(published);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Nats(format!(
                    "{pending} events still unpublished after {timeout:?}"
                )));
            }
            tokio::time::sleep(self.idle).await;
        }
    }

    /// Forgets events published more than a day ago.
    async fn cleanup(&self) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM eventbus.outbox
             WHERE published_at IS NOT NULL AND published_at < now() - interval '1 day'",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
