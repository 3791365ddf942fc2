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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A key set that never holds the asked-for kid, counting how often it is fetched.
    struct Counting(Arc<AtomicUsize>);

    impl JwksSource for Counting {
        fn fetch(&self) -> BoxFuture<Result<JwkSet, String>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                // Slow enough that the concurrent verifications overlap.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(JwkSet { keys: Vec::new() })
            })
        }
    }

    fn token_with_kid(kid: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#));
        let payload = b64.encode(r#"{"sub":"x"}"#);
        format!("{header}.{payload}.{}", b64.encode([0u8; 64]))
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval_however_many_ask() {
        let fetches = Arc::new(AtomicUsize::new(0));
        let verifier = Arc::new(Verifier::new(
            VerifierConfig::new("iss", "aud"),
            Arc::new(Counting(fetches.clone())),
        ));
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let verifier = verifier.clone();
                tokio::spawn(
                    async move { verifier.verify(&token_with_kid(&format!("kid-{i}"))).await },
                )
            })
            .collect();
        for call in calls {
            let result = call.await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(result, Err(VerifyError::UnknownKey));
        }
        // The first (stale cache) fetch and at most one throttled refetch.
        let n = fetches.load(Ordering::SeqCst);
        assert!(
            (1..=2).contains(&n),
            "fetched {n} times for 50 unknown kids"
        );
    }

    /// A key set that never changes.
    struct Fixed(JwkSet);

    impl JwksSource for Fixed {
        fn fetch(&self) -> BoxFuture<Result<JwkSet, String>> {
            let set = self.0.clone();
            Box::pin(async move { Ok(set) })
        }
    }

    /// A fresh Ed25519 key (kid `test`) and a verifier that trusts it.
    fn key_and_verifier() -> (jsonwebtoken::EncodingKey, Verifier) {
        use base64::Engine;
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .expect("a generated key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a readable key");
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key());
        let set: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "test", "alg": "EdDSA"}]
        }))
        .expect("a JWKS");
        let verifier = Verifier::new(VerifierConfig::new("iss", "aud"), Arc::new(Fixed(set)));
        (
            jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
            verifier,
        )
    }

    /// Valid claims issued at `now`, for five minutes.
    fn claims(now: i64) -> Claims {
        Claims {
            sub: "0190a5e2-0000-7000-8000-000000000001".into(),
            username: "kesha".into(),
            name: "Kesha".into(),
            surname: "Popugaev".into(),
            email: "kesha@popug.example".into(),
            role: "worker".into(),
            permissions: vec!["tasks.create".into()],
            iss: "iss".into(),
            aud: "aud".into(),
            iat: now,
            nbf: now,
            exp: now + 300,
            jti: "jti".into(),
            ver: 1,
        }
    }

    fn sign(key: &jsonwebtoken::EncodingKey, claims: &Claims) -> String {
        let mut header = jsonwebtoken::Header::new(Algorithm::EdDSA);
        header.kid = Some("test".into());
        jsonwebtoken::encode(&header, claims, key).expect("a signed token")
    }

    #[tokio::test]
    async fn a_token_issued_in_the_future_is_refused() {
        let (key, verifier) = key_and_verifier();
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let valid = claims(now);
        assert_eq!(
            verifier.verify(&sign(&key, &valid)).await,
            Ok(valid.clone())
        );
        // A signer's clock a little ahead is within the leeway.
        let skewed = Claims {
            iat: now + 3,
            ..valid.clone()
        };
        assert!(verifier.verify(&sign(&key, &skewed)).await.is_ok());
        // Correctly signed, valid by `nbf` and `exp`, but issued an hour from now.
        let future = Claims {
            iat: now + 3600,
            ..valid
        };
        assert_eq!(
            verifier.verify(&sign(&key, &future)).await,
            Err(VerifyError::IssuedInFuture)
        );
    }

    #[tokio::test]
    async fn only_eddsa_with_a_kid_is_looked_at() {
        use base64::Engine;
        let fetches = Arc::new(AtomicUsize::new(0));
        let verifier = Verifier::new(
            VerifierConfig::new("iss", "aud"),
            Arc::new(Counting(fetches.clone())),
        );
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let with_header = |h: &str| format!("{}.{}.", b64.encode(h), b64.encode("{}"));
        assert_eq!(
            verifier.verify(&with_header(r#"{"alg":"none"}"#)).await,
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verifier
                .verify(&with_header(r#"{"alg":"HS256","kid":"k"}"#))
                .await,
            Err(VerifyError::Algorithm)
        );
        assert_eq!(
            verifier
                .verify(&with_header(r#"{"alg":"RS256","kid":"k"}"#))
                .await,
            Err(VerifyError::Algorithm)
        );
        assert_eq!(
            verifier.verify(&with_header(r#"{"alg":"EdDSA"}"#)).await,
            Err(VerifyError::MissingKid)
        );
        assert_eq!(
            verifier.verify(&"x".repeat(9000)).await,
            Err(VerifyError::TooLarge)
        );
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            0,
            "refused before any key was fetched"
        );
    }
}
