//! Faults a client must be able to act on (issue "errors clients can act on"): the
//! database going away and coming back (UNAVAILABLE within the acquire timeout, health
//! NOT_SERVING, recovery without a restart), services that start before their database and
//! NATS, and an answer lost after the commit, retried with the same idempotency key.
//! Every server a test stops is a private one it started itself.

#![allow(clippy::unwrap_used)]

mod lost_answer;
mod outage;
mod startup;

use std::net::SocketAddr;

use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// What the health service at `channel` says of `service` (NOT_SERVING when it does not
/// answer).
async fn health(channel: &Channel, service: &str) -> ServingStatus {
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match HealthClient::new(channel.clone()).check(request).await {
        Ok(response) if response.get_ref().status == ServingStatus::Serving as i32 => {
            ServingStatus::Serving
        }
        _ => ServingStatus::NotServing,
    }
}

/// A channel to `addr` that connects when first used (the service may not listen yet).
fn lazy_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}
