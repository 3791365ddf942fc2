//! Event-driven cache invalidation: a durable consumer of the account bus drops the
//! cached profile of every account that was created, changed or deactivated, so a new
//! name or role shows at once rather than after the TTL. Replicas share the consumer
//! (and Redis), so each event is handled once. Every account event is read through
//! `popug_proto::upcast`; one it cannot read is dead-lettered like anywhere else. Without
//! NATS the TTL still bounds staleness; the consumer keeps retrying in the background.
//!
//! The accounts' versions the token check refuses revoked tokens by are not kept here:
//! this consumer is shared by the replicas, and each replica needs every event
//! (`popug_service::versions::follow_bus`, started beside it).

use std::sync::Arc;
use std::time::Duration;

use popug_eventbus::{Bus, Consumer, ConsumerConfig, Effect, Envelope, HandleError, Stateless};
use popug_proto::upcast;
use popug_service::BusSettings;

use crate::cache::Cache;

/// Durable consumer name, shared by every gateway replica.
pub const CONSUMER: &str = "gateway-cache";

/// Drops the cached profiles of the accounts the events are about.
pub struct Invalidate(pub Arc<Cache>);

impl Effect for Invalidate {
    async fn apply(&self, envelopes: &[Envelope]) -> Result<(), HandleError> {
        let keys = envelopes
            .iter()
            .map(|envelope| {
                let change = upcast::account_change(envelope)?;
                Ok(self.0.key("profile", &change.account.id))
            })
            .collect::<Result<Vec<_>, HandleError>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        // Redis away: try these again shortly.
        self.0.delete(&keys).await.map_err(HandleError::Transient)
    }
}

/// Connects and binds the consumer (retrying while NATS is away: the gateway serves
/// without it) and runs it until `stop` resolves.
pub async fn run(bus: BusSettings, cache: Arc<Cache>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut config = ConsumerConfig::new(CONSUMER, Bus::Account);
    // Older changes are covered by the TTL of whatever was cached then.
    config.deliver_all = false;
    let bind = async || -> anyhow::Result<_> {
        let (js, topology) = popug_service::connect::bus(&bus).await?;
        let sink = Stateless(Invalidate(cache.clone()));
        Ok(Consumer::bind(js, topology, config.clone(), sink).await?)
    };
    let consumer = loop {
        match bind().await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(%error, "cache invalidation consumer not bound; retrying");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    consumer.run(stop).await;
}
