//! The test mesh: Account, TaskKeeper, Accounting and the Gateway started in-process (port
//! 0, a fresh database each, one unique stream prefix, real PostgreSQL, NATS and Redis),
//! for the integration tests in `tests/` and for the benchmarks. The services' settings
//! are written here once; a test tweaks what it needs.
//!
//! ```text
//! let mesh = Mesh::builder().taskkeeper().accounting().start().await;
//! let worker = mesh.user("kesha", Role::Worker).await;
//! ```
//!
//! - [`smtp`] — an SMTP sink that keeps every mail it is sent
//! - [`call`] — request helpers: bearer tokens, status checks, paging, raw calls by path
//! - [`nodes`] — the services as separate processes (`popug-node`), for what needs
//!   process boundaries

#![allow(clippy::unwrap_used)] // Test support: a failure should stop the test loudly.

pub mod call;
pub mod nodes;
pub mod proxy;
pub mod smtp;
pub mod through;

mod builder;
mod settings;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use popug_eventbus::{Bus, Envelope, Topology};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::account::v1::account_service_client::AccountServiceClient;
use popug_service::Service;
use prost::Message;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use uuid::Uuid;

pub use builder::MeshBuilder;
pub use call::with_token;
pub use settings::{account_settings, accounting_settings, gateway_settings, taskkeeper_settings};
pub use smtp::Sink;

/// Password of the bootstrap admin every mesh starts with.
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const ISSUER: &str = "test-issuer";
pub const AUDIENCE: &str = "test-audience";
/// How long a test waits for something asynchronous (an event applied, a mail sent).
pub const WAIT: Duration = Duration::from_secs(20);

/// TaskKeeper as a test sees it.
pub struct TaskKeeperNode {
    pub channel: Channel,
    pub addr: SocketAddr,
    /// Its database, for checks of what it stored.
    pub pool: PgPool,
    pub tasks: Arc<taskkeeper::service::Tasks>,
    settings: taskkeeper::Settings,
}

/// Accounting as a test sees it.
pub struct AccountingNode {
    pub channel: Channel,
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub database_url: String,
    pub service: Arc<accounting::service::Accounting>,
    /// The task/reassign handler, for delivering hand-made events.
    pub ledger: accounting::events::Ledger,
    /// The settings it runs with (for a second replica).
    pub settings: accounting::Settings,
}

/// The gateway as a test sees it.
pub struct GatewayNode {
    pub channel: Channel,
    pub addr: SocketAddr,
    pub cache: Arc<gateway::cache::Cache>,
}

/// A running mesh. Dropping it stops every service.
pub struct Mesh {
    pub prefix: String,
    pub topology: Topology,
    pub js: async_nats::jetstream::Context,
    pub account: Channel,
    pub account_addr: SocketAddr,
    pub account_pool: PgPool,
    pub accounts: Arc<account::service::Accounts>,
    /// Account's JWKS document.
    pub jwks_url: String,
    pub taskkeeper: Option<TaskKeeperNode>,
    pub accounting: Option<AccountingNode>,
    pub gateway: Option<GatewayNode>,
    pub smtp: Option<Sink>,
    /// The bootstrap admin's access token.
    pub admin: String,
    stops: HashMap<&'static str, oneshot::Sender<()>>,
}

/// A user created through Account, signed in.
#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// An address nothing listens on: a service that is down.
pub fn closed_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits (at most [`WAIT`], as `what`) until `sql`, a `SELECT count(*) …` against a
/// service's database, counts `n`. Test SQL: not checked at compile time.
pub async fn wait_for_count(pool: &PgPool, what: &str, sql: &str, n: i64) {
    popug_testkit::eventually(WAIT, what, || async {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        (count == n).then_some(())
    })
    .await;
}

impl Mesh {
    /// Every service and the gateway, as they run in production.
    pub async fn everything() -> Mesh {
        Mesh::builder()
            .taskkeeper()
            .accounting()
            .gateway()
            .start()
            .await
    }

    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// Runs `app` until [`Mesh::stop`] names it or the mesh is dropped.
    fn run<S: Service>(&mut self, name: &'static str, app: S) {
        let (stop, stopped) = oneshot::channel::<()>();
        self.stops.insert(name, stop);
        tokio::spawn(app.run_until_stopped(Box::pin(async move {
            let _ = stopped.await;
        })));
    }

    async fn start_taskkeeper(&mut self, settings: taskkeeper::Settings) -> TaskKeeperNode {
        let app = taskkeeper::Application::build(settings.clone())
            .await
            .unwrap();
        let addr = app.grpc_addr();
        let tasks = app.tasks();
        self.run("taskkeeper", app);
        Mesh::wait_serving(addr, "popug.tasks.v1.TaskService").await;
        TaskKeeperNode {
            channel: connect(addr).await,
            addr,
            pool: tasks.pool.clone(),
            tasks,
            settings,
        }
    }

    /// Stops TaskKeeper and starts a new one on the same database and buses, on a new
    /// port (what a crashed process's replacement is; the gateway keeps the old address).
    pub async fn restart_taskkeeper(&mut self) {
        self.stop("taskkeeper");
        let settings = self.taskkeeper().settings.clone();
        self.taskkeeper = Some(self.start_taskkeeper(settings).await);
    }

    /// Waits until the service at `addr` reports `service` SERVING: prepared (migrated,
    /// its streams made) and its database and NATS reachable.
    pub async fn wait_serving(addr: SocketAddr, service: &str) {
        // Lazily: a process may not listen yet.
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        popug_testkit::eventually(WAIT, &format!("{service} SERVING"), || {
            let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
            let request = tonic_health::pb::HealthCheckRequest {
                service: service.to_owned(),
            };
            async move {
                let status = client.check(request).await.ok()?.into_inner().status;
                (status == tonic_health::ServingStatus::Serving as i32).then_some(())
            }
        })
        .await;
    }

    /// Stops one service (`account`, `taskkeeper`, `accounting`, `gateway`) as a clean
    /// shutdown would.
    pub fn stop(&mut self, name: &str) {
        if let Some(stop) = self.stops.remove(name) {
            let _ = stop.send(());
        }
    }

    pub fn taskkeeper(&self) -> &TaskKeeperNode {
        self.taskkeeper
            .as_ref()
            .expect("the mesh runs no TaskKeeper")
    }

    pub fn accounting(&self) -> &AccountingNode {
        self.accounting
            .as_ref()
            .expect("the mesh runs no Accounting")
    }

    pub fn gateway(&self) -> &GatewayNode {
        self.gateway.as_ref().expect("the mesh runs no gateway")
    }

    /// Account's `AccountService`, called directly.
    pub fn accounts_client(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.account.clone())
    }

    /// Changes an account with `token`'s rights, at Account directly.
    pub async fn update_account(
        &self,
        token: &str,
        request: account_pb::UpdateAccountRequest,
    ) -> Result<account_pb::Account, tonic::Status> {
        let response = self
            .accounts_client()
            .update_account(with_token(token, request))
            .await?;
        Ok(response.into_inner().account.unwrap())
    }

    /// Deletes (deactivates) account `id` with `token`'s rights, at Account directly.
    pub async fn delete_account(
        &self,
        token: &str,
        id: impl ToString,
    ) -> Result<account_pb::Account, tonic::Status> {
        let request = account_pb::DeleteAccountRequest { id: id.to_string() };
        let response = self
            .accounts_client()
            .delete_account(with_token(token, request))
            .await?;
        Ok(response.into_inner().account.unwrap())
    }

    /// Logs in at Account directly.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<account_pb::TokenPair, tonic::Status> {
        let response =
            account_pb::auth_service_client::AuthServiceClient::new(self.account.clone())
                .login(account_pb::LoginRequest {
                    username: username.into(),
                    password: password.into(),
                })
                .await?;
        Ok(response.into_inner().tokens.unwrap())
    }

    /// Creates `username` with `role` (as the admin) and logs them in. Their password
    /// is `<username>-password`, their e-mail `<username>@test.example`.
    pub async fn user(&self, username: &str, role: account_pb::Role) -> User {
        let password = format!("{username}-password");
        let email = format!("{username}@test.example");
        let request = account_pb::CreateAccountRequest {
            username: username.into(),
            name: format!("Popug {username}"),
            surname: "Popugaev".into(),
            email: email.clone(),
            role: role as i32,
            password: password.clone(),
            extra_permissions: vec![],
        };
        let created = self
            .accounts_client()
            .create_account(with_token(&self.admin, request))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        let token = self.login(username, &password).await.unwrap().access_token;
        User {
            id: created.id.parse().unwrap(),
            username: username.into(),
            email,
            password,
            token,
        }
    }

    /// Waits until TaskKeeper's copy of the users says `id` is (or is no longer)
    /// assignable.
    pub async fn assignable_in_taskkeeper(&self, id: Uuid, assignable: bool) {
        let pool = &self.taskkeeper().pool;
        popug_testkit::eventually(WAIT, "TaskKeeper's user copy", || async {
            // The test's view of TaskKeeper's table: not checked at compile time.
            let seen: Option<bool> =
                sqlx::query_scalar("SELECT assignable FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .unwrap();
            (seen == Some(assignable)).then_some(())
        })
        .await;
    }

    /// Every message of `bus` so far, decoded.
    pub async fn events(&self, bus: Bus) -> Vec<Envelope> {
        popug_testkit::read_stream(&self.js, &self.topology.stream(bus))
            .await
            .iter()
            .map(|m| Envelope::decode(m.payload.as_ref()).unwrap())
            .collect()
    }

    /// Waits until `bus` holds at least `n` messages, then returns them all.
    pub async fn wait_for_events(&self, bus: Bus, n: usize) -> Vec<Envelope> {
        let name = self.topology.stream(bus);
        popug_testkit::eventually(WAIT, "events published", || async {
            let mut stream = self.js.get_stream(&name).await.unwrap();
            let count = stream.info().await.unwrap().state.messages as usize;
            (count >= n).then_some(())
        })
        .await;
        self.events(bus).await
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (_, stop) in self.stops.drain() {
            let _ = stop.send(());
        }
    }
}
