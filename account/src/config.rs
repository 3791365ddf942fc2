//! Settings, read once from the environment (`ACCOUNT__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC listener (port 0 picks a free one).
    pub grpc_addr: SocketAddr,
    /// Internal HTTP listener: `/.well-known/jwks.json` and `/healthz`.
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    pub nats_url: String,
    /// Prefix of every stream and subject (empty in production).
    pub stream_prefix: String,
    /// `iss` of issued tokens.
    pub issuer: String,
    /// `aud` of issued tokens.
    pub audience: String,
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

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn var<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(format!("ACCOUNT__{name}")) {
        Ok(raw) => raw
            .parse()
            .map_err(|e| ConfigError(format!("ACCOUNT__{name}={raw:?}: {e}"))),
        Err(_) => Ok(default),
    }
}

fn opt(name: &str) -> Option<String> {
    std::env::var(format!("ACCOUNT__{name}"))
        .ok()
        .filter(|v| !v.is_empty())
}

impl Settings {
    /// Defaults for a local run, overridden by `ACCOUNT__<NAME>` variables.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let bootstrap_admin = opt("BOOTSTRAP_ADMIN_PASSWORD").map(|password| BootstrapAdmin {
            username: opt("BOOTSTRAP_ADMIN_USERNAME").unwrap_or_else(|| "admin".into()),
            email: opt("BOOTSTRAP_ADMIN_EMAIL").unwrap_or_else(|| "admin@popug.example".into()),
            password,
        });
        let settings = Settings {
            grpc_addr: var("GRPC_ADDR", SocketAddr::from(([127, 0, 0, 1], 50051)))?,
            http_addr: var("HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database_url: var(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/popug_account".to_owned(),
            )?,
            database_max_connections: var("DATABASE_MAX_CONNECTIONS", 16)?,
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222".to_owned())?,
            stream_prefix: var("STREAM_PREFIX", String::new())?,
            issuer: var("ISSUER", "popugjira-account".to_owned())?,
            audience: var("AUDIENCE", "popugjira".to_owned())?,
            access_ttl: Duration::from_secs(var("ACCESS_TTL_SECS", 15 * 60)?),
            refresh_ttl: Duration::from_secs(var("REFRESH_TTL_SECS", 30 * 24 * 3600)?),
            bootstrap_admin,
            signing_key_file: opt("SIGNING_KEY_FILE").map(PathBuf::from),
            key_reload_interval: Duration::from_secs(var("KEY_RELOAD_SECS", 10)?),
        };
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.access_ttl.is_zero() || self.refresh_ttl <= self.access_ttl {
            return Err(ConfigError(
                "refresh TTL must exceed a non-zero access TTL".into(),
            ));
        }
        if let Some(admin) = &self.bootstrap_admin {
            crate::domain::Password::parse(&admin.password)
                .map_err(|e| ConfigError(format!("ACCOUNT__BOOTSTRAP_ADMIN_PASSWORD: {e}")))?;
            crate::domain::Username::parse(&admin.username)
                .map_err(|e| ConfigError(format!("ACCOUNT__BOOTSTRAP_ADMIN_USERNAME: {e}")))?;
        }
        Ok(())
    }
}
