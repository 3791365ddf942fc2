//! The gateway in front of real Account and TaskKeeper services (real PostgreSQL, NATS),
//! each test with its own databases, stream prefix and keys.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use popug_auth::Claims;
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const ADMIN_PASSWORD: &str = "admin-password";
const ISSUER: &str = "test-issuer";
const AUDIENCE: &str = "test-audience";

struct Mesh {
    gateway: SocketAddr,
    channel: Channel,
    accounts: Arc<account::service::Accounts>,
    /// Tokens by role name.
    tokens: Vec<(&'static str, String)>,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

fn stopper() -> (
    tokio::sync::oneshot::Sender<()>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Account + TaskKeeper + the gateway; accounting points at `accounting_url` (nothing
/// listens there unless a test makes it).
async fn spawn_mesh(tweak: impl FnOnce(&mut gateway::Settings)) -> Mesh {
    let _ = popug_telemetry::init("gateway-tests");
    let prefix = popug_testkit::unique_prefix();
    let account_app = account::Application::build(account::Settings {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        http_addr: ([127, 0, 0, 1], 0).into(),
        database_url: popug_testkit::fresh_database().await,
        database_max_connections: 4,
        nats_url: popug_testkit::nats_url(),
        stream_prefix: prefix.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        access_ttl: Duration::from_secs(300),
        refresh_ttl: Duration::from_secs(3600),
        bootstrap_admin: Some(account::config::BootstrapAdmin {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
            email: "admin@test.example".into(),
        }),
        signing_key_file: None,
        key_reload_interval: Duration::from_secs(3600),
    })
    .await
    .unwrap();
    let account_grpc = account_app.grpc_addr();
    let jwks = format!("http://{}/.well-known/jwks.json", account_app.http_addr());
    let accounts = account_app.accounts();
    let (stop_account, stopped) = stopper();
    tokio::spawn(account_app.run_until_stopped(stopped));

    let tk_app = taskkeeper::Application::build(taskkeeper::Settings {
        grpc_addr: ([127, 0, 0, 1], 0).into(),
        database_url: popug_testkit::fresh_database().await,
        database_max_connections: 4,
        nats_url: popug_testkit::nats_url(),
        stream_prefix: prefix.clone(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url: jwks.clone(),
        reassign_chunk_size: 1000,
    })
    .await
    .unwrap();
    let tk_grpc = tk_app.grpc_addr();
    let (stop_tk, stopped) = stopper();
    tokio::spawn(tk_app.run_until_stopped(stopped));

    // A port nobody listens on: accounting is "down" unless a test says otherwise.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut settings = gateway::Settings {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        account_url: format!("http://{account_grpc}"),
        taskkeeper_url: format!("http://{tk_grpc}"),
        accounting_url: format!("http://{closed}"),
        jwks_url: jwks,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        default_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        max_message_bytes: 1024 * 1024,
        rate_limit_per_sec: 0.0,
        rate_limit_burst: 1.0,
        web_dir: std::env::temp_dir().join("popug-no-web"),
    };
    tweak(&mut settings);
    let gw = gateway::Application::build(settings).await.unwrap();
    let gateway = gw.local_addr();
    let (stop_gw, stopped) = stopper();
    tokio::spawn(gw.run_until_stopped(stopped));
    let channel = Channel::from_shared(format!("http://{gateway}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut mesh = Mesh {
        gateway,
        channel,
        accounts,
        tokens: Vec::new(),
        _stop: vec![stop_account, stop_tk, stop_gw],
    };
    let admin = mesh.login("admin", ADMIN_PASSWORD).await.unwrap();
    for (username, role) in [
        ("manager", account_pb::Role::Manager),
        ("accountant", account_pb::Role::Accountant),
        ("worker", account_pb::Role::Worker),
    ] {
        let request = account_pb::CreateAccountRequest {
            username: username.into(),
            name: "Test".into(),
            surname: "Popug".into(),
            email: format!("{username}@test.example"),
            role: role as i32,
            password: format!("{username}-password"),
            extra_permissions: vec![],
        };
        account_pb::account_service_client::AccountServiceClient::new(mesh.channel.clone())
            .create_account(with_token(&admin, request))
            .await
            .unwrap();
        let token = mesh
            .login(username, &format!("{username}-password"))
            .await
            .unwrap();
        mesh.tokens.push((username, token));
    }
    mesh.tokens.push(("admin", admin));
    mesh
}

fn with_token<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

impl Mesh {
    async fn login(&self, username: &str, password: &str) -> Result<String, Status> {
        let response =
            account_pb::auth_service_client::AuthServiceClient::new(self.channel.clone())
                .login(account_pb::LoginRequest {
                    username: username.into(),
                    password: password.into(),
                })
                .await?;
        Ok(response.into_inner().tokens.unwrap().access_token)
    }

    fn token(&self, role: &str) -> &str {
        &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1
    }

    /// Any RPC by path with an empty request, as raw bytes.
    async fn raw_call(&self, path: &str, token: Option<&str>) -> Result<Bytes, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut request = Request::new(Bytes::new());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let path = http::uri::PathAndQuery::try_from(path).unwrap();
        grpc.unary(request, path, RawCodec)
            .await
            .map(|r| r.into_inner())
    }

    fn who_am_i(&self) -> account_pb::account_service_client::AccountServiceClient<Channel> {
        account_pb::account_service_client::AccountServiceClient::new(self.channel.clone())
    }

    /// A token signed with Account's real key, with `edit` applied to valid claims.
    async fn forge(&self, edit: impl FnOnce(&mut Claims)) -> String {
        let token = self.token("worker");
        let mut claims = decode_claims(token);
        edit(&mut claims);
        self.accounts.keys.sign(&claims).unwrap()
    }
}

fn decode_claims(token: &str) -> Claims {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

fn refused_by_gateway(status: &Status) -> bool {
    status
        .metadata()
        .get("x-popug-refused-by")
        .is_some_and(|v| v == "gateway")
}

#[derive(Default, Clone)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[tokio::test]
async fn every_rpc_with_every_role_is_allowed_or_denied_exactly_as_declared() {
    use gateway::policy::{Access, PolicyTable};
    let mesh = spawn_mesh(|_| {}).await;
    let table = PolicyTable::from_descriptors(popug_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut checked = 0;
    for (path, access) in table.paths() {
        let access = access.as_ref().unwrap();
        // Without a token: only public RPCs pass the gateway.
        let anonymous = mesh.raw_call(path, None).await;
        if *access == Access::Public {
            assert!(
                !anonymous.as_ref().is_err_and(refused_by_gateway),
                "{path} is public: {anonymous:?}"
            );
        } else {
            let status = anonymous.unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{path}");
            assert!(refused_by_gateway(&status));
        }
        for (role, token) in &mesh.tokens {
            let claims = decode_claims(token);
            let caller = popug_auth::Caller::from_claims(claims, token.clone()).unwrap();
            let allowed = *access == Access::Public || access.allows(&caller);
            let result = mesh.raw_call(path, Some(token)).await;
            let denied = matches!(&result, Err(s) if s.code() == Code::PermissionDenied && refused_by_gateway(s));
            assert_eq!(!denied, allowed, "{role} on {path}: {result:?}");
            checked += 1;
        }
    }
    assert!(checked >= 15 * 4, "checked only {checked} role × RPC pairs");
}

#[tokio::test]
async fn token_attacks_are_unauthenticated() {
    let mesh = spawn_mesh(|_| {}).await;
    let now = decode_claims(mesh.token("worker")).iat;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let valid = mesh.token("worker").to_owned();
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
    let expired = mesh
        .forge(|c| {
            c.iat = now - 3600;
            c.nbf = now - 3600;
            c.exp = now - 600;
        })
        .await;
    let not_yet = mesh.forge(|c| c.nbf = now + 3600).await;
    let wrong_iss = mesh.forge(|c| c.iss = "someone-else".into()).await;
    let wrong_aud = mesh.forge(|c| c.aud = "another-app".into()).await;
    let oversized = mesh.forge(|c| c.name = "x".repeat(10_000)).await;

    for (name, token) in [
        ("alg none", none.as_str()),
        ("HMAC with the public key", hmac.as_str()),
        ("bad signature", bad_signature.as_str()),
        ("expired", expired.as_str()),
        ("not yet valid", not_yet.as_str()),
        ("wrong issuer", wrong_iss.as_str()),
        ("wrong audience", wrong_aud.as_str()),
        ("malformed", "not.a.jwt"),
        ("garbage", "garbage"),
        ("oversized", oversized.as_str()),
    ] {
        let status = mesh
            .who_am_i()
            .who_am_i(with_token(token, account_pb::WhoAmIRequest {}))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert!(refused_by_gateway(&status), "{name} refused at the edge");
    }
    let status = mesh
        .who_am_i()
        .who_am_i(account_pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no token");
    // And the real one works, twice (the second from the verified-token cache).
    for _ in 0..2 {
        mesh.who_am_i()
            .who_am_i(with_token(&valid, account_pb::WhoAmIRequest {}))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn upstream_answers_and_codes_pass_through_unchanged() {
    let mesh = spawn_mesh(|_| {}).await;
    let tasks = || tasks_pb::task_service_client::TaskServiceClient::new(mesh.channel.clone());
    let bad = tasks_pb::CreateTaskRequest {
        title: "[X-1] nope".into(),
        ..Default::default()
    };
    let status = tasks()
        .create_task(with_token(mesh.token("worker"), bad))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("title:"),
        "{}",
        status.message()
    );
    assert!(!refused_by_gateway(&status), "TaskKeeper's own answer");

    // TaskKeeper learns the users from the account bus; then a worker's task is created.
    let worker = mesh.token("worker").to_owned();
    let created =
        popug_testkit::eventually(Duration::from_secs(10), "an assignable user", || async {
            let request = tasks_pb::CreateTaskRequest {
                title: "Feed".into(),
                ..Default::default()
            };
            tasks().create_task(with_token(&worker, request)).await.ok()
        })
        .await
        .into_inner()
        .task
        .unwrap();
    let fetched = tasks()
        .get_task(with_token(
            mesh.token("manager"),
            tasks_pb::GetTaskRequest {
                id: created.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(fetched.id, created.id);
}

#[tokio::test]
async fn a_down_upstream_is_unavailable_quickly_and_a_silent_one_hits_the_deadline() {
    // TaskKeeper "speaks HTTP/2" but never answers a call.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let never = axum::Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        ""
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::from(never))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(silent)),
    );
    let mesh = spawn_mesh(|s| {
        s.taskkeeper_url = format!("http://{silent_addr}");
        // The gateway's cap, shorter than what the caller asks for below.
        s.default_timeout = Duration::from_secs(1);
    })
    .await;
    let token = mesh.token("worker").to_owned();

    let started = Instant::now();
    let mut request = Request::new(Bytes::new());
    // The caller allows 10 s; the gateway's 1 s cap must cut it short.
    request
        .metadata_mut()
        .insert("grpc-timeout", "10S".parse().unwrap());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut grpc = tonic::client::Grpc::new(mesh.channel.clone());
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/popug.tasks.v1.TaskService/ListTasks");
    let status = grpc.unary(request, path, RawCodec).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(refused_by_gateway(&status));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );

    // Nothing listening at all: UNAVAILABLE, fast.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let down = spawn_mesh(|s| s.taskkeeper_url = format!("http://{closed}")).await;
    let started = Instant::now();
    let status = down
        .raw_call(
            "/popug.tasks.v1.TaskService/ListTasks",
            Some(down.token("worker")),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(refused_by_gateway(&status));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn grpc_web_over_http1_with_cors() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let mesh = spawn_mesh(|_| {}).await;
    let http1 = Client::builder(TokioExecutor::new())
        .build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    let origin: http::Uri = format!("http://{}", mesh.gateway).parse().unwrap();
    let mut auth = account_pb::auth_service_client::AuthServiceClient::with_origin(
        web.clone(),
        origin.clone(),
    );
    let tokens = auth
        .login(account_pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let mut accounts =
        account_pb::account_service_client::AccountServiceClient::with_origin(web, origin);
    let me = accounts
        .who_am_i(with_token(
            &tokens.access_token,
            account_pb::WhoAmIRequest {},
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(me.username, "admin");
    let status = accounts
        .who_am_i(account_pb::WhoAmIRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "grpc-web carries the status too"
    );

    // What a browser does: a preflight, then the grpc-web POST with an Origin.
    let client = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
    let url = format!("http://{}/popug.account.v1.AuthService/Login", mesh.gateway);
    let preflight = http::Request::options(&url)
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization",
        )
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(preflight).await.unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed.contains("authorization") && allowed.contains("x-grpc-web"),
        "{allowed}"
    );

    // A grpc-web frame by hand: flag 0, big-endian length, the protobuf message.
    let message = prost::Message::encode_to_vec(&account_pb::LoginRequest {
        username: "admin".into(),
        password: "wrong-password".into(),
    });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    let post = http::Request::post(&url)
        .header("origin", "http://localhost:5173")
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(http_body_util::Full::new(Bytes::from(frame)))
        .unwrap();
    let response = client.request(post).await.unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        exposed.contains("grpc-status") && exposed.contains("grpc-message"),
        "{exposed}"
    );
    // A refusal as grpc-web: trailers-only, so the status is in the headers.
    assert_eq!(
        headers["grpc-status"], "16",
        "UNAUTHENTICATED for a wrong password"
    );
}

#[tokio::test]
async fn rate_limit_answers_resource_exhausted() {
    let mesh = spawn_mesh(|s| {
        s.rate_limit_per_sec = 0.001;
        s.rate_limit_burst = 8.0;
    })
    .await;
    // The setup's logins used the public bucket of this address; a signed-in caller has
    // a bucket of their own.
    let token = mesh.token("manager").to_owned();
    for _ in 0..8 {
        mesh.who_am_i()
            .who_am_i(with_token(&token, account_pb::WhoAmIRequest {}))
            .await
            .unwrap();
    }
    let status = mesh
        .who_am_i()
        .who_am_i(with_token(&token, account_pb::WhoAmIRequest {}))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Another caller is not affected.
    mesh.who_am_i()
        .who_am_i(with_token(
            mesh.token("worker"),
            account_pb::WhoAmIRequest {},
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn health_reports_each_service_through_the_gateway() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mesh = spawn_mesh(|_| {}).await;
    let mut health = HealthClient::new(mesh.channel.clone());
    let status_of = |service: &'static str| {
        let mut health = health.clone();
        async move {
            health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .ok()
                .map(|r| r.into_inner().status)
        }
    };
    let serving = Some(ServingStatus::Serving as i32);
    popug_testkit::eventually(Duration::from_secs(10), "upstream health", || async {
        let account = status_of("popug.account.v1.AccountService").await;
        let tasks = status_of("popug.tasks.v1.TaskService").await;
        (account == serving && tasks == serving).then_some(())
    })
    .await;
    let own = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(own, ServingStatus::Serving as i32);

    // With TaskKeeper gone, the gateway says so for its service only.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let degraded = spawn_mesh(|s| s.taskkeeper_url = format!("http://{closed}")).await;
    let mut health = HealthClient::new(degraded.channel.clone());
    popug_testkit::eventually(Duration::from_secs(10), "TaskKeeper reported down", || {
        let mut health = health.clone();
        async move {
            let check = |service: &str| HealthCheckRequest {
                service: service.into(),
            };
            let tasks = health
                .check(check("popug.tasks.v1.TaskService"))
                .await
                .ok()?
                .into_inner()
                .status;
            let account = health
                .check(check("popug.account.v1.AuthService"))
                .await
                .ok()?
                .into_inner()
                .status;
            (tasks == ServingStatus::NotServing as i32 && account == ServingStatus::Serving as i32)
                .then_some(())
        }
    })
    .await;
    let own = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        own,
        ServingStatus::Serving as i32,
        "the gateway itself still serves"
    );
}
