//! Every event type on the buses, with the (name, version) it travels under, and the
//! envelope around it. This is the one place that binds a protobuf message to its name.

use prost::Message;
use uuid::Uuid;

use popug_proto::popug::account::v1 as account;
use popug_proto::popug::accounting::v1 as accounting;
use popug_proto::popug::events::v1::Envelope;
use popug_proto::popug::tasks::v1 as tasks;

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

/// Whether `envelope` holds an `E` (same name and version).
pub fn is<E: Event>(envelope: &Envelope) -> bool {
    envelope.name == E::NAME && envelope.version == E::VERSION
}

/// The `E` inside `envelope`; a payload that does not decode is a permanent failure.
pub fn open<E: Event>(envelope: &Envelope) -> Result<E, crate::HandleError> {
    E::decode(envelope.payload.as_ref()).map_err(|e| {
        crate::HandleError::Permanent(format!(
            "{} v{} payload undecodable: {e}",
            E::NAME,
            E::VERSION
        ))
    })
}
