//! The skeleton every PopugJira service starts from, so a service's own startup keeps only
//! its own wiring.
//!
//! - [`env`] — the one environment reader (`<SERVICE>__<NAME>` over defaults)
//! - [`settings`] — the settings every service shares (database, buses, tokens), validated
//! - [`connect`] — connect-and-migrate, JetStream and the streams
//! - [`workers`] — background workers under one cancellation, joined with errors logged
//! - [`metrics`] — `GET /metrics` for Prometheus
//! - [`readiness`] — prepare once the database and NATS are up; health follows them
//! - [`cli`] — `serve`, `migrate` and a service's own commands
//! - [`dead_letters`] — `dead-letters list|show|replay` of a service's consumers
//! - [`users`] — the copy of the users a service keeps from the account bus
//! - [`versions`] — the accounts' versions each replica keeps, to refuse revoked tokens

pub mod cli;
pub mod connect;
pub mod dead_letters;
pub mod env;
pub mod metrics;
pub mod readiness;
pub mod settings;
pub mod users;
pub mod versions;
pub mod workers;

pub use cli::{Config, Service, Shutdown, main, main_with};
pub use connect::{Built, Infra};
pub use env::{ConfigError, Env};
pub use popug_grpc::Readiness;
pub use readiness::Prepare;
pub use settings::{BusSettings, Common, DatabaseSettings, TokenSettings};
pub use users::{AccountBus, AccountUser, UserCopy};
pub use workers::Workers;

use std::sync::Arc;

use popug_auth::{
    AuthLayer, Authenticator, HttpJwks, PolicyTable, Revocation, Verifier, VerifierConfig,
};

/// The per-RPC access check of a service that verifies tokens with Account's JWKS over
/// HTTP: the policies declared in `proto/`, enforced by the same code as at the gateway;
/// tokens older than the newest version of their account `revocation` knows are refused.
pub fn auth_layer(
    tokens: &TokenSettings,
    revocation: Arc<dyn Revocation>,
) -> anyhow::Result<AuthLayer> {
    let jwks = HttpJwks::new(&tokens.jwks_url).map_err(anyhow::Error::msg)?;
    let verifier = Verifier::new(
        VerifierConfig::new(&tokens.issuer, &tokens.audience),
        Arc::new(jwks),
    );
    Ok(AuthLayer::new(
        Arc::new(Authenticator::new(Arc::new(verifier)).with_revocation(revocation)),
        PolicyTable::popug()?,
    ))
}
