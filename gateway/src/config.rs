//! Settings, read once from the environment (`GATEWAY__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The one public port: gRPC, grpc-web and the web UI.
    pub listen_addr: SocketAddr,
    /// Upstream gRPC endpoints.
    pub account_url: String,
    pub taskkeeper_url: String,
    pub accounting_url: String,
    /// Account's JWKS.
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// Deadline given to calls that bring none, and the cap on those that do.
    pub default_timeout: Duration,
    /// How long connecting to an upstream may take before the call fails UNAVAILABLE.
    pub connect_timeout: Duration,
    /// Largest request or response message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Sustained requests per second per caller (0 disables the limit).
    pub rate_limit_per_sec: f64,
    /// Burst size of the per-caller token bucket.
    pub rate_limit_burst: f64,
    /// Static files of the web client, served at `/` when the folder exists.
    pub web_dir: PathBuf,
    /// Redis for the shared cache; `None` turns caching off.
    pub redis_url: Option<String>,
    /// Namespace of the gateway's Redis keys.
    pub cache_prefix: String,
    /// Backstop lifetime of cached entries (events invalidate them sooner).
    pub cache_ttl: Duration,
    /// NATS, for the events that invalidate the cache.
    pub nats_url: String,
    /// Prefix of the streams (as the services use).
    pub stream_prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn var<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(format!("GATEWAY__{name}")) {
        Ok(raw) => raw
            .parse()
            .map_err(|e| ConfigError(format!("GATEWAY__{name}={raw:?}: {e}"))),
        Err(_) => Ok(default),
    }
}

impl Settings {
    /// Defaults for a local run, overridden by `GATEWAY__<NAME>` variables.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let settings = Settings {
            listen_addr: var("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            account_url: var("ACCOUNT_URL", "http://127.0.0.1:50051".to_owned())?,
            taskkeeper_url: var("TASKKEEPER_URL", "http://127.0.0.1:50052".to_owned())?,
            accounting_url: var("ACCOUNTING_URL", "http://127.0.0.1:50053".to_owned())?,
            jwks_url: var(
                "JWKS_URL",
                "http://127.0.0.1:8081/.well-known/jwks.json".to_owned(),
            )?,
            issuer: var("ISSUER", "popugjira-account".to_owned())?,
            audience: var("AUDIENCE", "popugjira".to_owned())?,
            default_timeout: Duration::from_millis(var("DEFAULT_TIMEOUT_MS", 10_000)?),
            connect_timeout: Duration::from_millis(var("CONNECT_TIMEOUT_MS", 1_000)?),
            max_message_bytes: var("MAX_MESSAGE_BYTES", 4 * 1024 * 1024)?,
            rate_limit_per_sec: var("RATE_LIMIT_PER_SEC", 200.0)?,
            rate_limit_burst: var("RATE_LIMIT_BURST", 400.0)?,
            web_dir: var("WEB_DIR", PathBuf::from("web/dist"))?,
            redis_url: Some(var("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?)
                .filter(|url| !url.is_empty()),
            cache_prefix: var("CACHE_PREFIX", "popug:gw:".to_owned())?,
            cache_ttl: Duration::from_secs(var("CACHE_TTL_SECS", 300)?),
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222".to_owned())?,
            stream_prefix: var("STREAM_PREFIX", String::new())?,
        };
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, url) in [
            ("ACCOUNT_URL", &self.account_url),
            ("TASKKEEPER_URL", &self.taskkeeper_url),
            ("ACCOUNTING_URL", &self.accounting_url),
            ("JWKS_URL", &self.jwks_url),
        ] {
            if !url.starts_with("http://") {
                return Err(ConfigError(format!(
                    "GATEWAY__{name} must be an http:// URL"
                )));
            }
        }
        if self.default_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ConfigError("timeouts must be positive".into()));
        }
        if self.rate_limit_per_sec < 0.0 || self.rate_limit_burst < 1.0 {
            return Err(ConfigError(
                "rate limit must be >= 0 with a burst >= 1".into(),
            ));
        }
        Ok(())
    }
}
