//! A service's background work (relay, consumers, schedulers) under one cancellation:
//! every worker gets the same stop signal, and [`Workers::join`] waits for all of them,
//! logging any that panicked by name instead of losing it.

use std::future::Future;

use popug_eventbus::Outbox;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::connect::Infra;

/// The running workers of one service.
pub struct Workers {
    stop: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    /// Workers that stop when `shutdown` resolves (or [`Workers::stop`] is called).
    pub fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Workers {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown => trigger.cancel(),
                () = trigger.cancelled() => {}
            }
        });
        Workers {
            stop,
            running: Vec::new(),
        }
    }

    /// Workers (as [`Workers::new`]) starting with the relay of the service's `outbox`.
    pub fn with_relay(
        shutdown: impl Future<Output = ()> + Send + 'static,
        infra: &Infra,
        outbox: &Outbox,
    ) -> Workers {
        let mut workers = Workers::new(shutdown);
        let relay = infra.relay(outbox);
        workers.spawn("relay", |stop| relay.run(stop));
        workers
    }

    /// A future that resolves when the workers are told to stop.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Runs `work` (given the stop signal) in the background as `name`.
    pub fn spawn<F>(
        &mut self,
        name: &'static str,
        work: impl FnOnce(WaitForCancellationFutureOwned) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = tokio::spawn(work(self.stopped()));
        self.running.push((name, handle));
    }

    /// Tells every worker to stop.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops every worker and waits for them; a worker that panicked is logged.
    pub async fn join(self) {
        self.stop.cancel();
        for (name, handle) in self.running {
            if let Err(error) = handle.await {
                tracing::error!(worker = name, %error, "background worker failed");
            }
        }
    }
}
