//! Tokens are checked at the edge: every forged, tampered, expired or foreign token is
//! UNAUTHENTICATED from the gateway itself; and each caller has a rate limit of their own.

use popug_mesh::Mesh;
use popug_mesh::call::refused_by_gateway;
use popug_mesh::with_token;
use popug_proto::popug::account::v1 as account_pb;
use tonic::{Code, Status};

use crate::{Staff, accounts, decode_claims, forge};

/// WhoAmI through the gateway, with `token`.
async fn who_am_i(mesh: &Mesh, token: &str) -> Result<account_pb::WhoAmIResponse, Status> {
    let request = with_token(token, account_pb::WhoAmIRequest {});
    let response = accounts(mesh).who_am_i(request).await?;
    Ok(response.into_inner())
}

#[tokio::test]
async fn token_attacks_are_unauthenticated() {
    let mesh = Mesh::builder().taskkeeper().gateway().start().await;
    let staff = Staff::sign_in(&mesh).await;
    let valid = staff.worker.token.clone();
    let now = decode_claims(&valid).iat;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let kid = jsonwebtoken::decode_header(&valid).unwrap().kid.unwrap();
    let payload = valid.split('.').nth(1).unwrap().to_owned();

    let none = format!(
        "{}.{payload}.",
        b64.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#))
    );
    // HMAC "signed" with the public key as the secret: the classic confusion attack.
    let jwks: serde_json::Value = serde_json::from_str(&mesh.accounts.keys.jwks_json()).unwrap();
    let public = b64.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hmac = jsonwebtoken::encode(
        &hs,
        &decode_claims(&valid),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let mut bad_signature = valid.clone();
    let last = bad_signature.pop().unwrap();
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });
    let expired = forge(&mesh, &valid, |c| {
        c.iat = now - 3600;
        c.nbf = now - 3600;
        c.exp = now - 600;
    });
    let not_yet = forge(&mesh, &valid, |c| c.nbf = now + 3600);
    // Valid by nbf and exp, correctly signed, but issued an hour from now.
    let from_the_future = forge(&mesh, &valid, |c| c.iat = now + 3600);
    let wrong_iss = forge(&mesh, &valid, |c| c.iss = "someone-else".into());
    let wrong_aud = forge(&mesh, &valid, |c| c.aud = "another-app".into());
    let oversized = forge(&mesh, &valid, |c| c.name = "x".repeat(10_000));

    for (name, token) in [
        ("alg none", none.as_str()),
        ("HMAC with the public key", hmac.as_str()),
        ("bad signature", bad_signature.as_str()),
        ("expired", expired.as_str()),
        ("not yet valid", not_yet.as_str()),
        ("issued in the future", from_the_future.as_str()),
        ("wrong issuer", wrong_iss.as_str()),
        ("wrong audience", wrong_aud.as_str()),
        ("malformed", "not.a.jwt"),
        ("garbage", "garbage"),
        ("oversized", oversized.as_str()),
    ] {
        let status = who_am_i(&mesh, token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert!(refused_by_gateway(&status), "{name} refused at the edge");
    }
    let status = accounts(&mesh)
        .who_am_i(account_pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no token");
    // And the real one works, twice (the second from the verified-token cache).
    for _ in 0..2 {
        who_am_i(&mesh, &valid).await.unwrap();
    }
}

#[tokio::test]
async fn rate_limit_answers_resource_exhausted() {
    let mesh = Mesh::builder()
        .taskkeeper()
        .gateway_with(|s| {
            s.rate_limit_per_sec = 0.001;
            s.rate_limit_burst = 8.0;
        })
        .start()
        .await;
    let staff = Staff::sign_in(&mesh).await;
    // Signing in (at Account directly) used no bucket of the gateway's; a signed-in
    // caller has a bucket of their own.
    let token = staff.manager.token.clone();
    for _ in 0..8 {
        who_am_i(&mesh, &token).await.unwrap();
    }
    let status = who_am_i(&mesh, &token).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Another caller is not affected.
    who_am_i(&mesh, &staff.worker.token).await.unwrap();
}
