//! The one environment reader: `<SERVICE>__<NAME>` variables over defaults, each parsed
//! with its type's `FromStr`, every failure naming the variable and the value.

use std::str::FromStr;
use std::time::Duration;

/// A configuration value that cannot be used; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// Reads the variables of one service (`ACCOUNT__GRPC_ADDR`, ...).
#[derive(Debug, Clone, Copy)]
pub struct Env {
    /// `ACCOUNT`, `TASKKEEPER`, `ACCOUNTING` or `GATEWAY`.
    prefix: &'static str,
}

impl Env {
    pub const fn new(prefix: &'static str) -> Env {
        Env { prefix }
    }

    /// The full name of variable `name`, for messages.
    pub fn name(&self, name: &str) -> String {
        format!("{}__{name}", self.prefix)
    }

    /// The raw value; unset and empty are both `None`.
    pub fn raw(&self, name: &str) -> Option<String> {
        std::env::var(self.name(name))
            .ok()
            .filter(|v| !v.is_empty())
    }

    /// The parsed value, `None` when unset or empty.
    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        self.raw(name)
            .map(|raw| {
                raw.parse()
                    .map_err(|e| ConfigError(format!("{}={raw:?}: {e}", self.name(name))))
            })
            .transpose()
    }

    /// The parsed value, or `default` when unset or empty.
    pub fn var<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        Ok(self.opt(name)?.unwrap_or(default))
    }

    /// A string value, or `default`.
    pub fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or_else(|| default.to_owned())
    }

    /// Whole seconds (`<NAME>` conventionally ends in `_SECS`).
    pub fn secs(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        self.var(name, default).map(Duration::from_secs)
    }

    /// Whole milliseconds (`<NAME>` conventionally ends in `_MS`).
    pub fn millis(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        self.var(name, default).map(Duration::from_millis)
    }

    /// A refusal naming variable `name`.
    pub fn invalid(&self, name: &str, why: impl std::fmt::Display) -> ConfigError {
        ConfigError(format!("{}: {why}", self.name(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_is_the_default_and_bad_values_name_the_variable() {
        let env = Env::new("POPUG_ENV_TEST_UNSET");
        assert_eq!(env.var("PORT", 7u16).ok(), Some(7));
        assert_eq!(env.opt::<u16>("PORT").ok(), Some(None));
        assert_eq!(env.string("NAME", "x"), "x");
        let bad: Result<u16, _> = "seventy".parse::<u16>();
        assert!(bad.is_err());
        assert_eq!(
            env.invalid("PORT", "must be positive").to_string(),
            "configuration: POPUG_ENV_TEST_UNSET__PORT: must be positive"
        );
    }
}
