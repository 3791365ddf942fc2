//! The services' settings in a mesh: each on port 0 against its own database, the
//! mesh's stream prefix and Account's JWKS, with timings short enough for tests.

use std::time::Duration;

use popug_service::{BusSettings, Common, DatabaseSettings, TokenSettings};

use crate::{ADMIN_PASSWORD, AUDIENCE, ISSUER};

/// What every service of a mesh shares: its gRPC port is picked by the OS.
fn common(database_url: String, prefix: &str, jwks_url: &str) -> Common {
    Common {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        // One recorder serves the whole test process: `popug_metrics::render()`.
        metrics_addr: None,
        database: DatabaseSettings {
            max_connections: 8,
            ..DatabaseSettings::new(database_url)
        },
        bus: BusSettings::new(popug_testkit::nats_url(), prefix),
        tokens: TokenSettings {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: jwks_url.into(),
        },
    }
}

pub fn account_settings(database_url: String, prefix: &str) -> account::Settings {
    account::Settings {
        common: common(database_url, prefix, TokenSettings::DEFAULT_JWKS_URL),
        http_addr: ([127, 0, 0, 1], 0).into(),
        access_ttl: Duration::from_secs(300),
        refresh_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(account::config::BootstrapAdmin {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            email: "admin@test.example".into(),
        }),
        signing_key_file: None,
        key_reload_interval: Duration::from_secs(3600),
    }
}

pub fn taskkeeper_settings(database_url: String, prefix: &str, jwks: &str) -> taskkeeper::Settings {
    taskkeeper::Settings {
        common: common(database_url, prefix, jwks),
        reassign_chunk_size: 1000,
    }
}

pub fn accounting_settings(
    database_url: String,
    prefix: &str,
    jwks: &str,
    smtp_port: u16,
) -> accounting::Settings {
    accounting::Settings {
        common: common(database_url, prefix, jwks),
        clock: accounting::domain::BillingClock::new(Duration::ZERO),
        close_check_interval: None,
        smtp_host: "127.0.0.1".into(),
        smtp_port,
        smtp_from: "Accounting <accounting@test.example>".into(),
        mail_retry_base: Duration::from_millis(200),
        mail_max_attempts: 50,
        mail_poll_interval: Duration::from_millis(50),
    }
}

/// The gateway in front of `upstreams` (Account, TaskKeeper, Accounting URLs).
pub fn gateway_settings(prefix: &str, upstreams: [String; 3], jwks: &str) -> gateway::Settings {
    let [account_url, taskkeeper_url, accounting_url] = upstreams;
    gateway::Settings {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        account_url,
        taskkeeper_url,
        accounting_url,
        tokens: TokenSettings {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: jwks.into(),
        },
        bus: BusSettings::new(popug_testkit::nats_url(), prefix),
        default_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        max_message_bytes: 1024 * 1024,
        rate_limit_per_sec: 0.0,
        rate_limit_burst: 1.0,
        web_dir: std::env::temp_dir().join("popug-no-web"),
        redis_url: None,
        cache_prefix: format!("{prefix}:gw:"),
        cache_ttl: Duration::from_secs(3600),
        limits: gateway::server::Limits::default(),
    }
}
