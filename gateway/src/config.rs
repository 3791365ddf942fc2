//! Settings, read once from the environment (`GATEWAY__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use popug_service::{BusSettings, Config, ConfigError, Env, TokenSettings};

use crate::server::Limits;

const ENV: Env = Env::new("GATEWAY");

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The one public port: gRPC, grpc-web and the web UI.
    pub listen_addr: SocketAddr,
    /// Upstream gRPC endpoints: one URL or several, comma-separated; a host name is
    /// resolved again every few seconds and each of its addresses is an endpoint.
    pub account_url: String,
    pub taskkeeper_url: String,
    pub accounting_url: String,
    /// Whose tokens are accepted, and Account's JWKS.
    pub tokens: TokenSettings,
    /// NATS, for the account events that invalidate the cache.
    pub bus: BusSettings,
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
    /// Connection hygiene of the public port.
    pub limits: Limits,
}

impl Config for Settings {
    /// Defaults for a local run, overridden by `GATEWAY__<NAME>` variables.
    fn from_env() -> Result<Settings, ConfigError> {
        // Unset is the local Redis; set but empty turns the cache off.
        let redis_url = match std::env::var(ENV.name("REDIS_URL")) {
            Ok(url) => Some(url).filter(|url| !url.is_empty()),
            Err(_) => Some("redis://127.0.0.1:6379".to_owned()),
        };
        Ok(Settings {
            listen_addr: ENV.var("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            account_url: ENV.string("ACCOUNT_URL", "http://127.0.0.1:50051"),
            taskkeeper_url: ENV.string("TASKKEEPER_URL", "http://127.0.0.1:50052"),
            accounting_url: ENV.string("ACCOUNTING_URL", "http://127.0.0.1:50053"),
            tokens: TokenSettings::from_env(&ENV)?,
            bus: BusSettings::from_env(&ENV)?,
            default_timeout: ENV.millis("DEFAULT_TIMEOUT_MS", 10_000)?,
            connect_timeout: ENV.millis("CONNECT_TIMEOUT_MS", 1_000)?,
            max_message_bytes: ENV.var("MAX_MESSAGE_BYTES", 4 * 1024 * 1024)?,
            rate_limit_per_sec: ENV.var("RATE_LIMIT_PER_SEC", 200.0)?,
            rate_limit_burst: ENV.var("RATE_LIMIT_BURST", 400.0)?,
            web_dir: ENV.var("WEB_DIR", PathBuf::from("web/dist"))?,
            redis_url,
            cache_prefix: ENV.string("CACHE_PREFIX", "popug:gw:"),
            cache_ttl: ENV.secs("CACHE_TTL_SECS", 300)?,
            limits: Limits {
                header_read_timeout: ENV.millis("HEADER_READ_TIMEOUT_MS", 10_000)?,
                max_connections_per_peer: ENV.var("MAX_CONNECTIONS_PER_PEER", 256)?,
                max_header_bytes: ENV.var("MAX_HEADER_BYTES", 256 * 1024)?,
                ..Limits::default()
            },
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, url) in [
            ("ACCOUNT_URL", &self.account_url),
            ("TASKKEEPER_URL", &self.taskkeeper_url),
            ("ACCOUNTING_URL", &self.accounting_url),
        ] {
            if url.split(',').any(|u| !u.trim().starts_with("http://")) {
                return Err(ENV.invalid(name, "must be http:// URLs, comma-separated"));
            }
        }
        if self.default_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(ENV.invalid("DEFAULT_TIMEOUT_MS", "timeouts must be positive"));
        }
        if self.limits.header_read_timeout.is_zero() || self.limits.max_connections_per_peer == 0 {
            return Err(ENV.invalid(
                "HEADER_READ_TIMEOUT_MS",
                "the header timeout and MAX_CONNECTIONS_PER_PEER must be positive",
            ));
        }
        if self.limits.max_header_bytes < 16 * 1024 {
            return Err(ENV.invalid("MAX_HEADER_BYTES", "must be at least 16384"));
        }
        if self.rate_limit_per_sec < 0.0 || self.rate_limit_burst < 1.0 {
            return Err(ENV.invalid(
                "RATE_LIMIT_PER_SEC",
                "the rate limit must be >= 0 with a burst >= 1",
            ));
        }
        Ok(())
    }

    /// The bus of the cache invalidation (`gateway dead-letters` reads its letters there).
    fn bus(&self) -> Option<&BusSettings> {
        Some(&self.bus)
    }
}
