//! Access tokens and access decisions as every PopugJira hop makes them.
//!
//! - [`roles`] — the four roles and the permissions each one carries by default (the
//!   table of REQUIREMENTS §2, in one place).
//! - [`claims`] — what an access token says about its bearer.
//! - [`verify`] — signature and claim checks against a cached JWKS, refetched (throttled)
//!   when a token names an unknown key.
//! - [`authn`] — the bearer token of a call, verified, with a cache of verified tokens.
//! - [`revocation`] — tokens older than the newest version of their account a hop knows
//!   are refused: how each hop learns the versions is its own.
//! - [`policy`] — who may call each RPC, read from the options next to it in `proto/`;
//!   [`PolicyTable::admit`] is the one decision the gateway and every service make.
//! - [`layer`] — the tower layer that makes that decision in front of a service's RPCs
//!   and hands the verified [`Caller`] to the handlers.

pub mod authn;
pub mod claims;
pub mod layer;
pub mod policy;
pub mod revocation;
pub mod roles;
pub mod verify;

pub use authn::Authenticator;
pub use claims::{Caller, Claims};
pub use layer::{AuthLayer, caller};
pub use policy::{Access, PolicyError, PolicyTable};
pub use revocation::{AccountVersions, Revocation};
pub use roles::{Permission, Role};
pub use verify::{HttpJwks, JwksSource, Verifier, VerifierConfig, VerifyError};
