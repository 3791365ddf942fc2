//! Account: the users of PopugJira and the authority over who they are.
//!
//! It owns accounts (roles, permissions, passwords), sessions (refresh-token families)
//! and the Ed25519 keys that sign access tokens; it publishes the JWKS and produces the
//! account bus. No other service reads its tables.
//!
//! - [`config`] — settings from `ACCOUNT__*`, validated
//! - [`startup`] — [`Application`]: build, run until stopped, and Account's own commands
//! - [`api`] — the gRPC services: request → [`service`] → response, nothing else
//! - [`service`] — the rules: accounts and sessions
//! - [`domain`] — validated input
//! - [`store`] — SQL, checked at compile time, one module per concern
//! - [`events`] — the account events it publishes
//! - [`keys`] — the signing key ring and the JWKS
//! - [`password`] — argon2id
//! - [`http`] — `/.well-known/jwks.json`
//! - [`seed`] — the demo data set
//! - [`error`] — the error type and its mapping to gRPC status

pub mod api;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod keys;
pub mod password;
pub mod seed;
pub mod service;
pub mod startup;
pub mod store;

pub use config::Settings;
pub use startup::Application;
