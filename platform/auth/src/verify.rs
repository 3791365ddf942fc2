//! Access-token verification against the JWKS of Account.
//!
//! Only EdDSA tokens with a `kid` are accepted, so `alg: none` and HMAC/RSA key
//! confusion are refused before any key is looked at. Besides the signature, `exp`,
//! `nbf`, `iss` and `aud` are checked, and a token issued (`iat`) in the future is
//! refused: beyond the leeway, no clock of ours could have signed it. Keys are cached; a token naming an
//! unknown `kid` triggers at most one refetch per `refetch_interval`, however many
//! requests ask at once, and the cache is refreshed when older than `max_key_age` so a
//! retired key stops verifying.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

use crate::claims::Claims;

/// A boxed future, so sources can be stored as trait objects.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where the public keys come from: Account's HTTP endpoint for everyone else, Account's
/// own key ring inside Account.
pub trait JwksSource: Send + Sync + 'static {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, String>>;
}

/// `GET <url>` of a JWKS document (`/.well-known/jwks.json` of Account).
pub struct HttpJwks {
    url: http::Uri,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl HttpJwks {
    pub fn new(url: &str) -> Result<HttpJwks, String> {
        let url: http::Uri = url
            .parse()
            .map_err(|e| format!("bad JWKS url {url:?}: {e}"))?;
        if url.scheme_str() != Some("http") {
            return Err(format!(
                "JWKS url {url} must be http:// on the internal network"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(HttpJwks { url, client })
    }
}

impl JwksSource for HttpJwks {
    fn fetch(&self) -> BoxFuture<Result<JwkSet, String>> {
        let request = self.client.get(self.url.clone());
        Box::pin(async move {
            let response = tokio::time::timeout(Duration::from_secs(5), request)
                .await
                .map_err(|_| "JWKS request timed out".to_owned())?
                .map_err(|e| format!("JWKS request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("JWKS request answered {}", response.status()));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("JWKS body: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("JWKS document: {e}"))
        })
    }
}

/// What a verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// At most one JWKS refetch per this interval for unknown `kid`s.
    pub refetch_interval: Duration,
    /// Keys fetched longer ago than this are refetched on the next verification.
    pub max_key_age: Duration,
    /// Longer tokens are refused unparsed.
    pub max_token_len: usize,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

impl VerifierConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> VerifierConfig {
        VerifierConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            refetch_interval: Duration::from_secs(5),
            max_key_age: Duration::from_secs(300),
            max_token_len: 8 * 1024,
            leeway_secs: 5,
        }
    }
}

/// Why a token was refused. Every variant maps to UNAUTHENTICATED; the text is safe to
/// show the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token has no key id")]
    MissingKid,
    #[error("token signed with an unknown key")]
    UnknownKey,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token issuer not accepted")]
    Issuer,
    #[error("token audience not accepted")]
    Audience,
    #[error("token claims invalid")]
    Claims,
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens. Cheap to share (`Arc`).
pub struct Verifier {
    config: VerifierConfig,
    source: Arc<dyn JwksSource>,
    cache: RwLock<KeyCache>,
    /// Serialises refetches and remembers when the last one started (the throttle).
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Verifier {
    pub fn new(config: VerifierConfig, source: Arc<dyn JwksSource>) -> Verifier {
        for result in ["ok", "error"] {
            metrics::counter!(popug_metrics::names::JWKS_FETCHES, "result" => result).increment(0);
        }
        Verifier {
            config,
            source,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            refetch: tokio::sync::Mutex::new(None),
        }
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Checks `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        if token.len() > self.config.max_token_len {
            return Err(VerifyError::TooLarge);
        }
        let header = decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Algorithm);
        }
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;

        if self.keys_stale() {
            self.refetch(false).await;
        }
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refetch(true).await;
                self.key(&kid).ok_or(VerifyError::UnknownKey)?
            }
        };

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.config.leeway_secs;
        let data = decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => VerifyError::Signature,
                K::ExpiredSignature => VerifyError::Expired,
                K::ImmatureSignature => VerifyError::NotYetValid,
                K::InvalidIssuer => VerifyError::Issuer,
                K::InvalidAudience => VerifyError::Audience,
                K::InvalidAlgorithm => VerifyError::Algorithm,
                K::Json(_) | K::MissingRequiredClaim(_) => VerifyError::Claims,
                _ => VerifyError::Malformed,
            }
        })?;
        // jsonwebtoken does not look at `iat`; a token from the future is forged or was
        // signed by a clock far off, either way not one to trust.
        let now = jsonwebtoken::get_current_timestamp() as i64;
        if data.claims.iat > now.saturating_add(self.config.leeway_secs as i64) {
            return Err(VerifyError::IssuedInFuture);
        }
        Ok(data.claims)
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.keys.get(kid).cloned()
    }

    fn keys_stale(&self) -> bool {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache
            .fetched_at
            .is_none_or(|at| at.elapsed() > self.config.max_key_age)
    }

    /// Refetches the key set, unless another refetch started less than
    /// `refetch_interval` ago (`throttled`) — then the caller uses what that one got.
    async fn refetch(&self, throttled: bool) {
        let mut last = self.refetch.lock().await;
        if throttled && last.is_some_and(|at| at.elapsed() < self.config.refetch_interval) {
            return;
        }
        if !throttled && !self.keys_stale() {
            // Someone refreshed while we waited for the lock.
            return;
        }
        *last = Some(Instant::now());
        let fetched = self.source.fetch().await;
        let result = if fetched.is_ok() { "ok" } else { "error" };
        metrics::counter!(popug_metrics::names::JWKS_FETCHES, "result" => result).increment(1);
        match fetched {
            Ok(set) => {
                let keys: HashMap<_, _> = set
                    .keys
                    .iter()
                    .filter_map(|jwk| {
                        let kid = jwk.common.key_id.clone()?;
                        DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
                    })
                    .collect();
                tracing::debug!(keys = keys.len(), "JWKS fetched");
                let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                cache.keys = keys;
                cache.fetched_at = Some(Instant::now());
            }
            Err(error) => tracing::warn!(%error, "JWKS fetch failed; keeping cached keys"),
        }
    }
}

#[cfg(test)]
mod tests;
