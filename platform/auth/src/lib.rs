//! Access tokens as every PopugJira service sees them.
//!
//! - [`roles`] — the four roles and the permissions each one carries by default (the
//!   table of REQUIREMENTS §2, in one place).
//! - [`claims`] — what an access token says about its bearer.
//! - [`verify`] — signature and claim checks against a cached JWKS, refetched (throttled)
//!   when a token names an unknown key.
//! - [`layer`] — a tower layer that refuses every RPC without a valid token, except the
//!   public paths, and hands the verified [`Caller`] to the handlers.

pub mod claims;
pub mod layer;
pub mod roles;
pub mod verify;

pub use claims::{Caller, Claims};
pub use layer::{AuthLayer, caller};
pub use roles::{Permission, Role};
pub use verify::{HttpJwks, JwksSource, Verifier, VerifierConfig, VerifyError};
