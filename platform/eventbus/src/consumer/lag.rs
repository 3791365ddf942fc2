//! A consumer's lag gauges: its pending and unacknowledged messages and its dead letters
//! waiting, read from the server at most every few seconds.

use std::time::Duration;

use futures::StreamExt;
use popug_metrics::names;

use super::Consumer;
use crate::BusError;
use crate::sink::Sink;
use crate::topology::Bus;

/// How often the lag gauges are refreshed from the server.
const LAG_EVERY: Duration = Duration::from_secs(5);

impl<S: Sink> Consumer<S> {
    /// Sets the lag gauges from the durable consumer's state on the server, at most every
    /// few seconds (it is a JetStream API call).
    pub(super) async fn record_lag(&self) {
        {
            let mut last = self.lag_recorded.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < LAG_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let Ok(consumer) = self.durable().await else {
            return;
        };
        let name = self.config.name.clone();
        if let Ok(info) = consumer.get_info().await {
            metrics::gauge!(names::CONSUMER_PENDING, "consumer" => name.clone())
                .set(info.num_pending as f64);
            metrics::gauge!(names::CONSUMER_ACK_PENDING, "consumer" => name.clone())
                .set(info.num_ack_pending as f64);
        }
        if let Ok(letters) = self.dead_letters_waiting().await {
            metrics::gauge!(names::DEAD_LETTERS, "consumer" => name).set(letters as f64);
        }
    }

    /// How many of this consumer's dead letters wait in the dead-letter stream (until
    /// replayed or they expire).
    async fn dead_letters_waiting(&self) -> Result<u64, BusError> {
        let subject = self.topology.dead_letter_subject(&self.config.name);
        let stream = self
            .js
            .get_stream(self.topology.stream(Bus::DeadLetter))
            .await
            .map_err(BusError::nats)?;
        let mut subjects = stream
            .info_with_subjects(subject)
            .await
            .map_err(BusError::nats)?;
        let mut waiting = 0;
        while let Some(entry) = subjects.next().await {
            let (_, count) = entry.map_err(BusError::nats)?;
            waiting += count as u64;
        }
        Ok(waiting)
    }
}
