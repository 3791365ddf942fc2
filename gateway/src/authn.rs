//! Authentication at the edge: the bearer token of each call, verified against Account's
//! JWKS (cached, refetch throttled — see `popug_auth::Verifier`), and verified tokens
//! remembered by their SHA-256 until they expire so a hot token costs one hash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use popug_auth::{Caller, Verifier};
use sha2::{Digest, Sha256};

/// Most tokens remembered at once; past that, expired ones go first, then all.
const MAX_CACHED: usize = 100_000;

/// Verified callers by token hash.
pub struct Authenticator {
    verifier: Arc<Verifier>,
    cache: Mutex<HashMap<[u8; 32], Caller>>,
}

impl Authenticator {
    pub fn new(verifier: Arc<Verifier>) -> Authenticator {
        Authenticator {
            verifier,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The caller proven by the `authorization` header.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, tonic::Status> {
        let token = bearer(headers)?;
        if token.len() > self.verifier.config().max_token_len {
            return Err(tonic::Status::unauthenticated("token too large"));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        if let Some(caller) = self.cached(&key, now) {
            return Ok(caller);
        }
        let claims = self
            .verifier
            .verify(token)
            .await
            .map_err(|e| tonic::Status::unauthenticated(e.to_string()))?;
        let caller = Caller::from_claims(claims, token.to_owned())
            .ok_or_else(|| tonic::Status::unauthenticated("token claims invalid"))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.claims.exp > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(key, caller.clone());
        Ok(caller)
    }

    fn cached(&self, key: &[u8; 32], now: i64) -> Option<Caller> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
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

fn bearer(headers: &http::HeaderMap) -> Result<&str, tonic::Status> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| tonic::Status::unauthenticated("missing access token"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| tonic::Status::unauthenticated("authorization must be 'Bearer <token>'"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}
