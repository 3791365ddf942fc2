//! Settings, read once from the environment (`TASKKEEPER__*`) over defaults and validated
//! before anything starts. Tests build [`Settings`] in code instead.

use popug_service::{Common, Config, ConfigError, Env};

const ENV: Env = Env::new("TASKKEEPER");

/// Everything the service needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// gRPC port, database, buses and token issuer.
    pub common: Common,
    /// Task → assignee pairs per `reassign.chunk` event.
    pub reassign_chunk_size: usize,
}

impl Config for Settings {
    /// Defaults for a local run, overridden by `TASKKEEPER__<NAME>` variables.
    fn from_env() -> Result<Settings, ConfigError> {
        Ok(Settings {
            common: Common::from_env(&ENV, 50052, Some(8082), "popug_taskkeeper")?,
            reassign_chunk_size: ENV.var("REASSIGN_CHUNK_SIZE", 1000)?,
        })
    }

    fn common(&self) -> Option<&Common> {
        Some(&self.common)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // 1..=5000 pairs keep a chunk far below JetStream's 1 MiB message limit
        // (a pair is under 100 bytes).
        if !(1..=5000).contains(&self.reassign_chunk_size) {
            return Err(ENV.invalid("REASSIGN_CHUNK_SIZE", "must be in 1..=5000"));
        }
        Ok(())
    }
}
