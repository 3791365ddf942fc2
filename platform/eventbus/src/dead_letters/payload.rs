//! A dead letter's payload decoded for display: read through the catalog and the
//! registered upcasters, and shown in the canonical protobuf JSON mapping.

use std::sync::OnceLock;

use popug_proto::catalog;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

use crate::Envelope;

/// An envelope's payload as JSON, as far as this build (and the upcasters registered in
/// this process) can read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    /// The protobuf message it was read as (`popug.tasks.v1.TaskAssigned`).
    pub message: Option<&'static str>,
    /// The version it was read as, when an upcaster turned it into that one.
    pub upcast_to: Option<i32>,
    /// The canonical protobuf JSON of the payload, every field shown.
    pub json: Option<serde_json::Value>,
    /// Why it could not be read.
    pub error: Option<String>,
}

/// Every PopugJira message, for decoding payloads by name.
fn descriptors() -> Result<&'static DescriptorPool, String> {
    static POOL: OnceLock<Result<DescriptorPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(popug_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Reads `envelope`'s payload through the catalog (`popug_proto::catalog::KNOWN`) and the
/// registered upcasters.
pub fn payload(envelope: &Envelope) -> Payload {
    let mut read = Payload {
        message: None,
        upcast_to: None,
        json: None,
        error: None,
    };
    let current = match popug_proto::upcast::current(envelope.clone()) {
        Ok(current) => current,
        Err(unreadable) => {
            read.error = Some(unreadable.0);
            return read;
        }
    };
    if current.version != envelope.version {
        read.upcast_to = Some(current.version);
    }
    let Some(message) = catalog::message_name(&current.name, current.version) else {
        read.error = Some(format!(
            "this build has no schema for {} v{}",
            current.name, current.version
        ));
        return read;
    };
    read.message = Some(message);
    let decoded = descriptors().and_then(|pool| {
        let descriptor = pool
            .get_message_by_name(message)
            .ok_or_else(|| format!("no descriptor for {message}"))?;
        let decoded = DynamicMessage::decode(descriptor, current.payload.as_ref())
            .map_err(|e| format!("{message} undecodable: {e}"))?;
        let options = SerializeOptions::new().skip_default_fields(false);
        decoded
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|e| e.to_string())
    });
    match decoded {
        Ok(json) => read.json = Some(json),
        Err(error) => read.error = Some(error),
    }
    read
}
