//! Wiring: [`Application::build`] connects, migrates, binds and creates the account-bus
//! consumer; `run_until_stopped` serves gRPC, runs the outbox relay and the consumer
//! until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use popug_auth::{AuthLayer, HttpJwks, Verifier, VerifierConfig};
use popug_eventbus::{Bus, Consumer, ConsumerConfig, Outbox, Relay, Topology};
use popug_grpc::ServeOptions;
use popug_proto::popug::tasks::v1::task_service_server::TaskServiceServer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::config::Settings;
use crate::events::{USERS_CONSUMER, Users};
use crate::service::{PRODUCER, Tasks};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A built, bound, not yet running TaskKeeper.
pub struct Application {
    settings: Settings,
    grpc: TcpListener,
    tasks: Arc<Tasks>,
    js: async_nats::jetstream::Context,
    users: Consumer<Users>,
}

/// Connects to the database and applies every migration (the service's and the event
/// bus's). Used by `build` and by `taskkeeper migrate`.
pub async fn connect_and_migrate(settings: &Settings) -> anyhow::Result<PgPool> {
    let pool = popug_eventbus::schema::connect_and_migrate(
        &settings.database_url,
        settings.database_max_connections,
        &MIGRATOR,
    )
    .await?;
    Ok(pool)
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.validate()?;
        let pool = connect_and_migrate(&settings).await?;
        let client = async_nats::connect(&settings.nats_url)
            .await
            .map_err(|e| anyhow::anyhow!("NATS unreachable at {}: {e}", settings.nats_url))?;
        let js = async_nats::jetstream::new(client);
        let topology = Topology::new(&settings.stream_prefix)?;
        topology.ensure_streams(&js).await?;

        let users = Consumer::bind(
            js.clone(),
            pool.clone(),
            topology.clone(),
            ConsumerConfig::new(USERS_CONSUMER, Bus::Account),
            Users,
        )
        .await?;
        let tasks = Arc::new(Tasks {
            pool,
            outbox: Outbox::new(topology, PRODUCER),
            chunk_size: settings.reassign_chunk_size,
        });
        let grpc = TcpListener::bind(settings.grpc_addr).await?;
        Ok(Application {
            settings,
            grpc,
            tasks,
            js,
            users,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.settings.grpc_addr)
    }

    /// The service state, for tests.
    pub fn tasks(&self) -> Arc<Tasks> {
        self.tasks.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, drains and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(grpc = %self.grpc_addr(), "taskkeeper serving");
        let stop = CancellationToken::new();
        let tasks = self.tasks;

        let relay = Relay::new(tasks.pool.clone(), self.js, &tasks.outbox);
        let relay = tokio::spawn(relay.run(stop.clone().cancelled_owned()));
        let users = tokio::spawn(self.users.run(stop.clone().cancelled_owned()));

        let jwks = HttpJwks::new(&self.settings.jwks_url).map_err(|e| anyhow::anyhow!(e))?;
        let verifier = Arc::new(Verifier::new(
            VerifierConfig::new(&self.settings.issuer, &self.settings.audience),
            Arc::new(jwks),
        ));
        // No public RPCs: every task call needs a token.
        let auth = AuthLayer::new(verifier, []);

        let routes = tonic::service::Routes::new(TaskServiceServer::new(Api(tasks.clone())));
        let grpc = popug_grpc::serve(
            self.grpc,
            routes,
            ServeOptions {
                service_names: vec!["popug.tasks.v1.TaskService"],
                file_descriptor_sets: vec![popug_proto::FILE_DESCRIPTOR_SET],
                auth,
            },
            stop.clone().cancelled_owned(),
        );

        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let served = grpc.await;
        stop.cancel();
        let _ = tokio::join!(relay, users);
        served?;
        Ok(())
    }
}
