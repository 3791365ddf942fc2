//! Settings, read once from the environment (`TASKKEEPER__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::net::SocketAddr;
use std::str::FromStr;

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC listener (port 0 picks a free one).
    pub grpc_addr: SocketAddr,
    pub database_url: String,
    pub database_max_connections: u32,
    pub nats_url: String,
    /// Prefix of every stream and subject (empty in production).
    pub stream_prefix: String,
    /// Expected `iss` of access tokens.
    pub issuer: String,
    /// Expected `aud` of access tokens.
    pub audience: String,
    /// Account's JWKS document, which verifies access tokens.
    pub jwks_url: String,
    /// Task → assignee pairs per `reassign.chunk` event.
    pub reassign_chunk_size: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn var<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(format!("TASKKEEPER__{name}")) {
        Ok(raw) => raw
            .parse()
            .map_err(|e| ConfigError(format!("TASKKEEPER__{name}={raw:?}: {e}"))),
        Err(_) => Ok(default),
    }
}

impl Settings {
    /// Defaults for a local run, overridden by `TASKKEEPER__<NAME>` variables.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let settings = Settings {
            grpc_addr: var("GRPC_ADDR", SocketAddr::from(([127, 0, 0, 1], 50052)))?,
            database_url: var(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/popug_taskkeeper".to_owned(),
            )?,
            database_max_connections: var("DATABASE_MAX_CONNECTIONS", 16)?,
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222".to_owned())?,
            stream_prefix: var("STREAM_PREFIX", String::new())?,
            issuer: var("ISSUER", "popugjira-account".to_owned())?,
            audience: var("AUDIENCE", "popugjira".to_owned())?,
            jwks_url: var(
                "JWKS_URL",
                "http://127.0.0.1:8081/.well-known/jwks.json".to_owned(),
            )?,
            reassign_chunk_size: var("REASSIGN_CHUNK_SIZE", 1000)?,
        };
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        // 1..=5000 pairs keep a chunk far below JetStream's 1 MiB message limit
        // (a pair is under 100 bytes).
        if !(1..=5000).contains(&self.reassign_chunk_size) {
            return Err(ConfigError(
                "TASKKEEPER__REASSIGN_CHUNK_SIZE must be in 1..=5000".into(),
            ));
        }
        popug_auth::HttpJwks::new(&self.jwks_url)
            .map_err(|e| ConfigError(format!("TASKKEEPER__JWKS_URL: {e}")))?;
        Ok(())
    }
}
