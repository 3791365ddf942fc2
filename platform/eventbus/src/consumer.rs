//! Durable pull consumers with exactly-once effects.
//!
//! A batch of messages is applied in one database transaction: for each message the
//! processed-events row is inserted first (a duplicate finds it there and is skipped),
//! then the handler's effect runs under a savepoint. Messages that can never be
//! processed (undecodable, unknown version, a handler's permanent refusal) are published
//! to the dead-letter stream before the commit, keeping their processed-events row so
//! they are not retried. Acks are sent only after the commit: a crash before it means the
//! batch is delivered again and applied then, once.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use prost::Message;
use sqlx::{Acquire, PgConnection, PgPool};
use uuid::Uuid;

use crate::topology::{Bus, Topology};
use crate::{BusError, DeadLetter, Envelope};

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

/// Applies one event inside the batch transaction.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> impl std::future::Future<Output = Result<(), HandleError>> + Send;

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
    ) -> impl std::future::Future<Output = Result<(), HandleError>> + Send {
        async move {
            for envelope in envelopes {
                self.handle(conn, envelope).await?;
            }
            Ok(())
        }
    }
}

/// Which messages a consumer reads and how.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Durable consumer name, also the processed-events and dead-letter key.
    pub name: String,
    /// The bus (stream) it reads.
    pub bus: Bus,
    /// Messages per batch transaction.
    pub batch: usize,
    /// How long a fetch waits for messages when the stream is quiet.
    pub fetch_wait: Duration,
    /// Redelivery delay after a transient failure.
    pub retry_delay: Duration,
    /// Unacked messages are redelivered after this long.
    pub ack_wait: Duration,
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, bus: Bus) -> ConsumerConfig {
        ConsumerConfig {
            name: name.into(),
            bus,
            batch: 500,
            fetch_wait: Duration::from_millis(500),
            retry_delay: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// What became of a batch offered to [`Handler::handle_batch`].
enum Batch {
    Applied,
    /// Refused: apply the events one by one.
    OneByOne,
    /// Transient failure: redeliver the whole batch.
    Retry(String),
}

/// One durable consumer bound to a handler.
pub struct Consumer<H> {
    js: jetstream::Context,
    pool: PgPool,
    topology: Topology,
    config: ConsumerConfig,
    handler: H,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

impl<H: Handler> Consumer<H> {
    /// Creates the durable consumer on the bus's stream if it does not exist.
    pub async fn bind(
        js: jetstream::Context,
        pool: PgPool,
        topology: Topology,
        config: ConsumerConfig,
        handler: H,
    ) -> Result<Consumer<H>, BusError> {
        let stream = js
            .get_stream(topology.stream(config.bus))
            .await
            .map_err(BusError::nats)?;
        let consumer = stream
            .get_or_create_consumer(
                &config.name,
                pull::Config {
                    durable_name: Some(config.name.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(BusError::nats)?;
        Ok(Consumer {
            js,
            pool,
            topology,
            config,
            handler,
            consumer,
        })
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Consumes until `shutdown` resolves; failures are logged and retried.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                result = self.poll_once() => {
                    if let Err(error) = result {
                        tracing::warn!(consumer = %self.config.name, %error, "consumer batch failed");
                        tokio::select! {
                            () = &mut shutdown => return,
                            () = tokio::time::sleep(self.config.retry_delay) => {}
                        }
                    }
                }
            }
        }
    }

    /// Fetches one batch (waiting up to `fetch_wait`) and applies it; returns how many
    /// messages it acknowledged.
    pub async fn poll_once(&self) -> Result<usize, BusError> {
        let mut fetched = self
            .consumer
            .fetch()
            .max_messages(self.config.batch)
            .expires(self.config.fetch_wait)
            .messages()
            .await
            .map_err(BusError::nats)?;
        let mut messages = Vec::new();
        while let Some(message) = fetched.next().await {
            messages.push(message.map_err(BusError::nats)?);
        }
        if messages.is_empty() {
            return Ok(0);
        }
        self.apply(messages).await
    }

    async fn apply(&self, messages: Vec<jetstream::Message>) -> Result<usize, BusError> {
        let mut tx = self.pool.begin().await?;
        let mut dead = Vec::new();
        let mut decoded = Vec::with_capacity(messages.len());
        for message in &messages {
            let envelope = match Envelope::decode(message.payload.as_ref()) {
                Ok(envelope) => envelope,
                Err(error) => {
                    dead.push((message, format!("undecodable envelope: {error}")));
                    continue;
                }
            };
            let Ok(event_id) = Uuid::parse_str(&envelope.event_id) else {
                dead.push((message, format!("bad event id {:?}", envelope.event_id)));
                continue;
            };
            decoded.push((message, envelope, event_id));
        }
        let batched = if self.handler.batches() && decoded.len() > 1 {
            match self.apply_batch(&mut tx, &decoded).await? {
                Batch::Applied => true,
                Batch::OneByOne => false,
                Batch::Retry(reason) => {
                    drop(tx);
                    self.retry_later(&messages, &reason).await;
                    return Ok(0);
                }
            }
        } else {
            false
        };
        let one_by_one: &[_] = if batched { &[] } else { &decoded };
        for &(message, ref envelope, event_id) in one_by_one {
            let fresh = sqlx::query(
                "INSERT INTO eventbus.processed_events (consumer, event_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.config.name)
            .bind(event_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !fresh {
                continue;
            }
            let span = tracing::info_span!(
                "consume",
                consumer = %self.config.name,
                event = %envelope.name,
                event_id = %envelope.event_id,
                otel.kind = "consumer",
            );
            popug_telemetry::extract(&span, &envelope.trace_context);
            let mut savepoint = tx.begin().await?;
            let outcome = tracing::Instrument::instrument(
                self.handler.handle(&mut savepoint, envelope),
                span,
            )
            .await;
            match outcome {
                Ok(()) => savepoint.commit().await?,
                Err(HandleError::Permanent(reason)) => {
                    savepoint.rollback().await?;
                    dead.push((message, reason));
                }
                Err(HandleError::Transient(reason)) => {
                    drop(savepoint);
                    drop(tx);
                    self.retry_later(&messages, &reason).await;
                    return Ok(0);
                }
            }
        }
        for (message, reason) in &dead {
            self.dead_letter(message, reason).await?;
        }
        tx.commit().await?;
        for message in &messages {
            // A lost ack only means a redelivery, which the processed-events row absorbs.
            if let Err(error) = message.ack().await {
                tracing::debug!(%error, "ack failed; the message will come again");
            }
        }
        Ok(messages.len())
    }

    /// Offers the fresh events among `decoded` to the handler at once, under one
    /// savepoint that also holds their processed-events rows.
    async fn apply_batch(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        decoded: &[(&jetstream::Message, Envelope, Uuid)],
    ) -> Result<Batch, BusError> {
        let mut savepoint = tx.begin().await?;
        let ids: Vec<Uuid> = decoded.iter().map(|(_, _, id)| *id).collect();
        let fresh: std::collections::HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO eventbus.processed_events (consumer, event_id)
             SELECT $1, event_id FROM UNNEST($2::uuid[]) AS t(event_id)
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.config.name)
        .bind(&ids)
        .fetch_all(&mut *savepoint)
        .await?
        .into_iter()
        .collect();
        let mut taken = std::collections::HashSet::new();
        let envelopes: Vec<Envelope> = decoded
            .iter()
            .filter(|(_, _, id)| fresh.contains(id) && taken.insert(*id))
            .map(|(_, envelope, _)| envelope.clone())
            .collect();
        if envelopes.is_empty() {
            savepoint.commit().await?;
            return Ok(Batch::Applied);
        }
        let span = tracing::info_span!(
            "consume_batch",
            consumer = %self.config.name,
            events = envelopes.len(),
            otel.kind = "consumer",
        );
        let outcome = tracing::Instrument::instrument(
            self.handler.handle_batch(&mut savepoint, &envelopes),
            span,
        )
        .await;
        match outcome {
            Ok(()) => {
                savepoint.commit().await?;
                Ok(Batch::Applied)
            }
            Err(HandleError::Permanent(reason)) => {
                tracing::debug!(consumer = %self.config.name, %reason, "batch refused; applying its events one by one");
                savepoint.rollback().await?;
                Ok(Batch::OneByOne)
            }
            Err(HandleError::Transient(reason)) => Ok(Batch::Retry(reason)),
        }
    }

    /// Rolls nothing forward: asks for every message of the batch again later.
    async fn retry_later(&self, messages: &[jetstream::Message], reason: &str) {
        tracing::warn!(consumer = %self.config.name, %reason, "batch rolled back; will be redelivered");
        for message in messages {
            let _ = message
                .ack_with(AckKind::Nak(Some(self.config.retry_delay)))
                .await;
        }
    }

    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        reason: &str,
    ) -> Result<(), BusError> {
        let sequence = message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or_default();
        tracing::error!(consumer = %self.config.name, subject = %message.subject, sequence, %reason, "dead-lettering event");
        let now = time::OffsetDateTime::now_utc();
        let letter = DeadLetter {
            consumer: self.config.name.clone(),
            subject: message.subject.to_string(),
            reason: reason.to_owned(),
            original: message.payload.clone(),
            failed_at: Some(prost_types::Timestamp {
                seconds: now.unix_timestamp(),
                nanos: now.nanosecond() as i32,
            }),
            stream_sequence: sequence,
        };
        let mut headers = async_nats::HeaderMap::new();
        let msg_id = format!(
            "{}:{}:{sequence}",
            self.config.name,
            self.topology.stream(self.config.bus)
        );
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        self.js
            .publish_with_headers(
                self.topology.dead_letter_subject(&self.config.name),
                headers,
                letter.encode_to_vec().into(),
            )
            .await
            .map_err(BusError::nats)?
            .await
            .map_err(BusError::nats)?;
        Ok(())
    }
}
