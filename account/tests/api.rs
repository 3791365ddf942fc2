//! Account against real PostgreSQL and NATS: every test spawns its own service on port 0
//! with its own database and stream prefix.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use account::{Application, Settings};
use async_nats::jetstream;
use pb::account_service_client::AccountServiceClient;
use pb::auth_service_client::AuthServiceClient;
use popug_auth::{HttpJwks, Verifier, VerifierConfig, VerifyError};
use popug_eventbus::{Bus, Envelope, Topology, catalog};
use popug_proto::popug::account::v1 as pb;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

const ADMIN_PASSWORD: &str = "admin-password";

struct TestApp {
    channel: Channel,
    http: std::net::SocketAddr,
    settings: Settings,
    accounts: Arc<account::service::Accounts>,
    topology: Topology,
    js: jetstream::Context,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_app() -> TestApp {
    let _ = popug_telemetry::init("account-tests");
    let settings = Settings {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        http_addr: ([127, 0, 0, 1], 0).into(),
        database_url: popug_testkit::fresh_database().await,
        database_max_connections: 8,
        nats_url: popug_testkit::nats_url(),
        stream_prefix: popug_testkit::unique_prefix(),
        issuer: "test-issuer".into(),
        audience: "test-audience".into(),
        access_ttl: Duration::from_secs(300),
        refresh_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(account::config::BootstrapAdmin {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            email: "admin@test.example".into(),
        }),
        signing_key_file: None,
        key_reload_interval: Duration::from_secs(3600),
    };
    let app = Application::build(settings.clone()).await.unwrap();
    let grpc = app.grpc_addr();
    let http = app.http_addr();
    let accounts = app.accounts();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let topology = Topology::new(&settings.stream_prefix).unwrap();
    TestApp {
        channel,
        http,
        settings,
        accounts,
        topology,
        js: popug_testkit::jetstream().await,
        _stop: stop,
    }
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

impl TestApp {
    fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    fn accounts_client(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel.clone())
    }

    async fn login(&self, username: &str, password: &str) -> Result<pb::TokenPair, tonic::Status> {
        let response = self
            .auth()
            .login(pb::LoginRequest {
                username: username.into(),
                password: password.into(),
            })
            .await?;
        Ok(response.into_inner().tokens.unwrap())
    }

    async fn admin_token(&self) -> String {
        self.login("admin", ADMIN_PASSWORD)
            .await
            .unwrap()
            .access_token
    }

    async fn create(
        &self,
        token: &str,
        username: &str,
        role: pb::Role,
    ) -> Result<pb::Account, tonic::Status> {
        let request = pb::CreateAccountRequest {
            username: username.into(),
            name: "Test".into(),
            surname: "Popug".into(),
            email: format!("{username}@test.example"),
            role: role as i32,
            password: format!("{username}-password"),
            extra_permissions: vec![],
        };
        Ok(self
            .accounts_client()
            .create_account(with_token(token, request))
            .await?
            .into_inner()
            .account
            .unwrap())
    }

    async fn who_am_i(&self, token: &str) -> Result<pb::Account, tonic::Status> {
        Ok(self
            .accounts_client()
            .who_am_i(with_token(token, pb::WhoAmIRequest {}))
            .await?
            .into_inner()
            .account
            .unwrap())
    }

    fn verifier(&self) -> Verifier {
        let mut config = VerifierConfig::new(&self.settings.issuer, &self.settings.audience);
        config.refetch_interval = Duration::ZERO;
        let source = HttpJwks::new(&format!("http://{}/.well-known/jwks.json", self.http)).unwrap();
        Verifier::new(config, Arc::new(source))
    }

    /// Every envelope on the account bus, in order.
    async fn account_events(&self) -> Vec<Envelope> {
        popug_testkit::read_stream(&self.js, &self.topology.stream(Bus::Account))
            .await
            .iter()
            .map(|m| Envelope::decode(m.payload.as_ref()).unwrap())
            .collect()
    }

    /// Waits until the relay has published `n` account events, then returns them.
    async fn wait_for_events(&self, n: usize) -> Vec<Envelope> {
        let stream_name = self.topology.stream(Bus::Account);
        popug_testkit::eventually(
            Duration::from_secs(10),
            "account events published",
            || async {
                let mut stream = self.js.get_stream(&stream_name).await.unwrap();
                let count = stream.info().await.unwrap().state.messages as usize;
                (count >= n).then_some(())
            },
        )
        .await;
        self.account_events().await
    }
}

fn assert_field_error(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}:")),
        "{field} not named in {:?}",
        status.message()
    );
}

#[tokio::test]
async fn login_right_wrong_and_unknown() {
    let app = spawn_app().await;
    let pair = app.login("admin", ADMIN_PASSWORD).await.unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 300);
    assert!(!pair.refresh_token.is_empty());

    let wrong = app.login("admin", "not-the-password").await.unwrap_err();
    let unknown = app.login("nobody", "not-the-password").await.unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(
        wrong.message(),
        unknown.message(),
        "login must not reveal whether a username exists"
    );

    assert_field_error(app.login("", "x").await.unwrap_err(), "username");
    assert_field_error(app.login("admin", "").await.unwrap_err(), "password");
}

#[tokio::test]
async fn access_token_claims_verify_against_the_published_jwks() {
    let app = spawn_app().await;
    let pair = app.login("admin", ADMIN_PASSWORD).await.unwrap();
    let claims = app.verifier().verify(&pair.access_token).await.unwrap();
    let me = app.who_am_i(&pair.access_token).await.unwrap();
    assert_eq!(claims.sub, me.id);
    assert_eq!(claims.username, "admin");
    assert_eq!(claims.email, "admin@test.example");
    assert_eq!(claims.role, "admin");
    assert!(claims.permissions.contains(&"accounts.manage".to_owned()));
    assert_eq!(claims.iss, "test-issuer");
    assert_eq!(claims.aud, "test-audience");
    assert_eq!(claims.exp - claims.iat, 300);
    assert!(claims.nbf <= claims.iat);
    assert!(!claims.jti.is_empty());

    // The RPC serves the same document as HTTP.
    let rpc = app
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
    let mut other = VerifierConfig::new("test-issuer", "someone-else");
    other.refetch_interval = Duration::ZERO;
    let source = HttpJwks::new(&format!("http://{}/.well-known/jwks.json", app.http)).unwrap();
    let other = Verifier::new(other, Arc::new(source));
    assert_eq!(
        other.verify(&pair.access_token).await.unwrap_err(),
        VerifyError::Audience
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_chain() {
    let app = spawn_app().await;
    let first = app.login("admin", ADMIN_PASSWORD).await.unwrap();
    let second = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    app.who_am_i(&second.access_token).await.unwrap();

    let reuse = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: first.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("reuse"), "{}", reuse.message());
    let after = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: second.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(
        after.code(),
        Code::Unauthenticated,
        "the whole chain is revoked"
    );

    // Another session of the same user is untouched.
    let other = app.login("admin", ADMIN_PASSWORD).await.unwrap();
    app.auth()
        .refresh(pb::RefreshRequest {
            refresh_token: other.refresh_token,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn logout_revokes() {
    let app = spawn_app().await;
    let pair = app.login("admin", ADMIN_PASSWORD).await.unwrap();
    app.auth()
        .logout(pb::LogoutRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .unwrap();
    let status = app
        .auth()
        .refresh(pb::RefreshRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_field_error(
        app.auth()
            .logout(pb::LogoutRequest {
                refresh_token: String::new(),
            })
            .await
            .unwrap_err(),
        "refresh_token",
    );
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_until_the_key_is_retired() {
    let app = spawn_app().await;
    let old = app.admin_token().await;
    let old_kid = app.accounts.keys.kids()[0].clone();

    let new_kid = account::keys::rotate(&app.accounts.pool).await.unwrap();
    app.accounts.keys.reload().await.unwrap();
    let new = app.admin_token().await;
    assert_eq!(
        jsonwebtoken::decode_header(&new).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    assert_eq!(
        app.accounts.keys.kids(),
        [old_kid.clone(), new_kid.clone()],
        "both published"
    );

    let verifier = app.verifier();
    verifier.verify(&old).await.unwrap();
    verifier.verify(&new).await.unwrap();
    app.who_am_i(&old).await.unwrap();
    app.who_am_i(&new).await.unwrap();

    account::keys::retire(&app.accounts.pool, &old_kid)
        .await
        .unwrap();
    app.accounts.keys.reload().await.unwrap();
    assert_eq!(
        app.verifier().verify(&old).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    let refused = popug_testkit::eventually(
        Duration::from_secs(5),
        "the retired key refused",
        || async { app.who_am_i(&old).await.err() },
    )
    .await;
    assert_eq!(refused.code(), Code::Unauthenticated);
    app.who_am_i(&new).await.unwrap();
    assert!(
        account::keys::retire(&app.accounts.pool, &new_kid)
            .await
            .is_err(),
        "the last key stays"
    );
}

#[tokio::test]
async fn forged_and_missing_tokens_are_refused() {
    let app = spawn_app().await;
    let token = app.admin_token().await;
    assert_eq!(
        app.accounts_client()
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
            app.who_am_i(bad).await.unwrap_err().code(),
            Code::Unauthenticated,
            "{bad}"
        );
    }
    // alg none with a known kid.
    let kid = app.accounts.keys.kids()[0].clone();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
    let payload = token.split('.').nth(1).unwrap();
    let none = format!("{header}.{payload}.");
    assert_eq!(
        app.who_am_i(&none).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Signed by a key nobody published.
    let rogue =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("unknown-kid".into());
    let claims = app.verifier().verify(&token).await.unwrap();
    let forged = jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(rogue.as_ref()),
    )
    .unwrap();
    assert_eq!(
        app.who_am_i(&forged).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.verifier().verify(&forged).await.unwrap_err(),
        VerifyError::UnknownKey
    );
}

#[tokio::test]
async fn crud_follows_permissions() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let worker = app.create(&admin, "kesha", pb::Role::Worker).await.unwrap();
    assert_eq!(worker.role, pb::Role::Worker as i32);
    assert!(worker.permissions.contains(&"tasks.complete".to_owned()));
    let worker_token = app
        .login("kesha", "kesha-password")
        .await
        .unwrap()
        .access_token;
    assert_eq!(app.who_am_i(&worker_token).await.unwrap().id, worker.id);

    let client = app.accounts_client();
    let denied = app
        .create(&worker_token, "gosha", pb::Role::Worker)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .clone()
        .list_accounts(with_token(
            &worker_token,
            pb::ListAccountsRequest::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let promote = pb::UpdateAccountRequest {
        id: worker.id.clone(),
        role: Some(pb::Role::Admin as i32),
        ..Default::default()
    };
    assert_eq!(
        client
            .clone()
            .update_account(with_token(&worker_token, promote))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Own profile: allowed.
    let rename = pb::UpdateAccountRequest {
        id: worker.id.clone(),
        name: Some("Innokentiy".into()),
        ..Default::default()
    };
    let renamed = client
        .clone()
        .update_account(with_token(&worker_token, rename))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(renamed.name, "Innokentiy");
    assert_eq!(renamed.version, worker.version + 1);

    // Someone else's profile: visible without the email.
    let admin_id = app.who_am_i(&admin).await.unwrap().id;
    let seen = client
        .clone()
        .get_account(with_token(
            &worker_token,
            pb::GetAccountRequest {
                id: admin_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(seen.username, "admin");
    assert!(seen.email.is_empty());
    let rename_admin = pb::UpdateAccountRequest {
        id: admin_id.clone(),
        name: Some("Evil".into()),
        ..Default::default()
    };
    assert_eq!(
        client
            .clone()
            .update_account(with_token(&worker_token, rename_admin))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Admin changes the role, then deactivates: the worker can no longer log in or refresh.
    let pair = app.login("kesha", "kesha-password").await.unwrap();
    let to_accountant = pb::UpdateAccountRequest {
        id: worker.id.clone(),
        role: Some(pb::Role::Accountant as i32),
        ..Default::default()
    };
    let changed = client
        .clone()
        .update_account(with_token(&admin, to_accountant))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(
        changed
            .permissions
            .contains(&"accounting.read_all".to_owned())
    );
    let deleted = client
        .clone()
        .delete_account(with_token(
            &admin,
            pb::DeleteAccountRequest {
                id: worker.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert!(!deleted.active);
    assert_eq!(
        app.login("kesha", "kesha-password")
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        app.auth()
            .refresh(pb::RefreshRequest {
                refresh_token: pair.refresh_token
            })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // An admin cannot lock themselves out.
    let status = client
        .clone()
        .delete_account(with_token(
            &admin,
            pb::DeleteAccountRequest { id: admin_id },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn profiles_show_names_without_private_data() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let a = app
        .create(&admin, "profile-a", pb::Role::Worker)
        .await
        .unwrap();
    let b = app
        .create(&admin, "profile-b", pb::Role::Accountant)
        .await
        .unwrap();
    let worker = app
        .login("profile-a", "profile-a-password")
        .await
        .unwrap()
        .access_token;
    let request = pb::ListProfilesRequest {
        ids: vec![b.id.clone(), uuid::Uuid::new_v4().to_string(), a.id.clone()],
    };
    let profiles = app
        .accounts_client()
        .list_profiles(with_token(&worker, request))
        .await
        .unwrap()
        .into_inner()
        .profiles;
    let names: Vec<_> = profiles.iter().map(|p| p.username.as_str()).collect();
    assert_eq!(
        names,
        ["profile-b", "profile-a"],
        "asked order, unknown left out"
    );
    assert_eq!(profiles[0].role, pb::Role::Accountant as i32);
    for bad in [vec![], vec!["nope".to_owned()]] {
        let status = app
            .accounts_client()
            .list_profiles(with_token(&worker, pb::ListProfilesRequest { ids: bad }))
            .await
            .unwrap_err();
        assert_field_error(status, "ids");
    }
    let status = app
        .accounts_client()
        .list_profiles(pb::ListProfilesRequest { ids: vec![a.id] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn bad_input_names_the_field() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let client = app.accounts_client();
    let valid = pb::CreateAccountRequest {
        username: "valid".into(),
        name: "Va".into(),
        surname: "Lid".into(),
        email: "valid@test.example".into(),
        role: pb::Role::Worker as i32,
        password: "long-enough".into(),
        extra_permissions: vec![],
    };
    let cases: Vec<(&str, pb::CreateAccountRequest)> = vec![
        (
            "username",
            pb::CreateAccountRequest {
                username: "No Spaces".into(),
                ..valid.clone()
            },
        ),
        (
            "name",
            pb::CreateAccountRequest {
                name: " ".into(),
                ..valid.clone()
            },
        ),
        (
            "surname",
            pb::CreateAccountRequest {
                surname: "x".repeat(101),
                ..valid.clone()
            },
        ),
        (
            "email",
            pb::CreateAccountRequest {
                email: "not-an-email".into(),
                ..valid.clone()
            },
        ),
        (
            "role",
            pb::CreateAccountRequest {
                role: 0,
                ..valid.clone()
            },
        ),
        (
            "role",
            pb::CreateAccountRequest {
                role: 77,
                ..valid.clone()
            },
        ),
        (
            "password",
            pb::CreateAccountRequest {
                password: "short".into(),
                ..valid.clone()
            },
        ),
        (
            "extra_permissions",
            pb::CreateAccountRequest {
                extra_permissions: vec!["root".into()],
                ..valid.clone()
            },
        ),
    ];
    for (field, request) in cases {
        assert_field_error(
            client
                .clone()
                .create_account(with_token(&admin, request))
                .await
                .unwrap_err(),
            field,
        );
    }
    client
        .clone()
        .create_account(with_token(&admin, valid.clone()))
        .await
        .unwrap();
    let dup_name = client
        .clone()
        .create_account(with_token(
            &admin,
            pb::CreateAccountRequest {
                email: "other@test.example".into(),
                ..valid.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(dup_name.code(), Code::AlreadyExists);
    assert!(dup_name.message().contains("username"));
    let dup_email = client
        .clone()
        .create_account(with_token(
            &admin,
            pb::CreateAccountRequest {
                username: "other".into(),
                email: "VALID@test.example".into(),
                ..valid
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(dup_email.code(), Code::AlreadyExists);
    assert!(dup_email.message().contains("email"));

    assert_field_error(
        client
            .clone()
            .get_account(with_token(
                &admin,
                pb::GetAccountRequest { id: "nope".into() },
            ))
            .await
            .unwrap_err(),
        "id",
    );
    let missing = client
        .clone()
        .get_account(with_token(
            &admin,
            pb::GetAccountRequest {
                id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let page = pb::ListAccountsRequest {
        page_size: 501,
        ..Default::default()
    };
    assert_field_error(
        client
            .clone()
            .list_accounts(with_token(&admin, page))
            .await
            .unwrap_err(),
        "page_size",
    );
    let page = pb::ListAccountsRequest {
        page_token: "%%%".into(),
        ..Default::default()
    };
    assert_field_error(
        client
            .clone()
            .list_accounts(with_token(&admin, page))
            .await
            .unwrap_err(),
        "page_token",
    );
}

#[tokio::test]
async fn list_pages_through_every_account_once() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    for name in ["w1", "w2", "w3", "w4"] {
        app.create(&admin, &format!("user{name}"), pb::Role::Worker)
            .await
            .unwrap();
    }
    let client = app.accounts_client();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .clone()
            .list_accounts(with_token(
                &admin,
                pb::ListAccountsRequest {
                    page_size: 2,
                    page_token: token,
                    role: 0,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= 2);
        seen.extend(page.accounts.into_iter().map(|a| a.username));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["admin", "userw1", "userw2", "userw3", "userw4"]);
    let workers = client
        .clone()
        .list_accounts(with_token(
            &admin,
            pb::ListAccountsRequest {
                page_size: 0,
                page_token: String::new(),
                role: pb::Role::Worker as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workers.accounts.len(), 4);
}

#[tokio::test]
async fn every_change_publishes_exactly_one_event() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let worker = app
        .create(&admin, "eventful", pb::Role::Worker)
        .await
        .unwrap();
    let client = app.accounts_client();
    let role = pb::UpdateAccountRequest {
        id: worker.id.clone(),
        role: Some(pb::Role::Manager as i32),
        ..Default::default()
    };
    client
        .clone()
        .update_account(with_token(&admin, role.clone()))
        .await
        .unwrap();
    // The same change again changes nothing and publishes nothing.
    client
        .clone()
        .update_account(with_token(&admin, role))
        .await
        .unwrap();
    client
        .clone()
        .delete_account(with_token(
            &admin,
            pb::DeleteAccountRequest {
                id: worker.id.clone(),
            },
        ))
        .await
        .unwrap();
    client
        .clone()
        .delete_account(with_token(
            &admin,
            pb::DeleteAccountRequest {
                id: worker.id.clone(),
            },
        ))
        .await
        .unwrap();

    // Bootstrap admin + created + updated + deleted.
    let events = app.wait_for_events(4).await;
    let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "account.created",
            "account.created",
            "account.updated",
            "account.deleted"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.version == 1 && e.producer == "account")
    );
    let mut ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);

    let created = catalog::open::<pb::AccountCreated>(&events[1])
        .unwrap()
        .account
        .unwrap();
    assert_eq!(
        (
            created.username.as_str(),
            created.role.as_str(),
            created.email.as_str()
        ),
        ("eventful", "worker", "eventful@test.example")
    );
    assert_eq!(events[1].key, worker.id);
    let updated = catalog::open::<pb::AccountUpdated>(&events[2]).unwrap();
    assert_eq!(updated.changed_fields, ["role"]);
    let snapshot = updated.account.unwrap();
    assert_eq!(snapshot.role, "manager");
    assert!(snapshot.version > created.version);
    let deleted = catalog::open::<pb::AccountDeleted>(&events[3])
        .unwrap()
        .account
        .unwrap();
    assert!(!deleted.active);
    assert!(deleted.version > snapshot.version);

    // Nothing more is waiting to go out.
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM eventbus.outbox WHERE published_at IS NULL")
            .fetch_one(&app.accounts.pool)
            .await
            .unwrap();
    assert_eq!(pending, 0);
    assert_eq!(app.account_events().await.len(), 4);
}

#[tokio::test]
async fn health_reports_serving_for_both_services() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "popug.account.v1.AuthService",
        "popug.account.v1.AccountService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
}
