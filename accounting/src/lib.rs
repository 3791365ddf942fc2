//! Accounting: what PopugJira pays its popugs, and the admins' analytics.
//!
//! It owns the task prices (set once, the first time any event shows a task), the
//! immutable ledger (the audit log), balances, billing days and their close, payouts and
//! the payout e-mails. It consumes the account, task and reassign buses and publishes
//! the accounting bus through its outbox.
//!
//! - [`config`] — settings from `ACCOUNTING__*`, validated
//! - [`startup`] — `Application::build` / `run_until_stopped`
//! - [`api`] — the two gRPC services (thin)
//! - [`service`] — queries and the day close, with their access rules
//! - [`domain`] — billing days, periods, validated input
//! - [`store`] — SQL
//! - [`events`] — the consumers (users, tasks, reassigns) and what they write
//! - [`mailer`] — the payout e-mail worker
//! - [`error`] — the error enum and its mapping to gRPC status

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod mailer;
pub mod prices;
pub mod service;
pub mod startup;
pub mod store;

pub use config::Settings;
pub use startup::Application;
