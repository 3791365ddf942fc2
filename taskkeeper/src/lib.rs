//! TaskKeeper: the tasks of PopugJira and who they are assigned to.
//!
//! It owns tasks (random assignment at creation, completion by the assignee, the
//! "reassign open tasks" button) and its own copy of the assignable users, built only
//! from the account bus. It produces the task bus and the reassign bus through its outbox.
//!
//! - [`config`] — settings from `TASKKEEPER__*`, validated
//! - [`startup`] — [`Application`]: build, run until stopped (a `popug_service::Service`)
//! - [`api`] — the gRPC service: request → [`service`] → response, nothing else
//! - [`service`] — the rules: create, complete, list, reassign, each with its events
//! - [`domain`] — validated input and the task status
//! - [`store`] — SQL, checked at compile time
//! - [`events`] — what it publishes (task and reassign events) and consumes (accounts)
//! - [`error`] — the error type and its mapping to gRPC status

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod service;
pub mod startup;
pub mod store;

pub use config::Settings;
pub use startup::Application;
