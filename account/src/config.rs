//! Settings, read once from the environment (`ACCOUNT__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use popug_service::{Common, Config, ConfigError, Env};

const ENV: Env = Env::new("ACCOUNT");

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC port, database, buses; `tokens` is what Account issues (`iss`, `aud`).
    pub common: Common,
    /// Internal HTTP listener: `/.well-known/jwks.json` and `/healthz`.
    pub http_addr: SocketAddr,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Created as admin when the database has no accounts at all.
    pub bootstrap_admin: Option<BootstrapAdmin>,
    /// A PKCS#8 PEM Ed25519 key to sign with; generated and stored when absent.
    pub signing_key_file: Option<PathBuf>,
    /// How often the key ring is reloaded from the database (rotations by others).
    pub key_reload_interval: Duration,
}

/// The first admin, from configuration.
#[derive(Clone)]
pub struct BootstrapAdmin {
    pub username: String,
    pub password: String,
    pub email: String,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log the password.
        f.debug_struct("BootstrapAdmin")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Config for Settings {
    /// Defaults for a local run, overridden by `ACCOUNT__<NAME>` variables.
    fn from_env() -> Result<Settings, ConfigError> {
        let bootstrap_admin = ENV
            .raw("BOOTSTRAP_ADMIN_PASSWORD")
            .map(|password| BootstrapAdmin {
                username: ENV.string("BOOTSTRAP_ADMIN_USERNAME", "admin"),
                email: ENV.string("BOOTSTRAP_ADMIN_EMAIL", "admin@popug.example"),
                password,
            });
        Ok(Settings {
            common: Common::from_env(&ENV, 50051, None, "popug_account")?,
            http_addr: ENV.var("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            access_ttl: ENV.secs("ACCESS_TTL_SECS", 15 * 60)?,
            refresh_ttl: ENV.secs("REFRESH_TTL_SECS", 30 * 24 * 3600)?,
            bootstrap_admin,
            signing_key_file: ENV.opt("SIGNING_KEY_FILE")?,
            key_reload_interval: ENV.secs("KEY_RELOAD_SECS", 10)?,
        })
    }

    fn common(&self) -> Option<&Common> {
        Some(&self.common)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.access_ttl.is_zero() || self.refresh_ttl <= self.access_ttl {
            return Err(ENV.invalid(
                "REFRESH_TTL_SECS",
                "the refresh TTL must exceed a non-zero access TTL",
            ));
        }
        if let Some(admin) = &self.bootstrap_admin {
            crate::domain::Password::parse(&admin.password)
                .map_err(|e| ENV.invalid("BOOTSTRAP_ADMIN_PASSWORD", e))?;
            crate::domain::Username::parse(&admin.username)
                .map_err(|e| ENV.invalid("BOOTSTRAP_ADMIN_USERNAME", e))?;
        }
        Ok(())
    }
}
