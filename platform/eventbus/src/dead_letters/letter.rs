//! A dead letter as read from the dead-letter stream ([`Letter`]), and which letters a
//! command selects ([`Filter`]).

use bytes::Bytes;
use prost::Message;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{BusError, DeadLetter, Envelope};

/// One message of the dead-letter stream, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Letter {
    /// Its sequence in the dead-letter stream: how the commands name it.
    pub sequence: u64,
    /// The consumer that gave up.
    pub consumer: String,
    /// The subject the original was received on (prefix included).
    pub subject: String,
    pub reason: String,
    pub failed_at: Option<OffsetDateTime>,
    /// The original's sequence in its own stream.
    pub original_sequence: u64,
    /// The original message, byte for byte.
    pub original: Bytes,
    /// The original decoded as an envelope, unless it is none.
    pub envelope: Option<Envelope>,
}

impl Letter {
    /// Reads the dead-letter message at `sequence` of the dead-letter stream.
    pub fn decode(sequence: u64, payload: &[u8]) -> Result<Letter, BusError> {
        let letter = DeadLetter::decode(payload)
            .map_err(|e| BusError::Nats(format!("dead letter #{sequence} undecodable: {e}")))?;
        let failed_at = letter.failed_at.and_then(|t| {
            let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
            OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
        });
        Ok(Letter {
            sequence,
            envelope: Envelope::decode(letter.original.as_ref()).ok(),
            consumer: letter.consumer,
            subject: letter.subject,
            reason: letter.reason,
            failed_at,
            original_sequence: letter.stream_sequence,
            original: letter.original,
        })
    }

    /// The event id, if the original is an envelope with a valid one.
    pub fn event_id(&self) -> Option<Uuid> {
        self.envelope
            .as_ref()
            .and_then(|e| Uuid::parse_str(&e.event_id).ok())
    }

    /// The event's name and version, if the original is an envelope.
    pub fn event(&self) -> Option<(&str, i32)> {
        self.envelope.as_ref().map(|e| (e.name.as_str(), e.version))
    }

    /// `Nats-Msg-Id` of this letter's replay: the same for every replay of it, never the
    /// original's.
    pub fn replay_id(&self) -> String {
        format!(
            "replay:{}:{}:{}",
            self.consumer, self.subject, self.original_sequence
        )
    }
}

/// Which letters a command is about; empty fields select everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// These dead-letter stream sequences only.
    pub sequences: Vec<u64>,
    pub consumer: Option<String>,
    /// Event name (`task.assigned`).
    pub event: Option<String>,
    pub version: Option<i32>,
    /// Failed at or after.
    pub since: Option<OffsetDateTime>,
    /// Failed before.
    pub until: Option<OffsetDateTime>,
}

impl Filter {
    /// Whether `letter` is selected.
    pub fn matches(&self, letter: &Letter) -> bool {
        let event = letter.event();
        (self.sequences.is_empty() || self.sequences.contains(&letter.sequence))
            && self.consumer.as_ref().is_none_or(|c| *c == letter.consumer)
            && self
                .event
                .as_ref()
                .is_none_or(|name| event.is_some_and(|(n, _)| n == name))
            && self
                .version
                .is_none_or(|version| event.is_some_and(|(_, v)| v == version))
            && self
                .since
                .is_none_or(|since| letter.failed_at.is_some_and(|t| t >= since))
            && self
                .until
                .is_none_or(|until| letter.failed_at.is_some_and(|t| t < until))
    }
}
