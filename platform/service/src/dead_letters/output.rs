//! What the `dead-letters` commands print: the rows and reports they produce, and how an
//! [`Output`] renders them — a table for a human, JSON with `--json`.

use std::fmt::{self, Write as _};

use popug_eventbus::dead_letters::{Letter, Status};
use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;

/// A letter as the commands show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    pub failed_at: Option<String>,
    pub consumer: String,
    /// The subject the original was received on.
    pub subject: String,
    pub event: Option<String>,
    pub version: Option<i32>,
    pub event_id: Option<String>,
    /// What the consumer's processed-events row says: dead, applied, unrecorded, unknown.
    pub status: &'static str,
    pub reason: String,
}

impl Row {
    pub(super) fn of(letter: &Letter, status: Status) -> Row {
        let envelope = letter.envelope.as_ref();
        Row {
            sequence: letter.sequence,
            failed_at: letter.failed_at.and_then(|t| t.format(&Rfc3339).ok()),
            consumer: letter.consumer.clone(),
            subject: letter.subject.clone(),
            event: envelope.map(|e| e.name.clone()),
            version: envelope.map(|e| e.version),
            event_id: envelope.map(|e| e.event_id.clone()),
            status: status.as_str(),
            reason: letter.reason.clone(),
        }
    }

    fn event_label(&self) -> String {
        match (&self.event, self.version) {
            (Some(name), Some(version)) => format!("{name} v{version}"),
            _ => "(not an envelope)".into(),
        }
    }
}

/// One letter in full: the row, the rest of the envelope and the payload read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub row: Row,
    /// The original's sequence in its own stream.
    pub original_sequence: u64,
    /// The rest of the envelope (producer, occurred at, key, trace context), if it is one.
    pub envelope: Option<Value>,
    /// The protobuf message the payload was read as.
    pub payload_message: Option<&'static str>,
    /// The version it was read as, when a registered upcaster turned it into that one.
    pub payload_upcast_to: Option<i32>,
    /// The payload in the canonical protobuf JSON mapping.
    pub payload: Option<Value>,
    /// Why the payload could not be read.
    pub payload_error: Option<String>,
    /// The bytes that could not be read (base64): the payload, or the whole original
    /// when it is no envelope.
    pub raw_base64: Option<String>,
}

/// What a replay did with one letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayRow {
    #[serde(flatten)]
    pub row: Row,
    /// republished | duplicate | already-applied | would-republish | would-skip | failed
    pub outcome: &'static str,
    /// Where the republished copy went (stream and sequence).
    pub republished_to: Option<String>,
    /// Whether the letter was deleted from the dead-letter stream.
    pub removed: bool,
    pub error: Option<String>,
}

/// What a command found or did.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    List(Vec<Row>),
    Show(Box<Detail>),
    Replay(Vec<ReplayRow>),
}

impl Report {
    /// Letters a replay could not replay.
    pub fn failures(&self) -> usize {
        match self {
            Report::Replay(rows) => rows.iter().filter(|r| r.outcome == "failed").count(),
            _ => 0,
        }
    }
}

/// A report and how to print it.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub report: Report,
    pub json: bool,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.json {
            let json = match &self.report {
                Report::List(rows) => serde_json::to_string_pretty(rows),
                Report::Show(detail) => serde_json::to_string_pretty(detail),
                Report::Replay(rows) => serde_json::to_string_pretty(rows),
            };
            return writeln!(f, "{}", json.map_err(|_| fmt::Error)?);
        }
        match &self.report {
            Report::List(rows) => render_list(f, rows),
            Report::Show(detail) => render_detail(f, detail),
            Report::Replay(rows) => render_replay(f, rows),
        }
    }
}

fn short_time(rfc3339: Option<&str>) -> String {
    // 2025-06-01T12:00:03.123456789Z → 2025-06-01 12:00:03
    rfc3339
        .map(|t| t.get(..19).unwrap_or(t).replacen('T', " ", 1))
        .unwrap_or_else(|| "-".into())
}

fn render_list(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    if rows.is_empty() {
        return writeln!(f, "no dead letters");
    }
    let event_width = rows
        .iter()
        .map(|r| r.event_label().len())
        .max()
        .unwrap_or(0);
    let consumer_width = rows.iter().map(|r| r.consumer.len()).max().unwrap_or(0);
    let subject_width = rows.iter().map(|r| r.subject.len()).max().unwrap_or(0);
    writeln!(
        f,
        "{:>5}  {:<19}  {:<consumer_width$}  {:<subject_width$}  {:<event_width$}  {:<36}  {:<10}  REASON",
        "SEQ", "FAILED AT (UTC)", "CONSUMER", "SUBJECT", "EVENT", "EVENT ID", "STATUS"
    )?;
    for r in rows {
        writeln!(
            f,
            "{:>5}  {:<19}  {:<consumer_width$}  {:<subject_width$}  {:<event_width$}  {:<36}  {:<10}  {}",
            r.sequence,
            short_time(r.failed_at.as_deref()),
            r.consumer,
            r.subject,
            r.event_label(),
            r.event_id.as_deref().unwrap_or("-"),
            r.status,
            r.reason,
        )?;
    }
    let n = rows.len();
    writeln!(f, "{n} dead letter{}", if n == 1 { "" } else { "s" })
}

fn status_text(status: &str) -> &'static str {
    match status {
        "dead" => "dead: refused, nothing of it applied; replay applies it",
        "applied" => "applied since: replay only deletes the letter",
        "unrecorded" => {
            "no processed-events row (never reached the handler); replay republishes it"
        }
        _ => "unknown (no database to ask); replay republishes it",
    }
}

fn render_detail(f: &mut fmt::Formatter<'_>, d: &Detail) -> fmt::Result {
    let r = &d.row;
    writeln!(f, "dead letter #{} of {}", r.sequence, r.consumer)?;
    writeln!(f, "  failed at  {} UTC", short_time(r.failed_at.as_deref()))?;
    writeln!(f, "  reason     {}", r.reason)?;
    writeln!(
        f,
        "  subject    {} (stream sequence {})",
        r.subject, d.original_sequence
    )?;
    writeln!(f, "  status     {}", status_text(r.status))?;
    writeln!(
        f,
        "  event      {} {}",
        r.event_label(),
        r.event_id.as_deref().unwrap_or("")
    )?;
    if let Some(envelope) = &d.envelope {
        for (label, field) in [
            ("producer", "producer"),
            ("occurred", "occurred_at"),
            ("key", "key"),
            ("trace", "trace_context"),
        ] {
            let value = match &envelope[field] {
                Value::String(s) => s.clone(),
                Value::Object(map) if map.is_empty() => continue,
                Value::Null => continue,
                other => other.to_string(),
            };
            writeln!(f, "  {label:<10} {value}")?;
        }
    }
    match (&d.payload, d.payload_message) {
        (Some(payload), Some(message)) => {
            let read_as = match d.payload_upcast_to {
                Some(version) => format!(" (read as v{version} by a registered upcaster)"),
                None => String::new(),
            };
            writeln!(f, "  payload    {message}{read_as}")?;
            let pretty = serde_json::to_string_pretty(payload).map_err(|_| fmt::Error)?;
            for line in pretty.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        _ => writeln!(
            f,
            "  payload    unreadable: {}",
            d.payload_error.as_deref().unwrap_or("?")
        )?,
    }
    if let Some(raw) = &d.raw_base64 {
        writeln!(f, "  raw        {raw} (base64)")?;
    }
    Ok(())
}

fn render_replay(f: &mut fmt::Formatter<'_>, rows: &[ReplayRow]) -> fmt::Result {
    if rows.is_empty() {
        return writeln!(f, "no dead letters to replay");
    }
    for r in rows {
        let mut what = match r.outcome {
            "republished" => format!(
                "republished to {}",
                r.republished_to.as_deref().unwrap_or("?")
            ),
            "duplicate" => "already republished (dropped by JetStream as a duplicate)".into(),
            "already-applied" => "already applied, nothing republished".into(),
            "would-republish" => "would be republished".into(),
            "would-skip" => "already applied, would only be deleted".into(),
            _ => format!("FAILED: {}", r.error.as_deref().unwrap_or("?")),
        };
        if r.removed {
            what.push_str("; letter deleted");
        }
        writeln!(
            f,
            "#{:<5} {}  {}  {}  {what}",
            r.row.sequence,
            r.row.consumer,
            r.row.event_label(),
            r.row.event_id.as_deref().unwrap_or("-"),
        )?;
    }
    let count = |outcomes: &[&str]| {
        rows.iter()
            .filter(|r| outcomes.contains(&r.outcome))
            .count()
    };
    let mut summary = String::new();
    let _ = write!(
        summary,
        "republished {}, already applied {}, failed {}",
        count(&["republished", "duplicate"]),
        count(&["already-applied"]),
        count(&["failed"]),
    );
    if rows.iter().any(|r| r.outcome.starts_with("would")) {
        summary = format!(
            "dry run: {} would be republished, {} only deleted",
            count(&["would-republish"]),
            count(&["would-skip"])
        );
    }
    writeln!(f, "{summary}")
}
