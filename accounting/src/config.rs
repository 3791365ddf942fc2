//! Settings, read once from the environment (`ACCOUNTING__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use std::time::Duration;

use popug_service::{Common, Config, ConfigError, Env};

use crate::domain::BillingClock;

const ENV: Env = Env::new("ACCOUNTING");

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC port, database, buses and token issuer.
    pub common: Common,
    /// The billing calendar (`DAY_CUTOFF`, HH:MM UTC: where a billing day ends).
    pub clock: BillingClock,
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

/// `"HH:MM"` → offset from midnight.
fn parse_cutoff(raw: &str) -> Result<Duration, ConfigError> {
    let bad = || ENV.invalid("DAY_CUTOFF", format!("{raw:?}: expected HH:MM (UTC)"));
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    let h: u64 = h.parse().map_err(|_| bad())?;
    let m: u64 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(Duration::from_secs(h * 3600 + m * 60))
}

impl Config for Settings {
    /// Defaults for a local run, overridden by `ACCOUNTING__<NAME>` variables.
    fn from_env() -> Result<Settings, ConfigError> {
        let close_check = ENV.secs("CLOSE_CHECK_SECONDS", 30)?;
        Ok(Settings {
            common: Common::from_env(&ENV, 50053, Some(8083), "popug_accounting")?,
            clock: BillingClock::new(parse_cutoff(&ENV.string("DAY_CUTOFF", "00:00"))?),
            close_check_interval: (!close_check.is_zero()).then_some(close_check),
            smtp_host: ENV.string("SMTP_HOST", "127.0.0.1"),
            smtp_port: ENV.var("SMTP_PORT", 2525)?,
            smtp_from: ENV.string(
                "SMTP_FROM",
                "PopugJira Accounting <accounting@popug.example>",
            ),
            mail_retry_base: ENV.secs("MAIL_RETRY_BASE_SECONDS", 5)?,
            mail_max_attempts: ENV.var("MAIL_MAX_ATTEMPTS", 10)?,
            mail_poll_interval: Duration::from_secs(1),
        })
    }

    fn common(&self) -> Option<&Common> {
        Some(&self.common)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.smtp_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| ENV.invalid("SMTP_FROM", e))?;
        if self.mail_max_attempts < 1 {
            return Err(ENV.invalid("MAIL_MAX_ATTEMPTS", "must be >= 1"));
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
