//! The PopugJira contracts: every gRPC API and every event, generated from the `.proto`
//! files beside this crate. `proto/` is the schema registry; `buf lint` and
//! `buf breaking` guard it.
//!
//! - [`popug::account::v1`] — accounts, auth, account events
//! - [`popug::tasks::v1`] — tasks, task and reassign events
//! - [`popug::accounting::v1`] — balances, ledger, payouts, accounting events
//! - [`popug::analytics::v1`] — the admins' dashboard
//! - [`popug::gateway::v1`] — answers the gateway composes from several services
//! - [`popug::events::v1`] — the event envelope and dead letters
//! - [`popug::authz::v1`] — the per-RPC access policy option
//!
//! Beside the generated code, what every producer and consumer must agree on:
//! - [`catalog`] — the (name, version) each event message travels under
//! - [`upcast`] — every version of an event read as the current one
//! - [`jira`] — the shape of a Jira id (v1 task titles carried it)

pub mod catalog;
pub mod jira;
pub mod upcast;

/// `popug::<area>::v1`, the code generated for package `popug.<area>.v1`.
macro_rules! packages {
    ($($area:ident),* $(,)?) => {
        /// Generated modules, one per protobuf package.
        #[allow(clippy::all, clippy::pedantic)]
        pub mod popug {
            $(pub mod $area {
                pub mod v1 {
                    // What `tonic::include_proto!` does, with the package name built here.
                    include!(concat!(env!("OUT_DIR"), "/popug.", stringify!($area), ".v1.rs"));
                }
            })*
        }
    };
}

packages!(
    account, accounting, analytics, authz, events, gateway, tasks
);

/// Every PopugJira file descriptor (and its imports), for server reflection and for
/// reading the access-policy options at start.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/popug_descriptor.bin"));

pub use prost_types::Timestamp;
