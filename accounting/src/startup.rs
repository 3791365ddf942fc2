//! Wiring: [`Application`] connects, migrates, binds and creates the three consumers;
//! running it serves gRPC and runs the outbox relay, the consumers, the watch of the user
//! copy's versions (revoked tokens), the day-close scheduler and the payout mailer until
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use popug_eventbus::{Bus, Consumer, ConsumerConfig, Outbox, Transactional};
use popug_grpc::ServeOptions;
use popug_proto::popug::accounting::v1::accounting_service_server::AccountingServiceServer;
use popug_proto::popug::accounting::v1::price_service_server::PriceServiceServer;
use popug_proto::popug::analytics::v1::analytics_service_server::AnalyticsServiceServer;
use popug_service::{AccountBus, Built, Infra, Prepare, Service, Shutdown, Workers};
use sqlx::migrate::Migrator;

use crate::api::Api;
use crate::config::Settings;
use crate::domain::BillingClock;
use crate::events::{
    Ledger, PRODUCER, REASSIGNS_BATCH, REASSIGNS_CONSUMER, TASKS_BATCH, TASKS_CONSUMER,
    TASKS_CONSUMERS, USERS_CONSUMER, Users,
};
use crate::mailer::Mailer;
use crate::service::Accounting;

/// The service's own migrations (the event bus brings its own).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

type LedgerConsumer = Consumer<Transactional<Ledger>>;

/// Accounting's own preparation: the first billing day opens under the configured cutoff.
struct OpenFirstDay(BillingClock);

impl Prepare for OpenFirstDay {
    async fn prepare(&self, infra: &Infra) -> anyhow::Result<()> {
        let mut conn = infra.pool.acquire().await?;
        crate::store::billing::init_open_day(&mut conn, self.0.today()).await?;
        Ok(())
    }
}

/// A built, bound, not yet running Accounting.
pub struct Application {
    settings: Settings,
    built: Built,
    accounting: Arc<Accounting>,
    ledger: Ledger,
    mailer: Arc<Mailer>,
    users: Consumer<Transactional<AccountBus<Users>>>,
    /// [`TASKS_CONSUMERS`] instances of the task consumer, sharing its durable name.
    tasks: Vec<LedgerConsumer>,
    reassigns: LedgerConsumer,
}

impl Application {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.built.grpc_addr()
    }

    /// The service state, for tests.
    pub fn accounting(&self) -> Arc<Accounting> {
        self.accounting.clone()
    }

    /// The task/reassign handler, for tests that deliver events by hand.
    pub fn ledger(&self) -> Ledger {
        self.ledger.clone()
    }

    fn ledger_consumer(
        infra: &Infra,
        ledger: &Ledger,
        name: &str,
        bus: Bus,
        batch: usize,
    ) -> LedgerConsumer {
        let config = ConsumerConfig {
            batch,
            ..ConsumerConfig::new(name, bus)
        };
        let sink = Transactional::new(infra.pool.clone(), ledger.clone());
        Consumer::new(infra.js.clone(), infra.topology.clone(), config, sink)
    }
}

impl Service for Application {
    const NAME: &'static str = "accounting";
    const CONSUMERS: &'static [&'static str] =
        &[USERS_CONSUMER, TASKS_CONSUMER, REASSIGNS_CONSUMER];
    type Settings = Settings;
    const MIGRATOR: Option<&'static Migrator> = Some(&MIGRATOR);

    async fn build(settings: Settings) -> anyhow::Result<Application> {
        let built = Built::new(&settings).await?;
        let infra = &built.infra;
        let outbox = Outbox::new(infra.topology.clone(), PRODUCER);
        let ledger = Ledger {
            outbox: outbox.clone(),
            clock: settings.clock,
        };
        let users = Consumer::new(
            infra.js.clone(),
            infra.topology.clone(),
            ConsumerConfig::new(USERS_CONSUMER, Bus::Account),
            Transactional::new(infra.pool.clone(), AccountBus(Users)),
        );
        let tasks = (0..TASKS_CONSUMERS)
            .map(|_| Self::ledger_consumer(infra, &ledger, TASKS_CONSUMER, Bus::Task, TASKS_BATCH))
            .collect();
        let reassigns = Self::ledger_consumer(
            infra,
            &ledger,
            REASSIGNS_CONSUMER,
            Bus::Reassign,
            REASSIGNS_BATCH,
        );
        let mailer = Arc::new(Mailer::new(infra.pool.clone(), outbox.clone(), &settings)?);
        let accounting = Arc::new(Accounting {
            pool: infra.pool.clone(),
            outbox,
            clock: settings.clock,
        });
        Ok(Application {
            settings,
            built,
            accounting,
            ledger,
            mailer,
            users,
            tasks,
            reassigns,
        })
    }

    async fn run_until_stopped(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let accounting = self.accounting;
        let first_day = OpenFirstDay(self.settings.clock);
        let (mut workers, readiness) = Workers::start(
            shutdown,
            &mut self.built,
            &accounting.outbox,
            &MIGRATOR,
            first_day,
        );
        workers.spawn(USERS_CONSUMER, |stop| self.users.run(stop));
        // Tokens older than the copy's version of their account are refused.
        let versions = workers.follow_account_versions(accounting.pool.clone(), Users);
        workers.spawn(REASSIGNS_CONSUMER, |stop| self.reassigns.run(stop));
        for tasks in self.tasks {
            workers.spawn(TASKS_CONSUMER, |stop| tasks.run(stop));
        }
        workers.spawn("mailer", |stop| self.mailer.run(stop));
        let pool = accounting.pool.clone();
        workers.spawn("ledger-metrics", |stop| {
            crate::metrics::record_every(pool, crate::metrics::EVERY, stop)
        });
        if let Some(interval) = self.settings.close_check_interval {
            let scheduler = accounting.clone();
            workers.spawn("day-close", |stop| scheduler.run_scheduler(interval, stop));
        }

        let api = Api(accounting);
        let routes = tonic::service::Routes::new(AccountingServiceServer::new(api.clone()))
            .add_service(AnalyticsServiceServer::new(api.clone()))
            .add_service(PriceServiceServer::new(api));
        let options = ServeOptions {
            service_names: vec![
                "popug.accounting.v1.AccountingService",
                "popug.analytics.v1.AnalyticsService",
                "popug.accounting.v1.PriceService",
            ],
            auth: popug_service::auth_layer(&self.settings.common.tokens, versions)?,
            readiness,
        };
        workers.serve(self.built.grpc, routes, options).await
    }
}
