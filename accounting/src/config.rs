//! Settings, read once from the environment (`ACCOUNTING__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

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
    /// Where a billing day ends, as an offset from midnight UTC (0: calendar days in UTC).
    pub day_cutoff: Duration,
    /// How often the scheduler checks whether a billing day is due to close; `None`
    /// turns the automatic close off (tests that close by hand).
    pub close_check_interval: Option<Duration>,
    /// SMTP relay for payout e-mails (plain SMTP, local relay).
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Sender of payout e-mails.
    pub smtp_from: String,
    /// First retry delay of a failed mail; doubles per attempt up to 10 minutes.
    pub mail_retry_base: Duration,
    /// Attempts before a mail stays failed for good.
    pub mail_max_attempts: i32,
    /// How often the mailer looks for due mails when idle.
    pub mail_poll_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn var<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(format!("ACCOUNTING__{name}")) {
        Ok(raw) => raw
            .parse()
            .map_err(|e| ConfigError(format!("ACCOUNTING__{name}={raw:?}: {e}"))),
        Err(_) => Ok(default),
    }
}

/// `"HH:MM"` → offset from midnight.
fn parse_cutoff(raw: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError(format!(
            "ACCOUNTING__DAY_CUTOFF={raw:?}: expected HH:MM (UTC)"
        ))
    };
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    let h: u64 = h.parse().map_err(|_| bad())?;
    let m: u64 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(Duration::from_secs(h * 3600 + m * 60))
}

impl Settings {
    /// Defaults for a local run, overridden by `ACCOUNTING__<NAME>` variables.
    pub fn from_env() -> Result<Settings, ConfigError> {
        let close_secs: u64 = var("CLOSE_CHECK_SECONDS", 30)?;
        let settings = Settings {
            grpc_addr: var("GRPC_ADDR", SocketAddr::from(([127, 0, 0, 1], 50053)))?,
            database_url: var(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/popug_accounting".to_owned(),
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
            day_cutoff: parse_cutoff(&var("DAY_CUTOFF", "00:00".to_owned())?)?,
            close_check_interval: (close_secs > 0).then(|| Duration::from_secs(close_secs)),
            smtp_host: var("SMTP_HOST", "127.0.0.1".to_owned())?,
            smtp_port: var("SMTP_PORT", 2525)?,
            smtp_from: var(
                "SMTP_FROM",
                "PopugJira Accounting <accounting@popug.example>".to_owned(),
            )?,
            mail_retry_base: Duration::from_secs(var("MAIL_RETRY_BASE_SECONDS", 5)?),
            mail_max_attempts: var("MAIL_MAX_ATTEMPTS", 10)?,
            mail_poll_interval: Duration::from_secs(1),
        };
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        popug_auth::HttpJwks::new(&self.jwks_url)
            .map_err(|e| ConfigError(format!("ACCOUNTING__JWKS_URL: {e}")))?;
        self.smtp_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| ConfigError(format!("ACCOUNTING__SMTP_FROM: {e}")))?;
        if self.day_cutoff >= Duration::from_secs(24 * 3600) {
            return Err(ConfigError("day cutoff must be within one day".into()));
        }
        if self.mail_max_attempts < 1 {
            return Err(ConfigError(
                "ACCOUNTING__MAIL_MAX_ATTEMPTS must be >= 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs() {
        assert_eq!(parse_cutoff("00:00").ok(), Some(Duration::ZERO));
        assert_eq!(
            parse_cutoff("18:30").ok(),
            Some(Duration::from_secs(66_600))
        );
        assert!(parse_cutoff("24:00").is_err());
        assert!(parse_cutoff("noon").is_err());
    }
}
