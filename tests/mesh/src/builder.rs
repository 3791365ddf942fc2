//! Which services a mesh runs and how they are set up ([`MeshBuilder`]), and the start of
//! a mesh: Account first (it issues the tokens), then whatever else the builder names.

use std::collections::HashMap;
use std::net::SocketAddr;

use popug_eventbus::Topology;
use popug_service::Service;

use crate::{
    ADMIN_PASSWORD, AccountingNode, GatewayNode, Mesh, Sink, account_settings, accounting_settings,
    closed_addr, connect, gateway_settings, taskkeeper_settings,
};

type Tweak<S> = Box<dyn FnOnce(&mut S) + Send>;

/// Which services a mesh runs beside Account, and how they are set up.
#[derive(Default)]
pub struct MeshBuilder {
    account: Option<Tweak<account::Settings>>,
    taskkeeper: Option<Tweak<taskkeeper::Settings>>,
    accounting: Option<Tweak<accounting::Settings>>,
    gateway: Option<Tweak<gateway::Settings>>,
    smtp: bool,
    /// Maintenance URL of the PostgreSQL server the databases go to (default: the shared
    /// test server).
    postgres: Option<String>,
    /// The NATS server of the buses (default: the shared test server).
    nats: Option<String>,
}

impl MeshBuilder {
    /// Changes Account's settings (it always runs: it issues the tokens).
    pub fn account_with(
        mut self,
        tweak: impl FnOnce(&mut account::Settings) + Send + 'static,
    ) -> Self {
        self.account = Some(Box::new(tweak));
        self
    }

    pub fn taskkeeper(self) -> Self {
        self.taskkeeper_with(|_| {})
    }

    pub fn taskkeeper_with(
        mut self,
        tweak: impl FnOnce(&mut taskkeeper::Settings) + Send + 'static,
    ) -> Self {
        self.taskkeeper = Some(Box::new(tweak));
        self
    }

    pub fn accounting(self) -> Self {
        self.accounting_with(|_| {})
    }

    pub fn accounting_with(
        mut self,
        tweak: impl FnOnce(&mut accounting::Settings) + Send + 'static,
    ) -> Self {
        self.accounting = Some(Box::new(tweak));
        self
    }

    /// The gateway in front of whatever runs; a service that does not run is a closed
    /// port behind it.
    pub fn gateway(self) -> Self {
        self.gateway_with(|_| {})
    }

    pub fn gateway_with(
        mut self,
        tweak: impl FnOnce(&mut gateway::Settings) + Send + 'static,
    ) -> Self {
        self.gateway = Some(Box::new(tweak));
        self
    }

    /// The services' databases on this PostgreSQL server (a private one a test may stop).
    pub fn postgres(mut self, admin_url: String) -> Self {
        self.postgres = Some(admin_url);
        self
    }

    /// The buses on this NATS server (a private one a test may stop).
    pub fn nats(mut self, url: String) -> Self {
        self.nats = Some(url);
        self
    }

    /// Payout e-mails go to an SMTP [`Sink`] (otherwise to a closed port).
    pub fn smtp(mut self) -> Self {
        self.smtp = true;
        self
    }

    pub async fn start(self) -> Mesh {
        Mesh::start(self).await
    }
}

impl Mesh {
    async fn start(builder: MeshBuilder) -> Mesh {
        let _ = popug_telemetry::init("mesh-tests");
        popug_metrics::install("mesh-tests");
        let prefix = popug_testkit::unique_prefix();
        let postgres = builder
            .postgres
            .clone()
            .unwrap_or_else(popug_testkit::pg_admin_url);
        let nats = builder.nats.clone().unwrap_or_else(popug_testkit::nats_url);
        let database = async || popug_testkit::fresh_database_on(&postgres).await;
        let mut settings = account_settings(database().await, &prefix);
        settings.common.bus.nats_url = nats.clone();
        if let Some(tweak) = builder.account {
            tweak(&mut settings);
        }
        let app = account::Application::build(settings).await.unwrap();
        let account_addr = app.grpc_addr();
        let jwks_url = format!("http://{}/.well-known/jwks.json", app.http_addr());
        let accounts = app.accounts();
        let mut mesh = Mesh {
            topology: Topology::new(&prefix).unwrap(),
            js: async_nats::jetstream::new(async_nats::connect(&nats).await.unwrap()),
            account: connect(account_addr).await,
            account_addr,
            account_pool: accounts.pool.clone(),
            accounts,
            jwks_url,
            taskkeeper: None,
            accounting: None,
            gateway: None,
            smtp: None,
            admin: String::new(),
            stops: HashMap::new(),
            prefix,
        };
        mesh.run("account", app);
        Mesh::wait_serving(account_addr, "popug.account.v1.AuthService").await;

        if let Some(tweak) = builder.taskkeeper {
            let mut settings = taskkeeper_settings(database().await, &mesh.prefix, &mesh.jwks_url);
            settings.common.bus.nats_url = nats.clone();
            tweak(&mut settings);
            mesh.taskkeeper = Some(mesh.start_taskkeeper(settings).await);
        }

        if let Some(tweak) = builder.accounting {
            let smtp_port = if builder.smtp {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                mesh.smtp = Some(Sink::start(listener));
                port
            } else {
                closed_addr().port()
            };
            let database_url = database().await;
            let mut settings = accounting_settings(
                database_url.clone(),
                &mesh.prefix,
                &mesh.jwks_url,
                smtp_port,
            );
            settings.common.bus.nats_url = nats.clone();
            tweak(&mut settings);
            let app = accounting::Application::build(settings.clone())
                .await
                .unwrap();
            let addr = app.grpc_addr();
            let service = app.accounting();
            let ledger = app.ledger();
            mesh.run("accounting", app);
            Mesh::wait_serving(addr, "popug.accounting.v1.AccountingService").await;
            mesh.accounting = Some(AccountingNode {
                channel: connect(addr).await,
                addr,
                pool: service.pool.clone(),
                database_url,
                service,
                ledger,
                settings,
            });
        }

        if let Some(tweak) = builder.gateway {
            let url =
                |addr: Option<SocketAddr>| format!("http://{}", addr.unwrap_or_else(closed_addr));
            let upstreams = [
                url(Some(mesh.account_addr)),
                url(mesh.taskkeeper.as_ref().map(|n| n.addr)),
                url(mesh.accounting.as_ref().map(|n| n.addr)),
            ];
            let mut settings = gateway_settings(&mesh.prefix, upstreams, &mesh.jwks_url);
            settings.bus.nats_url = nats.clone();
            tweak(&mut settings);
            let app = gateway::Application::build(settings).await.unwrap();
            let addr = app.local_addr();
            let cache = app.cache();
            mesh.run("gateway", app);
            mesh.gateway = Some(GatewayNode {
                channel: connect(addr).await,
                addr,
                cache,
            });
        }

        mesh.admin = mesh
            .login("admin", ADMIN_PASSWORD)
            .await
            .unwrap()
            .access_token;
        mesh
    }
}
