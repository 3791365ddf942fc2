//! SQL, checked against the schema at compile time, one module per concern. Functions take
//! a connection so callers choose the transaction; rows come out typed.
//!
//! - [`users`] — the copy of the users from the account bus
//! - [`tasks`] — tasks as the events show them, with their prices
//! - [`ledger`] — entries and balances
//! - [`billing`] — the open day, its close and the payouts it makes
//! - [`mails`] — payout e-mails

pub mod billing;
pub mod ledger;
pub mod mails;
pub mod tasks;
pub mod users;
