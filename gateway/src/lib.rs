//! Gateway: the only public entry of PopugJira.
//!
//! One port serves native gRPC, grpc-web (with CORS) and the web client's files. Every
//! call is checked against the access policy declared next to its RPC in `proto/`
//! (deny by default), authenticated with Account's JWKS, rate limited per caller, and
//! forwarded unchanged to the service that owns it.
//!
//! The access decision itself is `popug_auth::PolicyTable::admit`, the same code every
//! service runs in front of its RPCs.
//!
//! - [`config`] — settings from `GATEWAY__*`
//! - [`startup`] — [`Application`]: build, run until stopped, health and reflection
//! - [`ratelimit`] — a token bucket per caller
//! - [`server`] — the HTTP/1.1 + HTTP/2 server of the public port, with connection limits
//! - [`proxy`] — generic forwarding with deadlines, retries of reads, limits
//! - [`upstream`] — each upstream's endpoints, balanced, ejected and probed back
//! - [`board`] — `BoardService`: answers composed from several services in parallel
//! - [`cache`] — the Redis read-through cache of public data
//! - [`invalidate`] — account events drop cached profiles
//! - [`web`] — static files and `/metrics` beside the proxy

pub mod board;
pub mod cache;
pub mod config;
pub mod invalidate;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod startup;
pub mod upstream;
pub mod web;

pub use config::Settings;
pub use startup::Application;
