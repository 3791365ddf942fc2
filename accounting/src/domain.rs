//! Billing days, periods and validated input. Every `parse` names the field at fault, so
//! the API answers INVALID_ARGUMENT with it.

use std::time::Duration;

use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::Error;

/// Assign fee range in whole dollars (REQUIREMENTS §5).
pub const FEE_DOLLARS: std::ops::RangeInclusive<i64> = 10..=20;
/// Completion reward range in whole dollars.
pub const REWARD_DOLLARS: std::ops::RangeInclusive<i64> = 20..=40;

/// A task's prices in cents, drawn once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub fee_cents: i64,
    pub reward_cents: i64,
}

impl Prices {
    pub fn draw() -> Prices {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        Prices {
            fee_cents: rng.gen_range(FEE_DOLLARS) * 100,
            reward_cents: rng.gen_range(REWARD_DOLLARS) * 100,
        }
    }
}

/// The calendar day (UTC) an instant falls in, when days end `cutoff` after midnight.
pub fn calendar_day(at: OffsetDateTime, cutoff: Duration) -> Date {
    (at.to_offset(time::UtcOffset::UTC) - cutoff).date()
}

/// "YYYY-MM-DD".
pub fn format_day(day: Date) -> String {
    let (y, m, d) = (day.year(), u8::from(day.month()), day.day());
    format!("{y:04}-{m:02}-{d:02}")
}

/// A "YYYY-MM-DD" day; empty gives `None`.
pub fn parse_day(field: &'static str, raw: &str) -> Result<Option<Date>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(raw, &format)
        .map(Some)
        .map_err(|_| Error::invalid(field, "must be a day like 2026-03-03"))
}

/// Which period the most expensive task is looked for in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day(Date),
    Week(Date),
    Month(Date),
    Custom(Date, Date),
}

impl Period {
    /// First and last day, inclusive.
    pub fn range(self) -> (Date, Date) {
        match self {
            Period::Day(day) => (day, day),
            Period::Week(day) => {
                let monday =
                    day - time::Duration::days(i64::from(day.weekday().number_days_from_monday()));
                (monday, monday + time::Duration::days(6))
            }
            Period::Month(day) => {
                let first = day.replace_day(1).unwrap_or(day);
                let last = day
                    .replace_day(day.month().length(day.year()))
                    .unwrap_or(day);
                (first, last)
            }
            Period::Custom(from, to) => (from, to),
        }
    }
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
    if to < from {
        return Err(Error::invalid("to_day", "must not be before from_day"));
    }
    if (to - from).whole_days() >= max_days {
        return Err(Error::invalid(
            "to_day",
            format!("the range may span at most {max_days} days"),
        ));
    }
    Ok((from, to))
}

pub fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// Rows per page: 0 means 50, otherwise 1..=500.
pub fn parse_page_size(raw: i32) -> Result<i64, Error> {
    match raw {
        0 => Ok(50),
        1..=500 => Ok(i64::from(raw)),
        _ => Err(Error::invalid("page_size", "must be between 1 and 500")),
    }
}

/// The last id of the previous page; empty means the first page.
pub fn parse_page_token(raw: &str) -> Result<Option<i64>, Error> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(Some)
        .ok_or_else(|| Error::invalid("page_token", "is not a token this service issued"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    fn field_of<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
        match result {
            Err(Error::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn prices_are_whole_dollars_in_range() {
        for _ in 0..1000 {
            let p = Prices::draw();
            assert_eq!(p.fee_cents % 100, 0);
            assert_eq!(p.reward_cents % 100, 0);
            assert!((1000..=2000).contains(&p.fee_cents));
            assert!((2000..=4000).contains(&p.reward_cents));
        }
    }

    #[test]
    fn days_follow_the_cutoff() {
        let at = datetime!(2026-03-03 17:00 UTC);
        assert_eq!(calendar_day(at, Duration::ZERO), date!(2026 - 03 - 03));
        assert_eq!(
            calendar_day(at, Duration::from_secs(18 * 3600)),
            date!(2026 - 03 - 02)
        );
        assert_eq!(format_day(date!(2026 - 03 - 03)), "2026-03-03");
        assert_eq!(
            parse_day("day", "2026-03-03").ok().flatten(),
            Some(date!(2026 - 03 - 03))
        );
        assert_eq!(field_of(parse_day("day", "03.03.2026")), "day");
    }

    #[test]
    fn periods() {
        let d = date!(2026 - 03 - 04); // a Wednesday
        assert_eq!(Period::Day(d).range(), (d, d));
        assert_eq!(
            Period::Week(d).range(),
            (date!(2026 - 03 - 02), date!(2026 - 03 - 08))
        );
        assert_eq!(
            Period::Month(date!(2024 - 02 - 10)).range(),
            (date!(2024 - 02 - 01), date!(2024 - 02 - 29))
        );
    }

    #[test]
    fn ranges_and_pages() {
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
        assert_eq!(parse_page_size(0).ok(), Some(50));
        assert_eq!(field_of(parse_page_size(501)), "page_size");
        assert_eq!(parse_page_token("").ok(), Some(None));
        assert_eq!(field_of(parse_page_token("x")), "page_token");
    }
}
