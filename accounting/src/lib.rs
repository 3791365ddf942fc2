//! Accounting: what PopugJira pays its popugs, and the admins' analytics.
//!
//! It owns the task prices (set once, the first time any event shows a task), the
//! immutable ledger (the audit log), balances, billing days and their close, payouts and
//! the payout e-mails. It consumes the account, task and reassign buses and publishes
//! the accounting bus through its outbox.
//!
//! - [`config`] — settings from `ACCOUNTING__*`, validated
//! - [`startup`] — [`Application`]: build, run until stopped (a `popug_service::Service`)
//! - [`api`] — the three gRPC services: request → [`service`] → response, nothing else
//! - [`service`] — queries, prices and the day close, with the row-level access rule
//! - [`domain`] — money, the billing clock, periods, validated input
//! - [`store`] — SQL, checked at compile time, one module per concern
//! - [`events`] — the consumers (users, tasks, reassigns) and what they publish
//! - [`mailer`] — the payout e-mail worker
//! - [`metrics`] — the ledger's totals, day closes and mails for Prometheus
//! - [`error`] — the error type and its mapping to gRPC status

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod mailer;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod store;

pub use config::Settings;
pub use startup::Application;
