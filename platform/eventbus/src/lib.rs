//! Events on NATS JetStream (REQUIREMENTS §7).
//!
//! - [`topology`] — the buses: stream and subject names under a prefix (so tests and
//!   deployments can share a server), created or updated idempotently at start.
//! - [`catalog`] — every event type with its name and version, and the envelope.
//! - [`outbox`] — producers write events in the same transaction as the state change;
//!   the [`outbox::Relay`] publishes them in commit order with `Nats-Msg-Id` = event id
//!   and marks them only after JetStream acknowledged them.
//! - [`consumer`] — durable pull consumers: each batch is applied in one transaction
//!   together with the processed-events record, acked after commit; what can never be
//!   processed goes to the dead-letter stream with the reason.
//! - [`schema`] — the tables above, migrated into schema `eventbus` of each service's DB.
//! - [`upcast`] — events read whatever their version (task.created v1 → v2, any account
//!   event → its snapshot), the same way in every consumer.

pub mod catalog;
pub mod consumer;
pub mod outbox;
pub mod schema;
pub mod topology;
pub mod upcast;

pub use catalog::{Event, envelope};
pub use consumer::{Consumer, ConsumerConfig, HandleError, Handler};
pub use outbox::{Outbox, Relay};
pub use popug_proto::popug::events::v1::{DeadLetter, Envelope};
pub use topology::{Bus, Topology};

/// Anything that can go wrong talking to NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("{0}")]
    Config(String),
}

impl BusError {
    pub(crate) fn nats(error: impl std::fmt::Display) -> BusError {
        BusError::Nats(error.to_string())
    }
}
