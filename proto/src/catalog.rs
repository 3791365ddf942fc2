//! Every event type on the buses, with the (name, version) it travels under: the one
//! place that binds a protobuf message to its name. [`open`] reads one out of its
//! envelope.

use prost::Message;

use crate::popug::account::v1 as account;
use crate::popug::accounting::v1 as accounting;
use crate::popug::events::v1::Envelope;
use crate::popug::tasks::v1 as tasks;

/// A protobuf message that travels on a bus.
pub trait Event: Message + Default {
    /// Dotted name; its first token names the bus (`account.created` → account bus).
    const NAME: &'static str;
    /// Schema version of this message under `NAME`.
    const VERSION: i32;
}

macro_rules! events {
    ($($ty:ty => $name:literal v $version:literal),* $(,)?) => {
        $(impl Event for $ty {
            const NAME: &'static str = $name;
            const VERSION: i32 = $version;
        })*
    };
}

events! {
    account::AccountCreated => "account.created" v 1,
    account::AccountUpdated => "account.updated" v 1,
    account::AccountDeleted => "account.deleted" v 1,
    tasks::TaskCreatedV1 => "task.created" v 1,
    tasks::TaskCreated => "task.created" v 2,
    tasks::TaskAssigned => "task.assigned" v 1,
    tasks::TaskCompleted => "task.completed" v 1,
    tasks::ReassignChunk => "reassign.chunk" v 1,
    accounting::EntryApplied => "accounting.entry_applied" v 1,
    accounting::DayClosed => "accounting.day_closed" v 1,
    accounting::PayoutSent => "accounting.payout_sent" v 1,
}

/// An event that can never be read: an unknown name or version, or a payload that does
/// not decode. Consumers dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl Unreadable {
    /// `envelope` is none of the events its reader knows.
    pub fn unknown(envelope: &Envelope) -> Unreadable {
        Unreadable(format!(
            "unknown event {} v{}",
            envelope.name, envelope.version
        ))
    }
}

/// Whether `envelope` holds an `E` (same name and version).
pub fn is<E: Event>(envelope: &Envelope) -> bool {
    envelope.name == E::NAME && envelope.version == E::VERSION
}

/// The `E` inside `envelope`.
pub fn open<E: Event>(envelope: &Envelope) -> Result<E, Unreadable> {
    E::decode(envelope.payload.as_ref()).map_err(|e| {
        Unreadable(format!(
            "{} v{} payload undecodable: {e}",
            E::NAME,
            E::VERSION
        ))
    })
}
