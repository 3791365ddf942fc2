//! A service's background work (relay, consumers, schedulers) under one cancellation:
//! every worker gets the same stop signal, and [`Workers::join`] waits for all of them,
//! logging any that panicked by name instead of losing it.

use std::future::Future;
use std::sync::Arc;

use popug_auth::AccountVersions;
use popug_eventbus::Outbox;
use popug_grpc::{Readiness, ServeOptions};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::service::Routes;

use crate::connect::Built;
use crate::readiness::Prepare;
use crate::users::UserCopy;

/// The running workers of one service.
pub struct Workers {
    stop: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
    /// Workers spawned after [`Workers::start`] begin once the service is prepared (its
    /// tables exist), not before.
    readiness: Option<Readiness>,
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
            readiness: None,
        }
    }

    /// The workers every service with a database and an outbox starts with: `/metrics`
    /// (when it has a port of its own), the readiness
    /// worker (migrations with `migrator`, streams, `service`'s own preparation, then
    /// health — see [`crate::readiness`]) and the relay of its `outbox`. Returns them with
    /// the readiness the server reports; the relay and every worker spawned later wait
    /// until the service is prepared.
    pub fn start(
        shutdown: impl Future<Output = ()> + Send + 'static,
        built: &mut Built,
        outbox: &Outbox,
        migrator: &'static Migrator,
        service: impl Prepare,
    ) -> (Workers, Readiness) {
        let mut workers = Workers::new(shutdown);
        if let Some(listener) = built.metrics.take() {
            workers.spawn("metrics", |stop| crate::metrics::serve(listener, stop));
        }
        let infra = &built.infra;
        let readiness = Readiness::starting();
        let (watched, reported) = (infra.clone(), readiness.clone());
        workers.spawn("readiness", |stop| {
            crate::readiness::run(watched, migrator, service, reported, stop)
        });
        workers.readiness = Some(readiness.clone());
        let relay = infra.relay(outbox);
        workers.spawn("relay", |stop| relay.run(stop));
        (workers, readiness)
    }

    /// A future that resolves when the workers are told to stop.
    pub fn stopped(&self) -> WaitForCancellationFutureOwned {
        self.stop.clone().cancelled_owned()
    }

    /// Runs `work` (given the stop signal) in the background as `name` — once the service
    /// is prepared, when these workers follow a readiness.
    pub fn spawn<F>(
        &mut self,
        name: &'static str,
        work: impl FnOnce(WaitForCancellationFutureOwned) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let work = work(self.stopped());
        let prepared = self.readiness.clone();
        let stop = self.stop.clone();
        let handle = tokio::spawn(async move {
            if let Some(readiness) = prepared {
                tokio::select! {
                    () = readiness.wait_prepared() => {}
                    () = stop.cancelled() => return,
                }
            }
            work.await;
        });
        self.running.push((name, handle));
    }

    /// Tells every worker to stop.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Keeps an [`AccountVersions`] in step with the service's copy of the users, in a
    /// worker of its own (`crate::versions::watch_copy`); what the auth layer asks
    /// whether a token was revoked.
    pub fn follow_account_versions<C: UserCopy>(
        &mut self,
        pool: PgPool,
        copy: C,
    ) -> Arc<AccountVersions> {
        let versions = Arc::new(AccountVersions::new());
        let watched = versions.clone();
        self.spawn("account-versions", |stop| {
            crate::versions::watch_copy(pool, copy, watched, stop)
        });
        versions
    }

    /// Serves `routes` on `grpc` until shutdown, then stops every worker and waits for
    /// them: the end of every service's `run_until_stopped`.
    pub async fn serve(
        self,
        grpc: TcpListener,
        routes: Routes,
        options: ServeOptions,
    ) -> anyhow::Result<()> {
        let served = popug_grpc::serve(grpc, routes, options, self.stopped()).await;
        self.join().await;
        Ok(served?)
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
