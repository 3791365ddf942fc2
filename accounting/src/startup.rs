//! Wiring: [`Application::build`] connects, migrates, binds and creates the three
//! consumers; `run_until_stopped` serves gRPC and runs the outbox relay, the consumers,
//! the day-close scheduler and the payout mailer until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use popug_auth::{AuthLayer, HttpJwks, Verifier, VerifierConfig};
use popug_eventbus::{Bus, Consumer, ConsumerConfig, Outbox, Relay, Topology};
use popug_grpc::ServeOptions;
use popug_proto::popug::accounting::v1::accounting_service_server::AccountingServiceServer;
use popug_proto::popug::accounting::v1::price_service_server::PriceServiceServer;
use popug_proto::popug::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::config::Settings;
use crate::events::{
    Ledger, PRODUCER, REASSIGNS_BATCH, REASSIGNS_CONSUMER, TASKS_BATCH, TASKS_CONSUMER,
    TASKS_CONSUMERS, USERS_CONSUMER, Users,
};
use crate::mailer::Mailer;
use crate::service::Accounting;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A built, bound, not yet running Accounting.
pub struct Application {
    settings: Settings,
    grpc: TcpListener,
    accounting: Arc<Accounting>,
    ledger: Ledger,
    mailer: Arc<Mailer>,
    js: async_nats::jetstream::Context,
    users: Consumer<Users>,
    /// [`TASKS_CONSUMERS`] instances of the task consumer, sharing its durable name.
    tasks: Vec<Consumer<Ledger>>,
    reassigns: Consumer<Ledger>,
}

/// Connects to the database and applies every migration (the service's and the event
/// bus's). Used by `build` and by `accounting migrate`.
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
        let outbox = Outbox::new(topology.clone(), PRODUCER);

        let ledger = Ledger {
            outbox: outbox.clone(),
            cutoff: settings.day_cutoff,
        };
        let bind = |name: &str, bus: Bus| ConsumerConfig::new(name, bus);
        let users = Consumer::bind(
            js.clone(),
            pool.clone(),
            topology.clone(),
            bind(USERS_CONSUMER, Bus::Account),
            Users,
        )
        .await?;
        let mut tasks = Vec::with_capacity(TASKS_CONSUMERS);
        for _ in 0..TASKS_CONSUMERS {
            tasks.push(
                Consumer::bind(
                    js.clone(),
                    pool.clone(),
                    topology.clone(),
                    ConsumerConfig {
                        batch: TASKS_BATCH,
                        ..bind(TASKS_CONSUMER, Bus::Task)
                    },
                    ledger.clone(),
                )
                .await?,
            );
        }
        let reassigns = Consumer::bind(
            js.clone(),
            pool.clone(),
            topology.clone(),
            ConsumerConfig {
                batch: REASSIGNS_BATCH,
                ..bind(REASSIGNS_CONSUMER, Bus::Reassign)
            },
            ledger.clone(),
        )
        .await?;
        let mailer = Arc::new(Mailer::new(pool.clone(), outbox.clone(), &settings)?);
        let accounting = Arc::new(Accounting {
            pool,
            outbox,
            cutoff: settings.day_cutoff,
        });
        let grpc = TcpListener::bind(settings.grpc_addr).await?;
        Ok(Application {
            settings,
            grpc,
            accounting,
            ledger,
            mailer,
            js,
            users,
            tasks,
            reassigns,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.settings.grpc_addr)
    }

    /// The service state, for tests.
    pub fn accounting(&self) -> Arc<Accounting> {
        self.accounting.clone()
    }

    /// The task/reassign handler, for tests that deliver events by hand.
    pub fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, drains and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(grpc = %self.grpc_addr(), "accounting serving");
        let stop = CancellationToken::new();
        let accounting = self.accounting;

        let relay = Relay::new(accounting.pool.clone(), self.js, &accounting.outbox);
        let mut workers = vec![
            tokio::spawn(relay.run(stop.clone().cancelled_owned())),
            tokio::spawn(self.users.run(stop.clone().cancelled_owned())),
            tokio::spawn(self.reassigns.run(stop.clone().cancelled_owned())),
            tokio::spawn(self.mailer.run(stop.clone().cancelled_owned())),
        ];
        for tasks in self.tasks {
            workers.push(tokio::spawn(tasks.run(stop.clone().cancelled_owned())));
        }
        if let Some(interval) = self.settings.close_check_interval {
            workers.push(tokio::spawn(
                accounting
                    .clone()
                    .run_scheduler(interval, stop.clone().cancelled_owned()),
            ));
        }

        let jwks = HttpJwks::new(&self.settings.jwks_url).map_err(|e| anyhow::anyhow!(e))?;
        let verifier = Arc::new(Verifier::new(
            VerifierConfig::new(&self.settings.issuer, &self.settings.audience),
            Arc::new(jwks),
        ));
        // No public RPCs: every accounting call needs a token.
        let auth = AuthLayer::new(verifier, []);

        let api = Api(accounting.clone());
        let routes = tonic::service::Routes::new(AccountingServiceServer::new(api.clone()))
            .add_service(AnalyticsServiceServer::new(api))
            .add_service(PriceServiceServer::new(crate::prices::Prices(
                accounting.pool.clone(),
            )));
        let grpc = popug_grpc::serve(
            self.grpc,
            routes,
            ServeOptions {
                service_names: vec![
                    "popug.accounting.v1.AccountingService",
                    "popug.analytics.v1.AnalyticsService",
                    "popug.accounting.v1.PriceService",
                ],
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
        for worker in workers {
            let _ = worker.await;
        }
        served?;
        Ok(())
    }
}
