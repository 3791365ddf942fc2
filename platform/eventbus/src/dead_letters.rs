//! Operating the dead-letter stream: list what a service's consumers gave up on, show
//! one with its payload decoded, and replay letters back to the consumer that failed
//! (`<service> dead-letters list|show|replay`, in `popug_service::dead_letters`).
//!
//! # Replay
//!
//! [`DeadLetters::replay`] republishes the original message, byte for byte, to the subject
//! it was received on, under `Nats-Msg-Id` = [`Letter::replay_id`] (derived from the letter:
//! consumer, subject and original stream sequence, never the event id, which JetStream
//! would still drop as a copy of the original within the duplicate window). Once
//! JetStream acknowledged it, the letter is deleted from the dead-letter stream, so what
//! is listed is what is outstanding. If the consumer refuses the replayed copy again it
//! dead-letters it again: a new letter (the copy has a stream sequence of its own).
//!
//! A letter whose consumer has applied the event meanwhile (its processed-events row says
//! `applied`) is not republished; replaying it only deletes it.
//!
//! # Exactly once
//!
//! The consumer's processed-events row carries the outcome (`crate::sink`): `dead` means
//! none of the event's effects exist for that consumer, and the first copy of the event
//! that the consumer then applies turns it `applied` in the transaction holding the
//! effects; every other copy is skipped. Whatever copies arrive, and in whatever order:
//!
//! - **Replayed twice** (two operators, a retried command): the same `Nats-Msg-Id`, so
//!   within JetStream's duplicate window (15 minutes) the second copy is dropped at
//!   publish; after it, the second copy finds the row `applied` and is skipped. A second
//!   replay of a letter already deleted finds nothing to replay.
//! - **Replayed while the consumer still redelivers the original** (the dead-lettering
//!   transaction had not committed yet, or rolled back after the letter was published):
//!   the two copies race for the row. The upsert of the second waits on the first's row
//!   lock (or on its uncommitted insert) and then sees `applied` (skipped) or `dead` /
//!   no row (the first was refused again or rolled back: the second tries in turn).
//! - **Processed meanwhile** (a copy came through after a fix): the row says `applied`;
//!   the replay republishes nothing, or its copy is skipped if it was already on its way.
//! - **Crash between republishing and deleting the letter**: the letter stays listed; the
//!   next replay republishes under the same id (dropped as a duplicate) or is skipped by
//!   the row.
//! - **Other consumers of the subject** get the republished copy too: one that applied the
//!   event skips it by its own row; one that had dead-lettered it as well applies it now
//!   (its own letter then shows `applied` and replaying it just deletes it); stateless
//!   consumers (the gateway's cache invalidation) apply it again, which is harmless by
//!   their nature. Consumers read out of order already, so a late copy is nothing new.
//!
//! A letter with no row (an undecodable envelope, a bad event id, a failed upcaster, a
//! stateless consumer) is republished as it is: its consumer either reads it now or
//! dead-letters it again. Rows written before migration 0003 say `applied` even for dead
//! events; such letters are reported as applied (see the migration for the remedy).
//!
//! Replay needs the consumer to read the event now: a build that knows its version, or an
//! upcaster registered in the consumer's process (`popug_proto::upcast::register`).

mod letter;
mod payload;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, ErrorCode};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::BusError;
use crate::topology::{Bus, Topology};

pub use letter::{Filter, Letter};
pub use payload::{Payload, payload};

/// What the consumer's processed-events row says about a letter's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Refused, nothing of it applied: replay applies it.
    Dead,
    /// Applied since: replay only deletes the letter.
    Applied,
    /// No row: it never reached the handler (undecodable, bad id, failed upcaster), or
    /// its consumer keeps none (stateless). Replay republishes it.
    Unrecorded,
    /// No database to ask (a service without one).
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Dead => "dead",
            Status::Applied => "applied",
            Status::Unrecorded => "unrecorded",
            Status::Unknown => "unknown",
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Published to the original subject: stored in `stream` at `sequence`, or dropped
    /// there as a `duplicate` of an earlier replay of the same letter.
    Republished {
        stream: String,
        sequence: u64,
        duplicate: bool,
    },
    /// Its consumer has applied the event: nothing was published.
    AlreadyApplied,
}

/// The dead letters of some consumers (a service's own), and their processed-events rows.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    topology: Topology,
    consumers: Vec<String>,
    pool: Option<PgPool>,
}

impl DeadLetters {
    /// The letters of `consumers`, whose rows are in `pool` (if they keep any).
    pub fn new(
        js: jetstream::Context,
        topology: Topology,
        consumers: &[&str],
        pool: Option<PgPool>,
    ) -> DeadLetters {
        DeadLetters {
            js,
            topology,
            consumers: consumers.iter().map(|c| (*c).to_owned()).collect(),
            pool,
        }
    }

    pub fn consumers(&self) -> &[String] {
        &self.consumers
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, BusError> {
        self.js
            .get_stream(self.topology.stream(Bus::DeadLetter))
            .await
            .map_err(BusError::nats)
    }

    /// The letters `filter` selects, in stream order.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<Letter>, BusError> {
        let mut letters = Vec::new();
        if !filter.sequences.is_empty() {
            for &sequence in &filter.sequences {
                if let Some(letter) = self.get(sequence).await?
                    && filter.matches(&letter)
                {
                    letters.push(letter);
                }
            }
            return Ok(letters);
        }
        let stream = self.stream().await?;
        for consumer in &self.consumers {
            if filter.consumer.as_ref().is_some_and(|c| c != consumer) {
                continue;
            }
            for letter in self.read(&stream, consumer).await? {
                if filter.matches(&letter) {
                    letters.push(letter);
                }
            }
        }
        letters.sort_by_key(|l| l.sequence);
        Ok(letters)
    }

    /// Every letter of `consumer`, through an ephemeral consumer of its subject.
    async fn read(
        &self,
        stream: &jetstream::stream::Stream,
        consumer: &str,
    ) -> Result<Vec<Letter>, BusError> {
        let mut reader = stream
            .create_consumer(pull::Config {
                filter_subject: self.topology.dead_letter_subject(consumer),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(BusError::nats)?;
        let pending = reader.info().await.map_err(BusError::nats)?.num_pending as usize;
        let name = reader.cached_info().name.clone();
        let mut letters = Vec::with_capacity(pending);
        while letters.len() < pending {
            let mut batch = reader
                .fetch()
                .max_messages(pending - letters.len())
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(BusError::nats)?;
            let before = letters.len();
            while let Some(message) = batch.next().await {
                let message = message.map_err(BusError::nats)?;
                let sequence = message.info().map_err(BusError::nats)?.stream_sequence;
                letters.push(Letter::decode(sequence, &message.payload)?);
            }
            // Deleted meanwhile (another replay): fewer than counted.
            if letters.len() == before {
                break;
            }
        }
        let _ = stream.delete_consumer(&name).await;
        Ok(letters)
    }

    /// The letter at `sequence` of the dead-letter stream, if it is one of these consumers'.
    pub async fn get(&self, sequence: u64) -> Result<Option<Letter>, BusError> {
        let message = match self.stream().await?.get_raw_message(sequence).await {
            Ok(message) => message,
            Err(error) => {
                let missing = matches!(
                    error.kind(),
                    jetstream::stream::RawMessageErrorKind::NoMessageFound
                );
                return if missing {
                    Ok(None)
                } else {
                    Err(BusError::nats(error))
                };
            }
        };
        let ours = self
            .consumers
            .iter()
            .any(|c| message.subject.as_str() == self.topology.dead_letter_subject(c));
        if !ours {
            return Ok(None);
        }
        Letter::decode(sequence, &message.payload).map(Some)
    }

    /// What the processed-events rows say about each of `letters`' events.
    pub async fn statuses(&self, letters: &[Letter]) -> Result<Vec<Status>, BusError> {
        let Some(pool) = &self.pool else {
            return Ok(vec![Status::Unknown; letters.len()]);
        };
        let keyed: Vec<(usize, &str, Uuid)> = letters
            .iter()
            .enumerate()
            .filter_map(|(i, l)| Some((i, l.consumer.as_str(), l.event_id()?)))
            .collect();
        let consumers: Vec<String> = keyed.iter().map(|(_, c, _)| (*c).to_owned()).collect();
        let ids: Vec<Uuid> = keyed.iter().map(|(_, _, id)| *id).collect();
        let rows = sqlx::query!(
            "SELECT p.consumer, p.event_id, p.outcome
             FROM eventbus.processed_events p
             JOIN UNNEST($1::text[], $2::uuid[]) AS t(consumer, event_id)
               ON p.consumer = t.consumer AND p.event_id = t.event_id",
            &consumers,
            &ids,
        )
        .fetch_all(pool)
        .await?;
        let mut statuses = vec![Status::Unrecorded; letters.len()];
        for (index, consumer, id) in keyed {
            let row = rows
                .iter()
                .find(|r| r.consumer == consumer && r.event_id == id);
            if let Some(row) = row {
                statuses[index] = if row.outcome == "dead" {
                    Status::Dead
                } else {
                    Status::Applied
                };
            }
        }
        Ok(statuses)
    }

    pub async fn status(&self, letter: &Letter) -> Result<Status, BusError> {
        let statuses = self.statuses(std::slice::from_ref(letter)).await?;
        Ok(statuses.first().copied().unwrap_or(Status::Unknown))
    }

    /// Publishes the original to its subject under the letter's replay id, whatever its
    /// status (see [`DeadLetters::replay`]); JetStream's acknowledgement says whether it
    /// dropped it as a duplicate.
    pub async fn republish(&self, letter: &Letter) -> Result<PublishAck, BusError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", letter.replay_id().as_str());
        headers.insert("Popug-Replay-Of", letter.sequence.to_string().as_str());
        self.js
            .publish_with_headers(letter.subject.clone(), headers, letter.original.clone())
            .await
            .map_err(BusError::nats)?
            .await
            .map_err(BusError::nats)
    }

    /// Deletes the letter from the dead-letter stream; false when it was gone already.
    pub async fn remove(&self, letter: &Letter) -> Result<bool, BusError> {
        match self.stream().await?.delete_message(letter.sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(error) => match error.kind() {
                // NATS 2.9 says "no message found" under the generic delete-failed code.
                jetstream::stream::DeleteMessageErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::NO_MESSAGE_FOUND
                        || (e.error_code() == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
                            && e.to_string().contains("no message found")) =>
                {
                    Ok(false)
                }
                _ => Err(BusError::nats(error)),
            },
        }
    }

    /// Replays `letter` to its consumer (see the module docs): republishes it unless its
    /// consumer has applied the event, then deletes the letter.
    pub async fn replay(&self, letter: &Letter) -> Result<Replayed, BusError> {
        let replayed = if self.status(letter).await? == Status::Applied {
            Replayed::AlreadyApplied
        } else {
            let ack = self.republish(letter).await?;
            Replayed::Republished {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            }
        };
        self.remove(letter).await.map_err(|e| {
            // Replaying it again is safe: the same message id, or the consumer's row.
            BusError::Nats(format!(
                "{replayed:?}, but the letter could not be deleted (replay it again): {e}"
            ))
        })?;
        tracing::info!(
            consumer = %letter.consumer,
            subject = %letter.subject,
            letter = letter.sequence,
            ?replayed,
            "dead letter replayed"
        );
        Ok(replayed)
    }
}
