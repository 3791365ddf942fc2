//! Stream and subject names. Every name hangs off a prefix (empty in production, unique
//! per test), so isolated runs can share one NATS server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::BusError;

/// The JetStream streams of REQUIREMENTS §7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bus {
    /// account.created / updated / deleted
    Account,
    /// task.created / assigned / completed
    Task,
    /// reassign.chunk
    Reassign,
    /// accounting.* business events
    Accounting,
    /// What consumers gave up on.
    DeadLetter,
}

impl Bus {
    pub const ALL: [Bus; 5] = [
        Bus::Account,
        Bus::Task,
        Bus::Reassign,
        Bus::Accounting,
        Bus::DeadLetter,
    ];

    fn stream_name(self) -> &'static str {
        match self {
            Bus::Account => "ACCOUNTS",
            Bus::Task => "TASKS",
            Bus::Reassign => "REASSIGNS",
            Bus::Accounting => "ACCOUNTING",
            Bus::DeadLetter => "DEADLETTER",
        }
    }

    /// First subject token of the bus's events: an event named `task.created` is on
    /// the task bus.
    pub fn root(self) -> &'static str {
        match self {
            Bus::Account => "account",
            Bus::Task => "task",
            Bus::Reassign => "reassign",
            Bus::Accounting => "accounting",
            Bus::DeadLetter => "deadletter",
        }
    }

    /// The bus an event name belongs to.
    pub fn of_event(name: &str) -> Option<Bus> {
        let root = name.split('.').next()?;
        Bus::ALL.into_iter().find(|b| b.root() == root)
    }
}

/// Names of streams and subjects under one prefix, and how many copies of each stream
/// JetStream keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Empty, or lowercase `[a-z0-9_-]+` followed by a dot.
    prefix: String,
    /// Replicas of every stream (1 on a single server, 3 on a cluster); the durable
    /// consumers follow their stream's.
    replicas: usize,
}

/// Most copies JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// The servers of a NATS URL list: one URL, or several separated by commas (the nodes
/// of a cluster; the client picks one and fails over to the others).
pub fn nats_servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, BusError> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| BusError::Config(format!("NATS URL {url:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(BusError::Config("no NATS URL".into()));
    }
    Ok(servers)
}

impl Topology {
    /// `prefix` may be empty; otherwise `[a-z0-9_-]+`, with or without the trailing dot.
    pub fn new(prefix: &str) -> Result<Topology, BusError> {
        let bare = prefix.strip_suffix('.').unwrap_or(prefix);
        if !bare
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(BusError::Config(format!(
                "stream prefix {prefix:?} must be [a-z0-9_-]*"
            )));
        }
        let prefix = if bare.is_empty() {
            String::new()
        } else {
            format!("{bare}.")
        };
        Ok(Topology {
            prefix,
            replicas: 1,
        })
    }

    /// The same names, with every stream kept in `replicas` copies (1..=[`MAX_REPLICAS`];
    /// JetStream wants an odd number, and a cluster at least that many servers).
    pub fn with_replicas(self, replicas: usize) -> Result<Topology, BusError> {
        if !(1..=MAX_REPLICAS).contains(&replicas) {
            return Err(BusError::Config(format!(
                "stream replicas {replicas} must be 1..={MAX_REPLICAS}"
            )));
        }
        Ok(Topology { replicas, ..self })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Stream name of `bus`, e.g. `ACCOUNTS` or `T1A2_ACCOUNTS`.
    pub fn stream(&self, bus: Bus) -> String {
        let bare = self.prefix.trim_end_matches('.');
        if bare.is_empty() {
            bus.stream_name().to_owned()
        } else {
            format!("{}_{}", bare.to_ascii_uppercase(), bus.stream_name())
        }
    }

    /// Subject an event is published on: the prefix and the event name.
    pub fn subject(&self, event_name: &str) -> String {
        format!("{}{event_name}", self.prefix)
    }

    /// Every subject of `bus`.
    pub fn bus_subjects(&self, bus: Bus) -> String {
        format!("{}{}.>", self.prefix, bus.root())
    }

    /// Subject of the dead letters of consumer `consumer`.
    pub fn dead_letter_subject(&self, consumer: &str) -> String {
        format!("{}deadletter.{consumer}", self.prefix)
    }

    /// Creates every stream, or updates it to this configuration (idempotent; JetStream
    /// moves a stream to a new replica count in place). Replicas are only ever raised
    /// here: a process configured with fewer than a stream has (a forgotten setting on
    /// one of many services) keeps the stream's, with a warning, so processes that
    /// disagree cannot make a stream flap between counts. Lowering is an operator's
    /// deliberate `nats stream edit`.
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<(), BusError> {
        for bus in Bus::ALL {
            let name = self.stream(bus);
            let existing = match js.get_stream(&name).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .map_or(0, |info| info.config.num_replicas),
                Err(_) => 0,
            };
            let replicas = if existing > self.replicas {
                tracing::warn!(
                    stream = %name,
                    existing,
                    configured = self.replicas,
                    "the stream keeps more replicas than configured here; leaving them"
                );
                existing
            } else {
                self.replicas
            };
            let config = stream::Config {
                name,
                subjects: vec![self.bus_subjects(bus)],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                // Long enough for a relay to come back after a crash and republish:
                // JetStream drops the copies by Nats-Msg-Id.
                duplicate_window: Duration::from_secs(15 * 60),
                max_age: Duration::from_secs(30 * 24 * 3600),
                // Far above any single event; reassign chunks stay well below it.
                max_message_size: 1024 * 1024,
                num_replicas: replicas,
                ..Default::default()
            };
            js.create_or_update_stream(config)
                .await
                .map_err(BusError::nats)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let plain = Topology::new("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.stream(Bus::Account), "ACCOUNTS");
        assert_eq!(plain.subject("account.created"), "account.created");
        let test = Topology::new("t42").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(test.stream(Bus::Task), "T42_TASKS");
        assert_eq!(test.subject("task.created"), "t42.task.created");
        assert_eq!(test.bus_subjects(Bus::Reassign), "t42.reassign.>");
        assert!(Topology::new("Bad.Prefix").is_err());
        assert_eq!(
            test.clone()
                .with_replicas(3)
                .expect("3 replicas")
                .replicas(),
            3
        );
        assert!(test.clone().with_replicas(0).is_err());
        assert!(test.with_replicas(6).is_err());
    }

    #[test]
    fn nats_url_lists() {
        let one = nats_servers("nats://127.0.0.1:4222").expect("one URL");
        assert_eq!(one.len(), 1);
        let three = nats_servers("nats://a:4222, nats://b:4222,nats://c:4222").expect("three URLs");
        assert_eq!(three.len(), 3);
        assert!(nats_servers("").is_err());
        assert!(nats_servers("nats://a:4222,http://[bad").is_err());
        assert_eq!(Bus::of_event("reassign.chunk"), Some(Bus::Reassign));
        assert_eq!(Bus::of_event("nope.x"), None);
    }
}
