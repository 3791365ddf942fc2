//! Wiring: [`Application::build`] connects, migrates, binds; `run_until_stopped` serves
//! gRPC and HTTP and runs the outbox relay until the shutdown future resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use popug_auth::{AuthLayer, Verifier, VerifierConfig};
use popug_eventbus::{Outbox, Relay, Topology};
use popug_grpc::ServeOptions;
use popug_proto::popug::account::v1::account_service_server::AccountServiceServer;
use popug_proto::popug::account::v1::auth_service_server::AuthServiceServer;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::config::Settings;
use crate::keys::{KeyRing, LocalJwks};
use crate::service::{Accounts, TokenPolicy};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A built, bound, not yet running Account.
pub struct Application {
    settings: Settings,
    grpc: TcpListener,
    http: TcpListener,
    accounts: Arc<Accounts>,
    js: async_nats::jetstream::Context,
}

/// Connects to the database and applies every migration (the service's and the event
/// bus's). Used by `build` and by `account migrate`.
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
        let pool = connect_and_migrate(&settings).await?;
        let client = async_nats::connect(&settings.nats_url)
            .await
            .map_err(|e| anyhow::anyhow!("NATS unreachable at {}: {e}", settings.nats_url))?;
        let js = async_nats::jetstream::new(client);
        let topology = Topology::new(&settings.stream_prefix)?;
        topology.ensure_streams(&js).await?;

        let pem = match &settings.signing_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("signing key file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let keys = Arc::new(KeyRing::load(pool.clone(), pem.as_deref()).await?);
        let tokens = TokenPolicy {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            access_ttl: settings.access_ttl,
            refresh_ttl: settings.refresh_ttl,
        };
        let outbox = Outbox::new(topology, "account");
        let accounts = Arc::new(Accounts::new(pool, outbox, keys, tokens).await?);
        if let Some(admin) = &settings.bootstrap_admin {
            accounts
                .bootstrap_admin(admin)
                .await
                .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
        }

        let grpc = TcpListener::bind(settings.grpc_addr).await?;
        let http = TcpListener::bind(settings.http_addr).await?;
        Ok(Application {
            settings,
            grpc,
            http,
            accounts,
            js,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().unwrap_or(self.settings.grpc_addr)
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.settings.http_addr)
    }

    /// The service state, for tests and the CLI.
    pub fn accounts(&self) -> Arc<Accounts> {
        self.accounts.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting, drains and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(grpc = %self.grpc_addr(), http = %self.http_addr(), "account serving");
        let stop = CancellationToken::new();
        let accounts = self.accounts;

        let relay = Relay::new(accounts.pool.clone(), self.js, &accounts.outbox);
        let relay = tokio::spawn(relay.run(stop.clone().cancelled_owned()));

        let keys = accounts.keys.clone();
        let interval = self.settings.key_reload_interval;
        let reload_stop = stop.clone();
        let reloader = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = reload_stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {
                        if let Err(error) = keys.reload().await {
                            tracing::warn!(%error, "signing key reload failed");
                        }
                    }
                }
            }
        });

        let mut verifier = VerifierConfig::new(&self.settings.issuer, &self.settings.audience);
        // The source is in-process and cheap: no need to throttle refetches.
        verifier.refetch_interval = std::time::Duration::ZERO;
        // Retired keys stop verifying within a second of the ring's reload.
        verifier.max_key_age = std::time::Duration::from_secs(1);
        let verifier = Arc::new(Verifier::new(
            verifier,
            Arc::new(LocalJwks(accounts.keys.clone())),
        ));
        let auth = AuthLayer::new(verifier, ["/popug.account.v1.AuthService/".to_owned()]);

        let api = Api(accounts.clone());
        let routes = tonic::service::Routes::new(AuthServiceServer::new(api.clone()))
            .add_service(AccountServiceServer::new(api));

        let http = axum::serve(self.http, crate::http::router(accounts.keys.clone()))
            .with_graceful_shutdown(stop.clone().cancelled_owned());

        let grpc_stop = stop.clone();
        let grpc = popug_grpc::serve(
            self.grpc,
            routes,
            ServeOptions {
                service_names: vec![
                    "popug.account.v1.AuthService",
                    "popug.account.v1.AccountService",
                ],
                file_descriptor_sets: vec![popug_proto::FILE_DESCRIPTOR_SET],
                auth,
            },
            grpc_stop.cancelled_owned(),
        );

        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        let (grpc, http) = tokio::join!(grpc, http);
        stop.cancel();
        let _ = tokio::join!(relay, reloader);
        grpc?;
        http?;
        Ok(())
    }
}
