//! Validated input and the domain's types. Every `parse` names the field at fault, so the
//! API answers INVALID_ARGUMENT with it.
//!
//! - [`money`] — cents with the ledger's sign, entry kinds, task prices
//! - [`billing`] — the billing clock (today's billing day) and analytics periods

pub mod billing;
pub mod money;

pub use billing::{BillingClock, Period, format_day};
pub use money::{Cents, EntryKind, Prices};

use crate::error::Error;
use time::Date;

/// Where a payout e-mail stands. Stored by name (`new`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum MailStatus {
    /// Written by the day close, not yet tried.
    New,
    /// Claimed by a mailer; never retried on its own (a mail is never sent twice).
    Sending,
    Sent,
    /// Refused by the relay; retried while a next attempt is set.
    Failed,
}

/// The first day a request may name.
pub const FIRST_DAY: Date = time::macros::date!(2000 - 01 - 01);
/// The last day a request may name.
pub const LAST_DAY: Date = time::macros::date!(2999 - 12 - 31);

/// A "YYYY-MM-DD" day from [`FIRST_DAY`] to [`LAST_DAY`]; empty gives `None`.
pub fn parse_day(field: &'static str, raw: &str) -> Result<Option<Date>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = Date::parse(raw, &format)
        .map_err(|_| Error::invalid(field, "must be a day like 2026-03-03"))?;
    if !(FIRST_DAY..=LAST_DAY).contains(&day) {
        return Err(Error::invalid(
            field,
            "must be a day from 2000-01-01 to 2999-12-31",
        ));
    }
    Ok(Some(day))
}

/// `from ..= to` in order and at most `max_days` long (the refusal names `to_day`).
pub fn check_span(from: Date, to: Date, max_days: i64) -> Result<(), Error> {
    if to < from {
        return Err(Error::invalid("to_day", "must not be before from_day"));
    }
    if (to - from).whole_days() >= max_days {
        return Err(Error::invalid(
            "to_day",
            format!("the range may span at most {max_days} days"),
        ));
    }
    Ok(())
}

/// A range of days for per-day figures: `from ..= to`, at most `max_days` long.
pub fn parse_range(
    from: &str,
    to: &str,
    today: Date,
    max_days: i64,
) -> Result<(Date, Date), Error> {
    let from_day = parse_day("from_day", from)?;
    let to_day = parse_day("to_day", to)?;
    let (from, to) = match (from_day, to_day) {
        (None, None) => (today, today),
        (Some(f), None) => (f, today.max(f)),
        (None, Some(t)) => (t, t),
        (Some(f), Some(t)) => (f, t),
    };
    check_span(from, to, max_days)?;
    Ok((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use popug_errors::field_of;
    use time::macros::date;

    #[test]
    fn days() {
        assert_eq!(
            parse_day("day", "2026-03-03").ok().flatten(),
            Some(date!(2026 - 03 - 03))
        );
        assert_eq!(field_of(parse_day("day", "03.03.2026")), "day");
        assert_eq!(field_of(parse_day("day", "-5000-01-01")), "day");
        assert_eq!(field_of(parse_day("day", "1999-12-31")), "day");
        assert_eq!(field_of(parse_day("day", "3000-01-01")), "day");
        assert!(parse_day("day", "2999-12-31").is_ok());
    }

    #[test]
    fn ranges() {
        let today = date!(2026 - 03 - 03);
        assert_eq!(parse_range("", "", today, 366).ok(), Some((today, today)));
        assert_eq!(
            field_of(parse_range("2026-03-03", "2026-03-01", today, 366)),
            "to_day"
        );
        assert_eq!(
            field_of(parse_range("2020-01-01", "2026-03-01", today, 366)),
            "to_day"
        );
    }
}
