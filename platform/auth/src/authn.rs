//! Authentication of one call: the bearer token of its `authorization` header, verified
//! (see [`crate::verify`]) into a [`Caller`], and not revoked (see [`crate::revocation`]).
//! Verified tokens are remembered by their SHA-256 until they expire, so a hot token costs
//! one hash; whether it was revoked since is asked on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tonic::Status;

use crate::claims::Caller;
use crate::revocation::{self, Revocation};
use crate::verify::Verifier;

/// Most tokens remembered at once; past that, expired ones go first, then all.
const MAX_CACHED: usize = 100_000;

/// Verifies bearer tokens, with or without a cache of verified callers.
pub struct Authenticator {
    verifier: Arc<Verifier>,
    /// Verified callers by token hash; `None` verifies every call (Account, whose
    /// retired keys must stop verifying at once).
    cache: Option<Mutex<HashMap<[u8; 32], Caller>>>,
    /// Where this hop learns of revoked tokens; `None`: only expiry ends a token.
    revocation: Option<Arc<dyn Revocation>>,
}

impl Authenticator {
    /// Remembers verified tokens until they expire.
    pub fn new(verifier: Arc<Verifier>) -> Authenticator {
        Authenticator {
            verifier,
            cache: Some(Mutex::new(HashMap::new())),
            revocation: None,
        }
    }

    /// Verifies every call afresh.
    pub fn uncached(verifier: Arc<Verifier>) -> Authenticator {
        Authenticator {
            verifier,
            cache: None,
            revocation: None,
        }
    }

    /// Also refuses tokens older than the newest version of their account `revocation`
    /// knows (UNAUTHENTICATED "token revoked"), on every call.
    pub fn with_revocation(mut self, revocation: Arc<dyn Revocation>) -> Authenticator {
        self.revocation = Some(revocation);
        self
    }

    /// The caller proven by the `authorization` header; UNAUTHENTICATED otherwise.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let token = bearer(headers)?;
        if token.len() > self.verifier.config().max_token_len {
            return Err(Status::unauthenticated("token too large"));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(caller) = self.cached(&key, now) {
            self.not_revoked(&key, &caller).await?;
            return Ok(caller);
        }
        let claims = self
            .verifier
            .verify(token)
            .await
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let caller = Caller::from_claims(claims)
            .ok_or_else(|| Status::unauthenticated("token claims invalid"))?;
        if let Some(cache) = &self.cache {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, c| c.claims.exp > now);
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, caller.clone());
        }
        self.not_revoked(&key, &caller).await?;
        Ok(caller)
    }

    /// UNAUTHENTICATED when `caller`'s token was revoked; a revoked token is forgotten
    /// (it never becomes valid again).
    async fn not_revoked(&self, key: &[u8; 32], caller: &Caller) -> Result<(), Status> {
        let Some(revocation) = &self.revocation else {
            return Ok(());
        };
        let checked = revocation::check(revocation.as_ref(), caller).await;
        if checked.is_err()
            && let Some(cache) = &self.cache
        {
            cache.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
        }
        checked
    }

    fn cached(&self, key: &[u8; 32], now: i64) -> Option<Caller> {
        let mut cache = self
            .cache
            .as_ref()?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some(caller) if caller.claims.exp > now => Some(caller.clone()),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }
}

/// The token of `authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> Result<&str, Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| Status::unauthenticated("missing access token"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
