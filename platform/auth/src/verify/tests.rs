//! Tests of the verifier: the refetch throttle, `iat` in the future, and what is refused
//! before any key is looked at.

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
            tokio::spawn(async move { verifier.verify(&token_with_kid(&format!("kid-{i}"))).await })
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
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("a generated key");
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
