//! Signing in: login, the access token's claims against the published JWKS, refresh
//! rotation with reuse detection, logout.

use popug_auth::VerifyError;
use popug_mesh::call::assert_field_error;
use popug_mesh::{ADMIN_PASSWORD, AUDIENCE, ISSUER, Mesh};
use popug_proto::popug::account::v1 as pb;
use tonic::Code;

use crate::AccountCalls;

#[tokio::test]
async fn login_right_wrong_and_unknown() {
    let mesh = Mesh::builder().start().await;
    let pair = mesh.login("admin", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 300);
    assert!(!pair.refresh_token.is_empty());
    // Login also says who logged in.
    let answer = pb::auth_service_client::AuthServiceClient::new(mesh.account.clone())
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let who = answer.account.expect("the account that logged in");
    assert_eq!(
        (who.username.as_str(), who.role(), who.active),
        ("admin", pb::Role::Admin, true)
    );
    assert_eq!(who.email, "admin@test.example");

    let wrong = mesh.login("admin", "not-the-password").await.unwrap_err();
    let unknown = mesh.login("nobody", "not-the-password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        wrong.message(),
        unknown.message(),
        "login must not reveal whether a username exists"
    );

    assert_field_error(mesh.login("", "x").await, "username");
    assert_field_error(mesh.login("admin", "").await, "password");

    // A username PostgreSQL cannot store (NUL, other control characters) is an unknown
    // user like any other (it was INTERNAL): the same answer, no hint.
    for odd in ["adm\u{0}in", "admin\u{1b}", "\u{0}"] {
        let status = mesh.login(odd, ADMIN_PASSWORD).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{odd:?}: {status:?}");
        assert_eq!(status.message(), unknown.message(), "{odd:?}");
    }
}

#[tokio::test]
async fn access_token_claims_verify_against_the_published_jwks() {
    let mesh = Mesh::builder().start().await;
    let pair = mesh.login("admin", ADMIN_PASSWORD).await.unwrap();
    let claims = mesh.verifier().verify(&pair.access_token).await.unwrap();
    let me = mesh.who_am_i(&pair.access_token).await.unwrap();
    assert_eq!(claims.sub, me.id);
    assert_eq!(claims.username, "admin");
    assert_eq!(claims.email, "admin@test.example");
    assert_eq!(claims.role, "admin");
    assert!(claims.permissions.contains(&"accounts.manage".to_owned()));
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.exp - claims.iat, 300);
    assert!(claims.nbf <= claims.iat);
    assert!(!claims.jti.is_empty());
    assert_eq!(claims.ver, me.version, "the account's version");

    // The RPC serves the same document as HTTP.
    let rpc = mesh
        .auth()
        .get_jwks(pb::GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let doc: serde_json::Value = serde_json::from_str(&rpc).unwrap();
    assert_eq!(doc["keys"][0]["alg"], "EdDSA");
    assert_eq!(doc["keys"][0]["kty"], "OKP");

    // Another audience's verifier refuses it.
    let other = mesh.verifier_for("someone-else");
    assert_eq!(
        other.verify(&pair.access_token).await.unwrap_err(),
        VerifyError::Audience
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_chain() {
    let mesh = Mesh::builder().start().await;
    let first = mesh.login("admin", ADMIN_PASSWORD).await.unwrap();
    let second = mesh.refresh(first.refresh_token.clone()).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    mesh.who_am_i(&second.access_token).await.unwrap();

    let reuse = mesh.refresh(first.refresh_token).await.unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("reuse"), "{}", reuse.message());
    let after = mesh.refresh(second.refresh_token).await.unwrap_err();
    assert_eq!(
        after.code(),
        Code::Unauthenticated,
        "the whole chain is revoked"
    );

    // Another session of the same user is untouched.
    let other = mesh.login("admin", ADMIN_PASSWORD).await.unwrap();
    mesh.refresh(other.refresh_token).await.unwrap();
}

#[tokio::test]
async fn logout_revokes() {
    let mesh = Mesh::builder().start().await;
    let pair = mesh.login("admin", ADMIN_PASSWORD).await.unwrap();
    mesh.auth()
        .logout(pb::LogoutRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .unwrap();
    let status = mesh.refresh(pair.refresh_token).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_field_error(
        mesh.auth()
            .logout(pb::LogoutRequest {
                refresh_token: String::new(),
            })
            .await,
        "refresh_token",
    );
}
