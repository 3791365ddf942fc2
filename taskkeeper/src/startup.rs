//! Wiring: [`Application`] connects, migrates, binds and creates the account-bus consumer;
//! running it serves gRPC and runs the outbox relay, the consumer and the watch of the
//! user copy's versions (revoked tokens) until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use popug_eventbus::{Bus, Consumer, ConsumerConfig, Outbox, Transactional};
use popug_grpc::ServeOptions;
use popug_proto::popug::tasks::v1::task_service_server::TaskServiceServer;
use popug_service::{AccountBus, Built, Infra, Service, Shutdown, Workers};
use sqlx::migrate::Migrator;

use crate::api::Api;
use crate::config::Settings;
use crate::events::{USERS_CONSUMER, Users};
use crate::service::{PRODUCER, Tasks};

/// The service's own migrations (the event bus brings its own).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A built, bound, not yet running TaskKeeper.
pub struct Application {
    settings: Settings,
    built: Built,
    tasks: Arc<Tasks>,
    users: Consumer<Transactional<AccountBus<Users>>>,
}

impl Application {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.built.grpc_addr()
    }

    /// The service state, for tests.
    pub fn tasks(&self) -> Arc<Tasks> {
        self.tasks.clone()
    }
}

impl Service for Application {
    const NAME: &'static str = "taskkeeper";
    const CONSUMERS: &'static [&'static str] = &[USERS_CONSUMER];
    type Settings = Settings;
    const MIGRATOR: Option<&'static Migrator> = Some(&MIGRATOR);

    async fn build(settings: Settings) -> anyhow::Result<Application> {
        let built = Built::new(&settings).await?;
        let Infra { pool, js, topology } = built.infra.clone();
        let users = Consumer::new(
            js,
            topology.clone(),
            ConsumerConfig::new(USERS_CONSUMER, Bus::Account),
            Transactional::new(pool.clone(), AccountBus(Users)),
        );
        let tasks = Arc::new(Tasks {
            pool,
            outbox: Outbox::new(topology, PRODUCER),
            chunk_size: settings.reassign_chunk_size,
        });
        Ok(Application {
            settings,
            built,
            tasks,
            users,
        })
    }

    async fn run_until_stopped(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let (mut workers, readiness) =
            Workers::start(shutdown, &mut self.built, &self.tasks.outbox, &MIGRATOR, ());
        workers.spawn(USERS_CONSUMER, |stop| self.users.run(stop));
        // Tokens older than the copy's version of their account are refused.
        let versions = workers.follow_account_versions(self.tasks.pool.clone(), Users);
        let pool = self.tasks.pool.clone();
        workers.spawn("idempotency-sweep", |stop| {
            popug_idempotency::sweep(pool, popug_idempotency::SWEEP_EVERY, stop)
        });

        let routes = tonic::service::Routes::new(TaskServiceServer::new(Api(self.tasks)));
        let options = ServeOptions {
            service_names: vec!["popug.tasks.v1.TaskService"],
            auth: popug_service::auth_layer(&self.settings.common.tokens, versions)?,
            readiness,
        };
        workers.serve(self.built.grpc, routes, options).await
    }
}
