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

#![allow(clippy::all, clippy::pedantic)]

/// Generated modules, one per protobuf package.
pub mod popug {
    pub mod accounting {
        pub mod v1 {
            tonic::include_proto!("popug.accounting.v1");
        }
    }
    pub mod analytics {
        pub mod v1 {
            tonic::include_proto!("popug.analytics.v1");
        }
    }
    pub mod account {
        pub mod v1 {
            tonic::include_proto!("popug.account.v1");
        }
    }
    pub mod authz {
        pub mod v1 {
            tonic::include_proto!("popug.authz.v1");
        }
    }
    pub mod tasks {
        pub mod v1 {
            tonic::include_proto!("popug.tasks.v1");
        }
    }
    pub mod gateway {
        pub mod v1 {
            tonic::include_proto!("popug.gateway.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("popug.events.v1");
        }
    }
}

/// Every PopugJira file descriptor (and its imports), for server reflection and for
/// reading the access-policy options at start.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/popug_descriptor.bin"));

pub use prost_types::Timestamp;
