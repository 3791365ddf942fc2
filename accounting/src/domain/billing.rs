//! Billing days: which day it is under the configured cutoff, which day an entry goes
//! to, and the periods analytics asks about.

use std::time::Duration;

use time::{Date, OffsetDateTime};

/// The billing calendar: days end `cutoff` after midnight UTC (0: calendar days in UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingClock {
    cutoff: Duration,
}

impl BillingClock {
    /// `cutoff` must be under a day (the settings check it).
    pub fn new(cutoff: Duration) -> BillingClock {
        BillingClock { cutoff }
    }

    /// The calendar day `at` falls in.
    pub fn day_of(&self, at: OffsetDateTime) -> Date {
        (at.to_offset(time::UtcOffset::UTC) - self.cutoff).date()
    }

    /// The calendar day it is now.
    pub fn today(&self) -> Date {
        self.day_of(OffsetDateTime::now_utc())
    }

    /// Today's billing day: the day entries written now go to. That is the open day (the
    /// first one not closed yet) — or today, when every day before it has been closed
    /// early by hand. The only answer to "what is today's billing day".
    pub fn billing_day(&self, open_day: Date) -> Date {
        open_day.max(self.today())
    }
}

/// "YYYY-MM-DD".
pub fn format_day(day: Date) -> String {
    let (y, m, d) = (day.year(), u8::from(day.month()), day.day());
    format!("{y:04}-{m:02}-{d:02}")
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
                // Saturating at the ends of the calendar: never a panic, whatever the day.
                let back = time::Duration::days(i64::from(day.weekday().number_days_from_monday()));
                let monday = day.checked_sub(back).unwrap_or(Date::MIN);
                let sunday = monday
                    .checked_add(time::Duration::days(6))
                    .unwrap_or(Date::MAX);
                (monday, sunday)
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn days_follow_the_cutoff() {
        let at = datetime!(2026-03-03 17:00 UTC);
        assert_eq!(
            BillingClock::new(Duration::ZERO).day_of(at),
            date!(2026 - 03 - 03)
        );
        assert_eq!(
            BillingClock::new(Duration::from_secs(18 * 3600)).day_of(at),
            date!(2026 - 03 - 02)
        );
        assert_eq!(format_day(date!(2026 - 03 - 03)), "2026-03-03");
        let clock = BillingClock::new(Duration::ZERO);
        let far = date!(2999 - 01 - 01);
        assert_eq!(
            clock.billing_day(far),
            far,
            "a day closed early moves ahead"
        );
        assert_eq!(clock.billing_day(date!(2000 - 01 - 01)), clock.today());
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
        // The last week of the calendar ends with it, no overflow.
        let (_, end) = Period::Week(Date::MAX).range();
        assert_eq!(end, Date::MAX);
    }
}
