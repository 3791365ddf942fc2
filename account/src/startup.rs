//! Wiring: [`Application`] connects, migrates and binds; running it serves gRPC and HTTP
//! and runs the outbox relay and the key reloader until shutdown. Also Account's own
//! commands: `seed-demo`, `rotate-key`, `retire-key KID`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use popug_auth::{AuthLayer, Authenticator, PolicyTable, Verifier, VerifierConfig};
use popug_eventbus::Outbox;
use popug_grpc::ServeOptions;
use popug_proto::popug::account::v1::account_service_server::AccountServiceServer;
use popug_proto::popug::account::v1::auth_service_server::AuthServiceServer;
use popug_service::{Built, Infra, Prepare, Service, Shutdown, Workers};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;

use crate::api::Api;
use crate::config::{BootstrapAdmin, Settings};
use crate::events::PRODUCER;
use crate::keys::{KeyRing, LocalJwks};
use crate::service::{Accounts, StoredVersions, TokenPolicy};

/// The service's own migrations (the event bus brings its own).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A built, bound, not yet running Account.
pub struct Application {
    settings: Settings,
    built: Built,
    /// `/.well-known/jwks.json` and `/healthz`.
    http: TcpListener,
    accounts: Arc<Accounts>,
}

/// The service state over `infra`, nothing loaded yet (see [`Preparation`]).
async fn accounts(settings: &Settings, infra: &Infra) -> anyhow::Result<Arc<Accounts>> {
    let keys = Arc::new(KeyRing::new(infra.pool.clone()));
    let tokens = TokenPolicy {
        issuer: settings.common.tokens.issuer.clone(),
        audience: settings.common.tokens.audience.clone(),
        access_ttl: settings.access_ttl,
        refresh_ttl: settings.refresh_ttl,
    };
    let outbox = Outbox::new(infra.topology.clone(), PRODUCER);
    Ok(Arc::new(
        Accounts::new(infra.pool.clone(), outbox, keys, tokens).await?,
    ))
}

/// Account's own preparation, once its database is up: the signing keys (the configured
/// one imported, one generated on an empty ring) and the first admin.
struct Preparation {
    accounts: Arc<Accounts>,
    /// The configured signing key, PKCS#8 PEM.
    pem: Option<String>,
    bootstrap_admin: Option<BootstrapAdmin>,
}

impl Preparation {
    fn of(settings: &Settings, accounts: Arc<Accounts>) -> anyhow::Result<Preparation> {
        let pem = match &settings.signing_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("signing key file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Preparation {
            accounts,
            pem,
            bootstrap_admin: settings.bootstrap_admin.clone(),
        })
    }
}

impl Prepare for Preparation {
    async fn prepare(&self, _: &Infra) -> anyhow::Result<()> {
        self.accounts.keys.prepare(self.pem.as_deref()).await?;
        if let Some(admin) = &self.bootstrap_admin {
            self.accounts
                .bootstrap_admin(admin)
                .await
                .map_err(|e| anyhow::anyhow!("bootstrap admin: {e}"))?;
        }
        Ok(())
    }
}

/// Account, connected now (the database and NATS must be up) and prepared: what the
/// one-shot commands work with.
async fn prepared(settings: &Settings) -> anyhow::Result<(Infra, Arc<Accounts>)> {
    let infra = popug_service::connect::connect(&settings.common, &MIGRATOR).await?;
    let accounts = accounts(settings, &infra).await?;
    Preparation::of(settings, accounts.clone())?
        .prepare(&infra)
        .await?;
    Ok((infra, accounts))
}

impl Application {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.built.grpc_addr()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().unwrap_or(self.settings.http_addr)
    }

    /// The service state, for tests.
    pub fn accounts(&self) -> Arc<Accounts> {
        self.accounts.clone()
    }

    /// The access check of Account's own RPCs: tokens verified against its own key ring
    /// (no HTTP round trip to itself), every call afresh, so a retired key stops
    /// verifying within a second of the ring's reload; a token older than its account's
    /// version in the database is refused as revoked.
    fn auth_layer(&self) -> anyhow::Result<AuthLayer> {
        let tokens = &self.settings.common.tokens;
        let mut config = VerifierConfig::new(&tokens.issuer, &tokens.audience);
        // The source is in-process and cheap: no need to throttle refetches.
        config.refetch_interval = Duration::ZERO;
        config.max_key_age = Duration::from_secs(1);
        let verifier = Verifier::new(config, Arc::new(LocalJwks(self.accounts.keys.clone())));
        let authenticator = Authenticator::uncached(Arc::new(verifier))
            .with_revocation(Arc::new(StoredVersions(self.accounts.pool.clone())));
        Ok(AuthLayer::new(
            Arc::new(authenticator),
            PolicyTable::popug()?,
        ))
    }
}

impl Service for Application {
    const NAME: &'static str = "account";
    const COMMANDS: &'static [&'static str] = &["seed-demo", "rotate-key", "retire-key KID"];
    type Settings = Settings;
    const MIGRATOR: Option<&'static Migrator> = Some(&MIGRATOR);

    async fn build(settings: Settings) -> anyhow::Result<Application> {
        let built = Built::new(&settings).await?;
        let accounts = accounts(&settings, &built.infra).await?;
        let http = TcpListener::bind(settings.http_addr).await?;
        Ok(Application {
            settings,
            built,
            http,
            accounts,
        })
    }

    async fn command(settings: Settings, args: &[&str]) -> Option<anyhow::Result<()>> {
        match args {
            ["seed-demo"] => Some(seed_demo(&settings).await),
            ["rotate-key"] => Some(rotate_key(&settings).await),
            ["retire-key", kid] => Some(retire_key(&settings, kid).await),
            _ => None,
        }
    }

    async fn run_until_stopped(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(http = %self.http_addr(), "account serving the JWKS over HTTP");
        let auth = self.auth_layer()?;
        let accounts = self.accounts;
        let preparation = Preparation::of(&self.settings, accounts.clone())?;
        let (mut workers, readiness) = Workers::start(
            shutdown,
            &mut self.built,
            &accounts.outbox,
            &MIGRATOR,
            preparation,
        );
        let keys = accounts.keys.clone();
        let interval = self.settings.key_reload_interval;
        workers.spawn("key-reload", |stop| keys.reload_every(interval, stop));
        let pool = accounts.pool.clone();
        workers.spawn("idempotency-sweep", |stop| {
            popug_idempotency::sweep(pool, popug_idempotency::SWEEP_EVERY, stop)
        });

        let http = axum::serve(self.http, crate::http::router(accounts.keys.clone()))
            .with_graceful_shutdown(workers.stopped());
        let api = Api(accounts);
        let routes = tonic::service::Routes::new(AuthServiceServer::new(api.clone()))
            .add_service(AccountServiceServer::new(api));
        let options = ServeOptions {
            service_names: vec![
                "popug.account.v1.AuthService",
                "popug.account.v1.AccountService",
            ],
            auth,
            readiness,
        };
        let grpc = popug_grpc::serve(self.built.grpc, routes, options, workers.stopped());
        let (grpc, http) = tokio::join!(grpc, http);
        workers.join().await;
        grpc?;
        http?;
        Ok(())
    }
}

/// `account seed-demo`: the demo users (idempotent), returning once their events are out.
async fn seed_demo(settings: &Settings) -> anyhow::Result<()> {
    let (infra, accounts) = prepared(settings).await?;
    let created = crate::seed::demo(&accounts)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    infra
        .relay(&accounts.outbox)
        .publish_all(Duration::from_secs(30))
        .await?;
    println!("account: demo data seeded ({created} new users)");
    for (username, _, _, role, password) in crate::seed::DEMO_USERS {
        println!("  {username:<11} {:<11} {password}", role.as_str());
    }
    Ok(())
}

async fn rotate_key(settings: &Settings) -> anyhow::Result<()> {
    let pool = popug_service::connect::database(&settings.common.database, &MIGRATOR).await?;
    let kid = crate::keys::rotate(&pool).await?;
    println!("account: new signing key {kid}; older keys stay published until retired");
    Ok(())
}

async fn retire_key(settings: &Settings, kid: &str) -> anyhow::Result<()> {
    let pool = popug_service::connect::database(&settings.common.database, &MIGRATOR).await?;
    crate::keys::retire(&pool, kid).await?;
    println!("account: key {kid} retired; tokens it signed no longer verify");
    Ok(())
}
