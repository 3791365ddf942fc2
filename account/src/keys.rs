//! Ed25519 signing keys and the JWKS: the cryptography (the rows are `store::keys`).
//!
//! Keys live in the `signing_keys` table so every replica signs with the same newest key
//! and publishes the same set. A key from configuration (`ACCOUNT__SIGNING_KEY_FILE`) is
//! imported; with none and an empty table one is generated on first start. Rotation adds
//! a newer key; older ones stay published (tokens they signed keep verifying) until
//! retired.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::JwkSet;
use popug_auth::JwksSource;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::store::keys::{self as store, KeyRow};

/// One signing key, ready to use.
struct LoadedKey {
    kid: String,
    encoding: EncodingKey,
    public_key: Vec<u8>,
}

/// The keys currently published; the last one signs.
pub struct KeyRing {
    pool: PgPool,
    keys: RwLock<Arc<Vec<LoadedKey>>>,
}

/// A PKCS#8 Ed25519 private key with its public half and kid, as stored.
fn key_from_pkcs8(pkcs8: Vec<u8>) -> anyhow::Result<KeyRow> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
        .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
    let public_key = pair.public_key().as_ref().to_vec();
    Ok(KeyRow {
        kid: kid_of(&public_key),
        private_pkcs8: pkcs8,
        public_key,
    })
}

/// A new random key.
fn generate_key() -> anyhow::Result<KeyRow> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    key_from_pkcs8(pkcs8.as_ref().to_vec())
}

/// A key from a PKCS#8 PEM file's text.
fn key_from_pem(pem: &str) -> anyhow::Result<KeyRow> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.trim().chars())
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|e| anyhow::anyhow!("signing key PEM is not base64: {e}"))?;
    key_from_pkcs8(der)
}

/// Key id: the first 16 characters of the base64url SHA-256 of the public key.
fn kid_of(public_key: &[u8]) -> String {
    let digest = Sha256::digest(public_key);
    URL_SAFE_NO_PAD.encode(digest)[..16].to_owned()
}

impl KeyRing {
    /// An empty ring over `pool`; [`KeyRing::prepare`] fills it once the database is up.
    pub fn new(pool: PgPool) -> KeyRing {
        KeyRing {
            pool,
            keys: RwLock::new(Arc::new(Vec::new())),
        }
    }

    /// Imports the configured key (if any), generates one if none is live, and loads.
    pub async fn prepare(&self, configured_pem: Option<&str>) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        store::lock(&mut tx).await?;
        if let Some(pem) = configured_pem {
            let key = key_from_pem(pem)?;
            store::insert(&mut tx, &key).await?;
        }
        if store::live(&mut tx).await?.is_empty() {
            let key = generate_key()?;
            store::insert(&mut tx, &key).await?;
            tracing::info!(kid = %key.kid, "generated a signing key");
        }
        tx.commit().await?;
        self.reload().await
    }

    /// Rereads the live keys (after a rotation here or in another replica).
    pub async fn reload(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.acquire().await?;
        let keys = store::live(&mut conn)
            .await?
            .into_iter()
            .map(|row| LoadedKey {
                kid: row.kid,
                encoding: EncodingKey::from_ed_der(&row.private_pkcs8),
                public_key: row.public_key,
            })
            .collect();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(())
    }

    /// Reloads every `interval` until `stop` resolves (rotations made elsewhere).
    pub async fn reload_every(
        self: Arc<Self>,
        interval: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {
                    if let Err(error) = self.reload().await {
                        tracing::warn!(%error, "signing key reload failed");
                    }
                }
            }
        }
    }

    fn snapshot(&self) -> Arc<Vec<LoadedKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Signs `claims` with the newest key.
    pub fn sign<T: serde::Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let keys = self.snapshot();
        let key = keys
            .last()
            .ok_or_else(|| anyhow::anyhow!("no signing key loaded"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key.encoding)?)
    }

    /// The JWKS document: every live public key.
    pub fn jwks_json(&self) -> String {
        let keys: Vec<_> = self
            .snapshot()
            .iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(&k.public_key),
                    "kid": k.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys }).to_string()
    }

    /// Kids of the live keys, oldest first.
    pub fn kids(&self) -> Vec<String> {
        self.snapshot().iter().map(|k| k.kid.clone()).collect()
    }
}

/// Adds a new signing key; it signs from the next reload on. Returns its kid.
pub async fn rotate(pool: &PgPool) -> anyhow::Result<String> {
    let key = generate_key()?;
    let mut conn = pool.acquire().await?;
    store::insert(&mut conn, &key).await?;
    Ok(key.kid)
}

/// Stops publishing key `kid`: tokens it signed stop verifying. Refuses to retire the
/// last live key.
pub async fn retire(pool: &PgPool, kid: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    store::lock(&mut tx).await?;
    let live = store::live(&mut tx).await?;
    anyhow::ensure!(live.iter().any(|k| k.kid == kid), "no live key {kid:?}");
    anyhow::ensure!(live.len() > 1, "{kid} is the only live key; rotate first");
    store::retire(&mut tx, kid).await?;
    tx.commit().await?;
    Ok(())
}

/// Account verifies its own tokens from its own ring: no HTTP round trip to itself.
pub struct LocalJwks(pub Arc<KeyRing>);

impl JwksSource for LocalJwks {
    fn fetch(&self) -> popug_auth::verify::BoxFuture<Result<JwkSet, String>> {
        let json = self.0.jwks_json();
        Box::pin(async move { serde_json::from_str(&json).map_err(|e| e.to_string()) })
    }
}
