//! Event-driven cache invalidation: a durable consumer of the account bus drops the
//! cached profile of every account that was created, changed or deactivated, so a new
//! name or role shows at once rather than after the TTL. Replicas share the consumer
//! (and Redis), so each event is handled once. Without NATS the TTL still bounds
//! staleness; the consumer keeps retrying in the background.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use popug_eventbus::{Bus, Envelope, Topology};
use popug_proto::popug::account::v1::AccountCreated;
use prost::Message;

use crate::cache::Cache;

/// Runs until the process ends; reconnects and rebinds on any failure.
pub async fn run(nats_url: String, topology: Topology, cache: Arc<Cache>) {
    loop {
        match consume(&nats_url, &topology, &cache).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(%error, "cache invalidation consumer stopped; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn consume(nats_url: &str, topology: &Topology, cache: &Cache) -> Result<(), String> {
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|e| e.to_string())?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(topology.stream(Bus::Account))
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .get_or_create_consumer(
            "gateway-cache",
            pull::Config {
                durable_name: Some("gateway-cache".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                // Older changes are covered by the TTL of whatever was cached then.
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| e.to_string())?);
        }
        if messages.is_empty() {
            continue;
        }
        let keys: Vec<String> = messages
            .iter()
            .filter_map(|m| account_id(&m.payload))
            .map(|id| cache.key("profile", &id))
            .collect();
        let outcome = if keys.is_empty() {
            Ok(())
        } else {
            cache.delete(&keys).await
        };
        for message in &messages {
            let ack = match &outcome {
                Ok(()) => AckKind::Ack,
                // Redis is away: try these again shortly.
                Err(_) => AckKind::Nak(Some(Duration::from_secs(1))),
            };
            if let Err(error) = message.ack_with(ack).await {
                tracing::debug!(%error, "invalidation ack failed; the event will come again");
            }
        }
    }
}

/// The account an account event is about. Every account event (v1) carries the
/// snapshot in field 1, so one message type reads them all.
fn account_id(payload: &[u8]) -> Option<String> {
    let envelope = Envelope::decode(payload).ok()?;
    if !envelope.name.starts_with("account.") || envelope.version != 1 {
        return None;
    }
    let event = AccountCreated::decode(envelope.payload.as_ref()).ok()?;
    event.account.map(|a| a.id)
}
