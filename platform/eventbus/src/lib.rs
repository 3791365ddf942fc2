//! Events on NATS JetStream (REQUIREMENTS §7): generic machinery, no domain rules (what
//! the events mean and how old versions read is `popug_proto::{catalog, upcast}`).
//!
//! - [`topology`] — the buses: stream and subject names under a prefix (so tests and
//!   deployments can share a server), created or updated idempotently at start.
//! - [`outbox`] — producers write events in the same transaction as the state change;
//!   the [`outbox::Relay`] publishes them in commit order with `Nats-Msg-Id` = event id
//!   and marks them only after JetStream acknowledged them.
//! - [`consumer`] — durable pull consumers; what can never be processed goes to the
//!   dead-letter stream with the reason.
//! - [`dead_letters`] — listing, showing and replaying dead letters, each replayed event
//!   applied exactly once.
//! - [`sink`] — where their events go: a batch applied in one transaction together with
//!   the processed-events record and acked after commit ([`Handler`]), or, for effects
//!   that need no database, applied as it comes ([`Effect`]).
//! - [`schema`] — the tables above, migrated into schema `eventbus` of each service's DB.

pub mod consumer;
pub mod dead_letters;
pub mod outbox;
pub mod schema;
pub mod sink;
pub mod topology;

pub use consumer::{Consumer, ConsumerConfig};
pub use outbox::{Outbox, Relay, envelope};
pub use popug_proto::popug::events::v1::{DeadLetter, Envelope};
pub use sink::{Effect, HandleError, Handler, Stateless, Transactional};
pub use topology::{Bus, Topology, nats_servers};

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
