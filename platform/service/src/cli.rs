//! One command line for every service binary: `<name> [serve | migrate | <own commands>]`,
//! and `dead-letters list|show|replay` for a service with consumers
//! ([`crate::dead_letters`]). A service describes itself with [`Service`]; its `main` is
//! one call to [`main`].

use std::future::Future;
use std::pin::Pin;

use sqlx::migrate::Migrator;

use crate::env::ConfigError;
use crate::settings::{BusSettings, Common};

/// What tells a running service to stop: Ctrl-C or SIGTERM for the binary, whatever a test
/// or a benchmark decides otherwise.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A service's settings: read from its environment variables, validated.
pub trait Config: Sized + Send + Sync + 'static {
    /// `<SERVICE>__*` over the defaults of a local run (each value parsed, not yet
    /// checked against the others: [`Config::validate`]).
    fn from_env() -> Result<Self, ConfigError>;

    /// Whether the settings make sense together; `main` and `build` refuse them if not.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Its gRPC port, database, buses and tokens, if it is a service with a database.
    fn common(&self) -> Option<&Common> {
        None
    }

    /// Its NATS and stream prefix, if it uses the buses (by default those of `common`).
    fn bus(&self) -> Option<&BusSettings> {
        self.common().map(|common| &common.bus)
    }
}

/// A PopugJira service as its binary sees it.
pub trait Service: Sized + Send + 'static {
    /// Binary and telemetry name.
    const NAME: &'static str;
    /// Usage of the service's own commands beside `serve` and `migrate`.
    const COMMANDS: &'static [&'static str] = &[];
    /// Its durable consumers: `dead-letters` operates on their dead letters (and is a
    /// command of the service when there are any).
    const CONSUMERS: &'static [&'static str] = &[];

    type Settings: Config;

    /// The service's own migrations, if it has a database (the event bus's come along).
    const MIGRATOR: Option<&'static Migrator> = None;

    /// Makes its connections (lazily: the database and NATS may come later) and binds its
    /// ports; nothing runs yet.
    fn build(settings: Self::Settings) -> impl Future<Output = anyhow::Result<Self>> + Send;

    /// Serves until `shutdown` resolves, then drains and stops its workers.
    fn run_until_stopped(
        self,
        shutdown: Shutdown,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Applies the service's migrations (and the event bus's) and returns.
    fn migrate(settings: &Self::Settings) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            if let (Some(migrator), Some(common)) = (Self::MIGRATOR, settings.common()) {
                crate::connect::database(&common.database, migrator).await?;
            }
            Ok(())
        }
    }

    /// Runs one of the service's own commands; `None` when `args` is none of them.
    fn command(
        settings: Self::Settings,
        args: &[&str],
    ) -> impl Future<Output = Option<anyhow::Result<()>>> + Send {
        let _ = (settings, args);
        async { None }
    }
}

/// The `main` of service `S`: telemetry, settings, then the command.
pub async fn main<S: Service>() -> anyhow::Result<()> {
    main_with::<S>(std::env::args().skip(1).collect()).await
}

/// [`main`] with the command line `args` (without the program's name), for a binary that
/// runs several services (the test mesh's `popug-node`).
pub async fn main_with<S: Service>(args: Vec<String>) -> anyhow::Result<()> {
    let _telemetry = popug_telemetry::init(S::NAME);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let usage = || {
        let mut commands = vec!["serve", "migrate"];
        commands.extend(S::COMMANDS);
        if !S::CONSUMERS.is_empty() {
            commands.push("dead-letters …");
        }
        let mut usage = format!("usage: {} [{}]", S::NAME, commands.join(" | "));
        if !S::CONSUMERS.is_empty() {
            for line in crate::dead_letters::USAGE.lines() {
                let name = if line.starts_with("dead-letters") {
                    S::NAME
                } else {
                    " "
                };
                usage.push_str(&format!("\n  {name} {line}"));
            }
        }
        usage
    };
    if matches!(args.as_slice(), ["help" | "-h" | "--help"]) {
        println!("{}", usage());
        return Ok(());
    }
    let settings = S::Settings::from_env()?;
    settings.validate()?;
    match args.as_slice() {
        [] | ["serve"] => {
            popug_metrics::install(S::NAME);
            S::build(settings)
                .await?
                .run_until_stopped(Box::pin(popug_grpc::shutdown_signal()))
                .await
        }
        ["migrate"] => {
            S::migrate(&settings).await?;
            println!("{}: migrations applied", S::NAME);
            Ok(())
        }
        ["dead-letters", rest @ ..] if !S::CONSUMERS.is_empty() => {
            crate::dead_letters::main::<S>(settings, rest).await
        }
        other => match S::command(settings, other).await {
            Some(result) => result,
            None => {
                eprintln!("{}", usage());
                std::process::exit(2);
            }
        },
    }
}
