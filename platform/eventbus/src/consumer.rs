//! Durable pull consumers.
//!
//! A [`Consumer`] fetches a batch, decodes the envelopes (reading a version that has an
//! upcaster registered as the current one: `popug_proto::upcast::current`) and hands them
//! to its sink (`crate::sink`: one database transaction per batch, or none). Messages
//! that can never be processed (undecodable, unknown version, a permanent refusal) are
//! published to the dead-letter stream before the batch is finished, and the consumer
//! carries on; acks are sent only once the batch is finished (committed), so a crash
//! before means the batch comes again; a transient failure asks for the whole batch
//! again after `retry_delay`.

mod lag;

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use popug_metrics::names;
use prost::Message;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::sink::{Retry, Sink};
use crate::topology::{Bus, Topology};
use crate::{BusError, DeadLetter, Envelope};

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
    /// Unacked messages are redelivered after this long: how soon another consumer (or
    /// this one, restarted) takes over a batch whose consumer died. While a batch is being
    /// applied, progress acks every half of it keep it from being redelivered.
    pub ack_wait: Duration,
    /// Where a new durable consumer starts: every message in the stream, or only those
    /// published from now on (for effects on caches that anything older cannot touch).
    pub deliver_all: bool,
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, bus: Bus) -> ConsumerConfig {
        ConsumerConfig {
            name: name.into(),
            bus,
            batch: 500,
            fetch_wait: Duration::from_millis(500),
            retry_delay: Duration::from_secs(1),
            ack_wait: Duration::from_secs(5),
            deliver_all: true,
        }
    }
}

/// One durable consumer bound to a sink.
pub struct Consumer<S> {
    js: jetstream::Context,
    topology: Topology,
    config: ConsumerConfig,
    sink: S,
    /// The durable consumer on the server, bound at the first poll (NATS may come later
    /// than the service).
    consumer: OnceCell<jetstream::consumer::Consumer<pull::Config>>,
    /// When the lag gauges were last set.
    lag_recorded: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<S: Sink> Consumer<S> {
    /// A consumer that binds its durable consumer when it first polls.
    pub fn new(
        js: jetstream::Context,
        topology: Topology,
        config: ConsumerConfig,
        sink: S,
    ) -> Consumer<S> {
        Consumer {
            js,
            topology,
            config,
            sink,
            consumer: OnceCell::new(),
            lag_recorded: std::sync::Mutex::new(None),
        }
    }

    /// A consumer bound now (see [`Consumer::new`]).
    pub async fn bind(
        js: jetstream::Context,
        topology: Topology,
        config: ConsumerConfig,
        sink: S,
    ) -> Result<Consumer<S>, BusError> {
        let consumer = Consumer::new(js, topology, config, sink);
        consumer.durable().await?;
        Ok(consumer)
    }

    /// The durable consumer on the bus's stream: created, or an existing one brought up to
    /// this configuration (its ack wait, say).
    async fn durable(&self) -> Result<&jetstream::consumer::Consumer<pull::Config>, BusError> {
        self.consumer
            .get_or_try_init(|| async {
                let stream = self
                    .js
                    .get_stream(self.topology.stream(self.config.bus))
                    .await
                    .map_err(BusError::nats)?;
                let deliver_policy = if self.config.deliver_all {
                    jetstream::consumer::DeliverPolicy::All
                } else {
                    jetstream::consumer::DeliverPolicy::New
                };
                stream
                    .create_consumer(pull::Config {
                        durable_name: Some(self.config.name.clone()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: self.config.ack_wait,
                        deliver_policy,
                        max_ack_pending: 20_000,
                        ..Default::default()
                    })
                    .await
                    .map_err(BusError::nats)
            })
            .await
    }

    /// Consumes until `shutdown` resolves; failures are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // At zero from the start: an alert on increase() sees the first one.
        for name in [
            names::CONSUMER_PROCESSED,
            names::CONSUMER_REDELIVERED,
            names::CONSUMER_DEAD_LETTERED,
        ] {
            metrics::counter!(name, "consumer" => self.config.name.clone()).increment(0);
        }
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
        self.record_lag().await;
        let mut fetched = self
            .durable()
            .await?
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
        let again = messages
            .iter()
            .filter(|m| m.info().is_ok_and(|i| i.delivered > 1))
            .count();
        if again > 0 {
            metrics::counter!(names::CONSUMER_REDELIVERED, "consumer" => self.config.name.clone())
                .increment(again as u64);
        }
        self.apply(messages).await
    }

    async fn apply(&self, messages: Vec<jetstream::Message>) -> Result<usize, BusError> {
        // One consumer span per event, open until the batch is finished: each the child of
        // the relay's publish span that sent its event, so its trace goes on here.
        let mut spans = Vec::with_capacity(messages.len());
        let mut dead = Vec::new();
        let mut decoded = Vec::with_capacity(messages.len());
        let mut ids = Vec::with_capacity(messages.len());
        let mut envelopes = Vec::with_capacity(messages.len());
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
            // A version with an upcaster registered reads as the current one from here on.
            let envelope = match popug_proto::upcast::current(envelope) {
                Ok(envelope) => envelope,
                Err(unreadable) => {
                    dead.push((message, unreadable.0));
                    continue;
                }
            };
            spans.push(consume_span(&self.config.name, message, &envelope));
            decoded.push(message);
            ids.push(event_id);
            envelopes.push(envelope);
        }
        let applying = self.sink.apply(&self.config.name, &ids, &envelopes);
        let (pending, refused) = match self.in_progress(&messages, applying).await {
            Ok(applied) => applied,
            Err(Retry(reason)) => {
                self.retry_later(&messages, &reason).await;
                return Ok(0);
            }
        };
        dead.extend(refused.into_iter().map(|(i, reason)| (decoded[i], reason)));
        for (message, reason) in &dead {
            if let Err(error) = self.dead_letter(message, reason).await {
                // Nothing is finished: the whole batch comes again.
                self.retry_later(&messages, &error.to_string()).await;
                return Ok(0);
            }
        }
        self.sink.finish(pending).await?;
        for message in &messages {
            // A lost ack only means a redelivery, which the processed-events row absorbs.
            if let Err(error) = message.ack().await {
                tracing::debug!(%error, "ack failed; the message will come again");
            }
        }
        drop(spans);
        let name = self.config.name.clone();
        metrics::counter!(names::CONSUMER_PROCESSED, "consumer" => name.clone())
            .increment((messages.len() - dead.len()) as u64);
        if !dead.is_empty() {
            metrics::counter!(names::CONSUMER_DEAD_LETTERED, "consumer" => name)
                .increment(dead.len() as u64);
        }
        Ok(messages.len())
    }

    /// Awaits `work` on `messages`, telling JetStream every half ack wait that they are
    /// still being worked on, so a long batch is not redelivered while it is applied.
    async fn in_progress<T>(
        &self,
        messages: &[jetstream::Message],
        work: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let period = self.config.ack_wait / 2;
        loop {
            tokio::select! {
                outcome = &mut work => return outcome,
                () = tokio::time::sleep(period) => {
                    for message in messages {
                        // A lost progress ack only risks a redelivery, which is absorbed.
                        let _ = message.ack_with(AckKind::Progress).await;
                    }
                }
            }
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

/// The span of consuming one event: parented on the trace context its message carries
/// (the relay's publish span), else on the one in its envelope (where it was made).
fn consume_span(
    consumer: &str,
    message: &jetstream::Message,
    envelope: &Envelope,
) -> tracing::Span {
    let span = tracing::info_span!(
        "consume",
        consumer,
        event = %envelope.name,
        version = envelope.version,
        key = %envelope.key,
        event_id = %envelope.event_id,
        otel.kind = "consumer",
    );
    let carried: std::collections::HashMap<String, String> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|key| {
            let value = message.headers.as_ref()?.get(key)?;
            Some((key.to_owned(), value.as_str().to_owned()))
        })
        .collect();
    if carried.is_empty() {
        popug_telemetry::extract(&span, &envelope.trace_context);
    } else {
        popug_telemetry::extract(&span, &carried);
    }
    span
}
