//! SQL, checked against the schema at compile time, one module per concern. Functions take
//! a connection so callers choose the transaction; rows come out typed.
//!
//! - [`accounts`] — the accounts
//! - [`sessions`] — refresh-token families
//! - [`keys`] — the signing keys

pub mod accounts;
pub mod keys;
pub mod sessions;
