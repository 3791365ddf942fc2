//! Signing keys and tokens that must not pass: rotation keeps old tokens valid until
//! their key is retired; missing, tampered, unsigned and rogue-signed tokens are refused.

use std::time::Duration;

use base64::Engine;
use popug_auth::VerifyError;
use popug_mesh::{ADMIN_PASSWORD, Mesh};
use popug_proto::popug::account::v1 as pb;
use tonic::Code;

use crate::AccountCalls;

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_until_the_key_is_retired() {
    let mesh = Mesh::builder().start().await;
    let old = mesh.admin.clone();
    let old_kid = mesh.accounts.keys.kids()[0].clone();

    let new_kid = account::keys::rotate(&mesh.account_pool).await.unwrap();
    mesh.accounts.keys.reload().await.unwrap();
    let new = mesh
        .login("admin", ADMIN_PASSWORD)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    assert_eq!(
        mesh.accounts.keys.kids(),
        [old_kid.clone(), new_kid.clone()],
        "both published"
    );

    let verifier = mesh.verifier();
    verifier.verify(&old).await.unwrap();
    verifier.verify(&new).await.unwrap();
    mesh.who_am_i(&old).await.unwrap();
    mesh.who_am_i(&new).await.unwrap();

    account::keys::retire(&mesh.account_pool, &old_kid)
        .await
        .unwrap();
    mesh.accounts.keys.reload().await.unwrap();
    assert_eq!(
        mesh.verifier().verify(&old).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    let refused = popug_testkit::eventually(
        Duration::from_secs(5),
        "the retired key refused",
        || async { mesh.who_am_i(&old).await.err() },
    )
    .await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    mesh.who_am_i(&new).await.unwrap();
    assert!(
        account::keys::retire(&mesh.account_pool, &new_kid)
            .await
            .is_err(),
        "the last key stays"
    );
}

#[tokio::test]
async fn forged_and_missing_tokens_are_refused() {
    let mesh = Mesh::builder().start().await;
    let token = mesh.admin.clone();
    assert_eq!(
        mesh.accounts_client()
            .who_am_i(pb::WhoAmIRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "garbage", "a.b.c"] {
        assert_eq!(
            mesh.who_am_i(bad).await.unwrap_err().code(),
            Code::Unauthenticated,
            "{bad}"
        );
    }
    // alg none with a known kid.
    let kid = mesh.accounts.keys.kids()[0].clone();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    let payload = token.split('.').nth(1).unwrap();
    let none = format!("{header}.{payload}.");
    assert_eq!(
        mesh.who_am_i(&none).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Signed by a key nobody published.
    let rogue =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("unknown-kid".into());
    let claims = mesh.verifier().verify(&token).await.unwrap();
    let forged = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(rogue.as_ref()),
    )
    .unwrap();
    assert_eq!(
        mesh.who_am_i(&forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        mesh.verifier().verify(&forged).await.unwrap_err(),
        VerifyError::UnknownKey
    );
}
