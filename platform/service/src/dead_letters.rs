//! `<service> dead-letters list|show|replay`: the dead letters of the service's own
//! consumers ([`crate::Service::CONSUMERS`]), read with its own settings (NATS URL,
//! stream prefix, database). The work is `popug_eventbus::dead_letters`; this is the
//! command line and what it prints — a table for a human, JSON with `--json`.
//!
//! ```text
//! accounting dead-letters list [FILTER] [--json]
//! accounting dead-letters show SEQ [--json]
//! accounting dead-letters replay (SEQ... | FILTER | --all) [--dry-run] [--json]
//!   FILTER: --consumer NAME  --event NAME  --version N  --since TIME  --until TIME
//!   TIME:   RFC 3339 (2025-06-01T12:00:00Z) or an age (90s, 30m, 2h, 7d)
//! ```
//!
//! Letters are named by their sequence in the dead-letter stream (`SEQ`). `replay`
//! republishes each selected letter to its original subject unless its consumer has
//! applied the event since, and deletes it from the stream: `list` shows what is
//! outstanding. A replayed event is applied once however often it is replayed (see
//! `popug_eventbus::dead_letters`).

mod output;

use std::time::Duration;

use base64::Engine as _;
use popug_eventbus::dead_letters::{self, DeadLetters, Filter, Letter, Replayed, Status};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{Config, Service};

pub use output::{Detail, Output, ReplayRow, Report, Row};

/// The commands' usage.
pub const USAGE: &str = "\
dead-letters list [FILTER] [--json]
dead-letters show SEQ [--json]
dead-letters replay (SEQ... | FILTER | --all) [--dry-run] [--json]
  FILTER: --consumer NAME  --event NAME  --version N  --since TIME  --until TIME
  TIME:   RFC 3339 (2025-06-01T12:00:00Z) or an age (90s, 30m, 2h, 7d)";

/// One of the commands, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    List(Filter),
    Show(u64),
    Replay { filter: Filter, dry_run: bool },
}

/// A command line: the command and whether it answers in JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub command: Command,
    pub json: bool,
}

/// A command line that makes no sense, with why.
#[derive(Debug, thiserror::Error)]
#[error("{0}\nusage:\n{USAGE}")]
pub struct UsageError(String);

impl Invocation {
    /// Parses the arguments after `dead-letters`, relative times against `now`.
    pub fn parse(args: &[&str], now: OffsetDateTime) -> Result<Invocation, UsageError> {
        let bad = |why: String| UsageError(why);
        let (verb, rest) = args
            .split_first()
            .ok_or_else(|| bad("list, show or replay?".into()))?;
        let mut filter = Filter::default();
        let (mut json, mut dry_run, mut all) = (false, false, false);
        let mut rest = rest.iter();
        while let Some(&arg) = rest.next() {
            let mut value = |name: &str| {
                rest.next()
                    .copied()
                    .ok_or_else(|| bad(format!("{name} needs a value")))
            };
            match arg {
                "--json" => json = true,
                "--dry-run" if *verb == "replay" => dry_run = true,
                "--all" if *verb == "replay" => all = true,
                "--consumer" => filter.consumer = Some(value(arg)?.to_owned()),
                "--event" => filter.event = Some(value(arg)?.to_owned()),
                "--version" => {
                    let raw = value(arg)?;
                    let version = raw.trim_start_matches('v').parse().map_err(|_| {
                        bad(format!("--version {raw:?}: expected a number like 2 or v2"))
                    })?;
                    filter.version = Some(version);
                }
                "--since" => filter.since = Some(time_arg(value(arg)?, now).map_err(bad)?),
                "--until" => filter.until = Some(time_arg(value(arg)?, now).map_err(bad)?),
                flag if flag.starts_with('-') => {
                    return Err(bad(format!("unknown option {flag} for {verb}")));
                }
                sequence => filter.sequences.push(sequence.parse().map_err(|_| {
                    bad(format!(
                        "{sequence:?}: expected a dead-letter sequence number"
                    ))
                })?),
            }
        }
        let command = match *verb {
            "list" if filter.sequences.is_empty() => Command::List(filter),
            "list" => return Err(bad("list takes filters, not sequence numbers".into())),
            "show" => match filter.sequences.as_slice() {
                [sequence] if filter == only_sequence(*sequence) => Command::Show(*sequence),
                _ => return Err(bad("show takes one sequence number".into())),
            },
            "replay" => {
                if filter == Filter::default() && !all {
                    return Err(bad(
                        "replay what? name letters by sequence, filter them, or say --all".into(),
                    ));
                }
                Command::Replay { filter, dry_run }
            }
            other => return Err(bad(format!("unknown command {other:?}"))),
        };
        Ok(Invocation { command, json })
    }
}

fn only_sequence(sequence: u64) -> Filter {
    Filter {
        sequences: vec![sequence],
        ..Filter::default()
    }
}

/// An RFC 3339 time, or an age (`90s`, `30m`, `2h`, `7d`) before `now`.
fn time_arg(raw: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(at);
    }
    let bad = || format!("{raw:?}: expected an RFC 3339 time or an age like 30m, 2h, 7d");
    let split = raw.len().checked_sub(1).ok_or_else(bad)?;
    let (number, unit) = raw.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let age = number.checked_mul(unit).ok_or_else(bad)?;
    Ok(now - Duration::from_secs(age))
}

/// Runs `invocation` against `letters`.
pub async fn execute(letters: &DeadLetters, invocation: Invocation) -> anyhow::Result<Output> {
    let json = invocation.json;
    let report = match invocation.command {
        Command::List(filter) => {
            let found = letters.list(&filter).await?;
            let statuses = letters.statuses(&found).await?;
            let rows = found.iter().zip(statuses).map(|(l, s)| Row::of(l, s));
            Report::List(rows.collect())
        }
        Command::Show(sequence) => {
            let letter = letters.get(sequence).await?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no dead letter #{sequence} of {}",
                    letters.consumers().join(", ")
                )
            })?;
            let status = letters.status(&letter).await?;
            Report::Show(Box::new(detail(&letter, status)))
        }
        Command::Replay { filter, dry_run } => {
            let found = letters.list(&filter).await?;
            let statuses = letters.statuses(&found).await?;
            let mut rows = Vec::with_capacity(found.len());
            for (letter, status) in found.iter().zip(statuses) {
                rows.push(replay_one(letters, letter, status, dry_run).await);
            }
            Report::Replay(rows)
        }
    };
    Ok(Output { report, json })
}

async fn replay_one(
    letters: &DeadLetters,
    letter: &Letter,
    status: Status,
    dry_run: bool,
) -> ReplayRow {
    let mut row = ReplayRow {
        row: Row::of(letter, status),
        outcome: "failed",
        republished_to: None,
        removed: false,
        error: None,
    };
    if dry_run {
        row.outcome = if status == Status::Applied {
            "would-skip"
        } else {
            "would-republish"
        };
        return row;
    }
    match letters.replay(letter).await {
        Ok(Replayed::AlreadyApplied) => {
            row.outcome = "already-applied";
            row.removed = true;
        }
        Ok(Replayed::Republished {
            stream,
            sequence,
            duplicate,
        }) => {
            row.outcome = if duplicate {
                "duplicate"
            } else {
                "republished"
            };
            row.republished_to = Some(format!("{stream} #{sequence}"));
            row.removed = true;
        }
        Err(error) => row.error = Some(error.to_string()),
    }
    row
}

fn detail(letter: &Letter, status: Status) -> Detail {
    let base64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut detail = Detail {
        row: Row::of(letter, status),
        original_sequence: letter.original_sequence,
        envelope: None,
        payload_message: None,
        payload_upcast_to: None,
        payload: None,
        payload_error: None,
        raw_base64: None,
    };
    let Some(envelope) = &letter.envelope else {
        detail.payload_error = Some("the original is not an envelope".into());
        detail.raw_base64 = Some(base64(&letter.original));
        return detail;
    };
    let occurred_at = envelope.occurred_at.as_ref().and_then(|t| {
        let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()?
            .format(&Rfc3339)
            .ok()
    });
    detail.envelope = Some(serde_json::json!({
        "producer": envelope.producer,
        "occurred_at": occurred_at,
        "key": envelope.key,
        "trace_context": envelope.trace_context,
    }));
    let payload = dead_letters::payload(envelope);
    detail.payload_message = payload.message;
    detail.payload_upcast_to = payload.upcast_to;
    detail.payload = payload.json;
    if payload.error.is_some() {
        detail.payload_error = payload.error;
        detail.raw_base64 = Some(base64(&envelope.payload));
    }
    detail
}

/// Connects with `settings` (the bus, and the database when the service has one) and runs
/// `dead-letters <args>` for service `S`: what the binary does, minus the printing.
pub async fn run<S: Service>(settings: &S::Settings, args: &[&str]) -> anyhow::Result<Output> {
    let invocation = Invocation::parse(args, OffsetDateTime::now_utc())?;
    let bus = settings
        .bus()
        .ok_or_else(|| anyhow::anyhow!("{} has no event bus", S::NAME))?;
    let (js, topology) = crate::connect::bus(bus).await?;
    let pool = match (settings.common(), S::MIGRATOR) {
        (Some(common), Some(migrator)) => {
            Some(crate::connect::database(&common.database, migrator).await?)
        }
        _ => None,
    };
    let letters = DeadLetters::new(js, topology, S::CONSUMERS, pool);
    execute(&letters, invocation).await
}

/// `<service> dead-letters <args>`: runs and prints; fails when any replay failed.
pub async fn main<S: Service>(settings: S::Settings, args: &[&str]) -> anyhow::Result<()> {
    let output = match run::<S>(&settings, args).await {
        Ok(output) => output,
        Err(error) if error.is::<UsageError>() => {
            eprintln!("{}: {error}", S::NAME);
            std::process::exit(2);
        }
        Err(error) => return Err(error),
    };
    print!("{output}");
    match output.report.failures() {
        0 => Ok(()),
        n => Err(anyhow::anyhow!("{n} dead letters could not be replayed")),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2025-06-01 12:00 UTC);

    fn parse(args: &[&str]) -> Result<Invocation, UsageError> {
        Invocation::parse(args, NOW)
    }

    #[test]
    fn command_lines() {
        let list = parse(&["list", "--consumer", "c", "--since", "2h", "--json"]);
        let expected = Filter {
            consumer: Some("c".into()),
            since: Some(datetime!(2025-06-01 10:00 UTC)),
            ..Filter::default()
        };
        assert_eq!(
            list.ok(),
            Some(Invocation {
                command: Command::List(expected),
                json: true
            })
        );
        assert_eq!(
            parse(&["show", "42"]).ok().map(|i| i.command),
            Some(Command::Show(42))
        );
        let replay = parse(&[
            "replay",
            "--event",
            "task.assigned",
            "--version",
            "v9",
            "--until",
            "2025-06-01T11:00:00Z",
        ]);
        let expected = Filter {
            event: Some("task.assigned".into()),
            version: Some(9),
            until: Some(datetime!(2025-06-01 11:00 UTC)),
            ..Filter::default()
        };
        assert_eq!(
            replay.ok().map(|i| i.command),
            Some(Command::Replay {
                filter: expected,
                dry_run: false
            })
        );
        assert_eq!(
            parse(&["replay", "3", "5", "--dry-run"])
                .ok()
                .map(|i| i.command),
            Some(Command::Replay {
                filter: Filter {
                    sequences: vec![3, 5],
                    ..Filter::default()
                },
                dry_run: true
            })
        );
        assert_eq!(
            parse(&["replay", "--all"]).ok().map(|i| i.command),
            Some(Command::Replay {
                filter: Filter::default(),
                dry_run: false
            })
        );
        for bad in [
            &[][..],
            &["replay"],
            &["show"],
            &["show", "1", "2"],
            &["show", "1", "--consumer", "c"],
            &["list", "7"],
            &["list", "--all"],
            &["list", "--since", "yesterday"],
            &["list", "--consumer"],
            &["purge"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
