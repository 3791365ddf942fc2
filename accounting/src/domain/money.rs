//! Money: integer cents carrying the ledger's sign, the three kinds of entry and the one
//! rule of which way each moves a balance, and task prices.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Neg, Sub};

/// Assign fee range in whole dollars (REQUIREMENTS §5).
pub const FEE_DOLLARS: std::ops::RangeInclusive<i64> = 10..=20;
/// Completion reward range in whole dollars.
pub const REWARD_DOLLARS: std::ops::RangeInclusive<i64> = 20..=40;

/// An amount in cents. On the ledger its sign is the direction: a debit (the user pays)
/// is negative, a credit positive; a balance is the sum of its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::Type)]
#[sqlx(transparent)]
pub struct Cents(pub i64);

impl Cents {
    pub const ZERO: Cents = Cents(0);

    pub fn from_dollars(dollars: i64) -> Cents {
        Cents(dollars * 100)
    }

    /// The amount as a plain number of cents (what the API and events carry).
    pub fn get(self) -> i64 {
        self.0
    }

    /// How much, whichever the direction.
    pub fn magnitude(self) -> Cents {
        Cents(self.0.abs())
    }
}

impl Add for Cents {
    type Output = Cents;
    fn add(self, other: Cents) -> Cents {
        Cents(self.0 + other.0)
    }
}

impl Sub for Cents {
    type Output = Cents;
    fn sub(self, other: Cents) -> Cents {
        Cents(self.0 - other.0)
    }
}

impl Neg for Cents {
    type Output = Cents;
    fn neg(self) -> Cents {
        Cents(-self.0)
    }
}

impl Sum for Cents {
    fn sum<I: Iterator<Item = Cents>>(iter: I) -> Cents {
        Cents(iter.map(|c| c.0).sum())
    }
}

/// Dollars with two decimals: `$12.34`, `-$5.00`.
impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:02}", abs / 100, abs % 100)
    }
}

/// What a ledger entry records. Stored by name (`assign_fee`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum EntryKind {
    /// Debited from the assignee on every assignment.
    AssignFee,
    /// Credited to the assignee who completes the task.
    CompletionReward,
    /// Debited at the day close, bringing a positive balance to zero.
    Payout,
}

impl EntryKind {
    /// Its stored name (`assign_fee`, ...), also its label in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::AssignFee => "assign_fee",
            EntryKind::CompletionReward => "completion_reward",
            EntryKind::Payout => "payout",
        }
    }

    /// The entry of this kind for `amount` (a price, or the balance paid out): the one
    /// place that decides which way each kind moves a balance.
    pub fn entry_amount(self, amount: Cents) -> Cents {
        match self {
            EntryKind::AssignFee | EntryKind::Payout => -amount.magnitude(),
            EntryKind::CompletionReward => amount.magnitude(),
        }
    }
}

/// A task's prices, drawn once, the first time Accounting sees the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub fee: Cents,
    pub reward: Cents,
}

impl Prices {
    pub fn draw() -> Prices {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        Prices {
            fee: Cents::from_dollars(rng.gen_range(FEE_DOLLARS)),
            reward: Cents::from_dollars(rng.gen_range(REWARD_DOLLARS)),
        }
    }

    /// The ledger entry a leg of `kind` books for this task (payouts have no price).
    pub fn entry_amount(self, kind: EntryKind) -> Cents {
        match kind {
            EntryKind::AssignFee => kind.entry_amount(self.fee),
            EntryKind::CompletionReward => kind.entry_amount(self.reward),
            EntryKind::Payout => Cents::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_whole_dollars_in_range() {
        for _ in 0..1000 {
            let p = Prices::draw();
            assert_eq!(p.fee.get() % 100, 0);
            assert_eq!(p.reward.get() % 100, 0);
            assert!((1000..=2000).contains(&p.fee.get()));
            assert!((2000..=4000).contains(&p.reward.get()));
        }
    }

    #[test]
    fn fees_and_payouts_debit_rewards_credit() {
        let prices = Prices {
            fee: Cents(1500),
            reward: Cents(3000),
        };
        assert_eq!(prices.entry_amount(EntryKind::AssignFee), Cents(-1500));
        assert_eq!(
            prices.entry_amount(EntryKind::CompletionReward),
            Cents(3000)
        );
        assert_eq!(EntryKind::Payout.entry_amount(Cents(4200)), Cents(-4200));
    }

    #[test]
    fn dollars() {
        assert_eq!(Cents(1234).to_string(), "$12.34");
        assert_eq!(Cents(-500).to_string(), "-$5.00");
        assert_eq!(Cents(7).to_string(), "$0.07");
        assert_eq!(Cents(0).to_string(), "$0.00");
        assert_eq!([Cents(1), Cents(-3)].into_iter().sum::<Cents>(), Cents(-2));
    }
}
