//! Every event type on the buses, with the (name, version) it travels under: the one
//! place that binds a protobuf message to its name. [`open`] reads one out of its
//! envelope; [`KNOWN`] lists them all with their protobuf message, for tools that decode
//! an envelope they hold no Rust type for (the dead-letter commands).

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

/// One (name, version) of [`KNOWN`] and the protobuf message its payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub name: &'static str,
    pub version: i32,
    /// Fully qualified protobuf message name, e.g. `popug.tasks.v1.TaskAssigned`: look it
    /// up in [`crate::FILE_DESCRIPTOR_SET`].
    pub message: &'static str,
}

macro_rules! events {
    ($($ty:ty => $name:literal v $version:literal = $message:literal),* $(,)?) => {
        $(impl Event for $ty {
            const NAME: &'static str = $name;
            const VERSION: i32 = $version;
        })*

        /// Every (name, version) some build of PopugJira publishes, with its message.
        pub const KNOWN: &[Known] = &[
            $(Known { name: $name, version: $version, message: $message }),*
        ];
    };
}

events! {
    account::AccountCreated => "account.created" v 1 = "popug.account.v1.AccountCreated",
    account::AccountUpdated => "account.updated" v 1 = "popug.account.v1.AccountUpdated",
    account::AccountDeleted => "account.deleted" v 1 = "popug.account.v1.AccountDeleted",
    tasks::TaskCreatedV1 => "task.created" v 1 = "popug.tasks.v1.TaskCreatedV1",
    tasks::TaskCreated => "task.created" v 2 = "popug.tasks.v1.TaskCreated",
    tasks::TaskAssigned => "task.assigned" v 1 = "popug.tasks.v1.TaskAssigned",
    tasks::TaskCompleted => "task.completed" v 1 = "popug.tasks.v1.TaskCompleted",
    tasks::ReassignChunk => "reassign.chunk" v 1 = "popug.tasks.v1.ReassignChunk",
    accounting::EntryApplied => "accounting.entry_applied" v 1 = "popug.accounting.v1.EntryApplied",
    accounting::DayClosed => "accounting.day_closed" v 1 = "popug.accounting.v1.DayClosed",
    accounting::PayoutSent => "accounting.payout_sent" v 1 = "popug.accounting.v1.PayoutSent",
}

/// The protobuf message (fully qualified) of event `name` at `version`, if any build
/// publishes it.
pub fn message_name(name: &str, version: i32) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|k| k.name == name && k.version == version)
        .map(|k| k.message)
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

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    #[test]
    fn every_known_event_names_a_message_of_the_descriptor_set() {
        let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .unwrap_or_else(|e| panic!("descriptor set: {e}"));
        let messages: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.message_type
                    .iter()
                    .map(move |m| format!("{}.{}", f.package(), m.name()))
            })
            .collect();
        for known in KNOWN {
            assert!(
                messages.iter().any(|m| m == known.message),
                "{} v{}: no message {}",
                known.name,
                known.version,
                known.message
            );
        }
        assert_eq!(
            message_name("task.created", 1),
            Some("popug.tasks.v1.TaskCreatedV1")
        );
        assert_eq!(message_name("task.assigned", 9), None);
    }
}
