//! The gateway in front of real Account and TaskKeeper services (real PostgreSQL, NATS),
//! each test with its own databases, stream prefix and keys.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use popug_auth::Claims;
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::gateway::v1 as board_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use prost::Message;
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
    cache: Arc<gateway::cache::Cache>,
    /// Stops Accounting, when it runs.
    accounting: Option<tokio::sync::oneshot::Sender<()>>,
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

/// What runs besides Account, TaskKeeper and the gateway.
#[derive(Default)]
struct MeshOptions {
    /// Start a real Accounting (otherwise its URL is a closed port).
    accounting: bool,
    /// Redis for the gateway's cache (none: caching off).
    redis_url: Option<String>,
}

/// Account + TaskKeeper + the gateway; Accounting is "down" (a closed port).
async fn spawn_mesh(tweak: impl FnOnce(&mut gateway::Settings)) -> Mesh {
    spawn_mesh_with(MeshOptions::default(), tweak).await
}

async fn spawn_mesh_with(options: MeshOptions, tweak: impl FnOnce(&mut gateway::Settings)) -> Mesh {
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

    // A port nobody listens on: accounting is "down" unless asked for.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut accounting_url = format!("http://{closed}");
    let mut stop_accounting = None;
    if options.accounting {
        let app = accounting::Application::build(accounting::Settings {
            grpc_addr: ([127, 0, 0, 1], 0).into(),
            database_url: popug_testkit::fresh_database().await,
            database_max_connections: 4,
            nats_url: popug_testkit::nats_url(),
            stream_prefix: prefix.clone(),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: jwks.clone(),
            day_cutoff: Duration::ZERO,
            close_check_interval: None,
            // Nobody reads payout mail here.
            smtp_host: "127.0.0.1".into(),
            smtp_port: closed.port(),
            smtp_from: "Accounting <accounting@test.example>".into(),
            mail_retry_base: Duration::from_secs(60),
            mail_max_attempts: 1,
            mail_poll_interval: Duration::from_secs(60),
        })
        .await
        .unwrap();
        accounting_url = format!("http://{}", app.grpc_addr());
        let (stop, stopped) = stopper();
        tokio::spawn(app.run_until_stopped(stopped));
        stop_accounting = Some(stop);
    }
    let mut settings = gateway::Settings {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        account_url: format!("http://{account_grpc}"),
        taskkeeper_url: format!("http://{tk_grpc}"),
        accounting_url,
        jwks_url: jwks,
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        default_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        max_message_bytes: 1024 * 1024,
        rate_limit_per_sec: 0.0,
        rate_limit_burst: 1.0,
        web_dir: std::env::temp_dir().join("popug-no-web"),
        redis_url: options.redis_url,
        cache_prefix: format!("{prefix}:gw:"),
        cache_ttl: Duration::from_secs(3600),
        nats_url: popug_testkit::nats_url(),
        stream_prefix: prefix.clone(),
    };
    tweak(&mut settings);
    let gw = gateway::Application::build(settings).await.unwrap();
    let gateway = gw.local_addr();
    let cache = gw.cache();
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
        cache,
        accounting: stop_accounting,
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
        std::future::pending::<()>().await;
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
    let web_dir =
        std::env::temp_dir().join(format!("popug-web-{}", popug_testkit::unique_prefix()));
    std::fs::create_dir_all(&web_dir).unwrap();
    std::fs::write(web_dir.join("index.html"), "<h1>PopugJira</h1>").unwrap();
    let dir = web_dir.clone();
    let mesh = spawn_mesh(move |s| s.web_dir = dir).await;

    // The web UI over plain HTTP/1.1, with index.html for client-side routes.
    let files = Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
    for path in ["/", "/tasks/mine"] {
        let response = files
            .get(format!("http://{}{path}", mesh.gateway).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK, "{path}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.as_ref(), b"<h1>PopugJira</h1>", "{path}");
    }
    let _ = std::fs::remove_dir_all(&web_dir);

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

fn board(mesh: &Mesh) -> board_pb::board_service_client::BoardServiceClient<Channel> {
    board_pb::board_service_client::BoardServiceClient::new(mesh.channel.clone())
}

/// Creates a task as `token`, waiting until TaskKeeper knows an assignable user.
async fn create_task(mesh: &Mesh, token: &str, title: &str) -> tasks_pb::Task {
    let tasks = || tasks_pb::task_service_client::TaskServiceClient::new(mesh.channel.clone());
    popug_testkit::eventually(Duration::from_secs(10), "an assignable user", || async {
        let request = tasks_pb::CreateTaskRequest {
            title: title.into(),
            ..Default::default()
        };
        tasks().create_task(with_token(token, request)).await.ok()
    })
    .await
    .into_inner()
    .task
    .unwrap()
}

async fn task_board(mesh: &Mesh, token: &str) -> board_pb::GetTaskBoardResponse {
    board(mesh)
        .get_task_board(with_token(token, board_pb::GetTaskBoardRequest::default()))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn the_board_composes_names_and_prices_and_degrades_without_accounting() {
    let mesh = spawn_mesh_with(
        MeshOptions {
            accounting: true,
            redis_url: Some(popug_testkit::redis_url()),
        },
        |_| {},
    )
    .await;
    let mut mesh = mesh;
    // Only the worker and the accountant can be assigned; the manager sees the board.
    let worker = mesh.token("worker").to_owned();
    let manager = mesh.token("manager").to_owned();
    for title in ["One", "Two", "Three"] {
        create_task(&mesh, &worker, title).await;
    }
    let complete =
        popug_testkit::eventually(Duration::from_secs(10), "every task priced", || async {
            let answer = task_board(&mesh, &manager).await;
            (answer.tasks.len() == 3 && answer.tasks.iter().all(|t| t.priced)).then_some(answer)
        })
        .await;
    assert!(complete.missing.is_empty(), "{:?}", complete.missing);
    for entry in &complete.tasks {
        assert_eq!(entry.assignee_name, "Test Popug");
        assert!(["worker", "accountant"].contains(&entry.assignee_username.as_str()));
        assert!(
            (1000..=2000).contains(&entry.assign_fee_cents) && entry.assign_fee_cents % 100 == 0
        );
        assert!((2000..=4000).contains(&entry.reward_cents) && entry.reward_cents % 100 == 0);
    }

    // My overview: my open tasks, my balance (minus the fees of my tasks), today's log.
    let mine: Vec<_> = complete
        .tasks
        .iter()
        .filter(|t| t.assignee_username == "worker")
        .collect();
    let fees: i64 = mine.iter().map(|t| t.assign_fee_cents).sum();
    let overview =
        popug_testkit::eventually(Duration::from_secs(10), "the ledger caught up", || async {
            let answer = board(&mesh)
                .get_my_overview(with_token(&worker, board_pb::GetMyOverviewRequest {}))
                .await
                .unwrap()
                .into_inner();
            (answer.balance_cents == -fees && answer.today_entries.len() == mine.len())
                .then_some(answer)
        })
        .await;
    assert!(overview.missing.is_empty());
    assert_eq!(overview.open_tasks.len(), mine.len());

    // Accounting goes away: names still come, prices of new tasks do not, the overview
    // says what is missing — and every answer still arrives.
    drop(mesh.accounting.take());
    create_task(&mesh, &worker, "Four").await;
    let degraded = popug_testkit::eventually(
        Duration::from_secs(15),
        "prices reported missing",
        || async {
            let answer = task_board(&mesh, &manager).await;
            (answer.missing == [board_pb::Part::Prices as i32]).then_some(answer)
        },
    )
    .await;
    assert_eq!(degraded.tasks.len(), 4);
    assert!(
        degraded
            .tasks
            .iter()
            .all(|t| t.assignee_name == "Test Popug"),
        "names still there"
    );
    let overview = board(&mesh)
        .get_my_overview(with_token(&worker, board_pb::GetMyOverviewRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        overview.missing,
        [
            board_pb::Part::Balance as i32,
            board_pb::Part::Entries as i32
        ]
    );
    assert!(!overview.open_tasks.is_empty() || mine.is_empty());
}

#[tokio::test]
async fn the_cache_never_leaks_and_follows_account_events() {
    let mesh = spawn_mesh_with(
        MeshOptions {
            accounting: false,
            redis_url: Some(popug_testkit::redis_url()),
        },
        |_| {},
    )
    .await;
    let worker = mesh.token("worker").to_owned();
    let accountant = mesh.token("accountant").to_owned();
    let admin = mesh.token("admin").to_owned();
    for n in 0..6 {
        create_task(&mesh, &worker, &format!("Task {n}")).await;
    }
    // Each assignee sees only their own tasks, whatever the cache holds.
    let worker_id = decode_claims(&worker).sub;
    let accountant_id = decode_claims(&accountant).sub;
    let mine = task_board(&mesh, &worker).await;
    assert!(
        mine.tasks
            .iter()
            .all(|t| t.task.as_ref().unwrap().assignee_id == worker_id)
    );
    let theirs = task_board(&mesh, &accountant).await;
    assert!(
        theirs
            .tasks
            .iter()
            .all(|t| t.task.as_ref().unwrap().assignee_id == accountant_id)
    );
    assert_eq!(mine.tasks.len() + theirs.tasks.len(), 6);

    // What the cache holds about a user is public: no e-mail anywhere in it.
    let redis = redis::Client::open(popug_testkit::redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = mesh.cache.key("profile", &worker_id);
    let cached: Option<Vec<u8>> = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
    let cached = cached.expect("the worker's profile is cached after a board");
    assert!(!String::from_utf8_lossy(&cached).contains("worker@test.example"));

    // A new name shows at once (the TTL here is an hour): the account event dropped it.
    let rename = account_pb::UpdateAccountRequest {
        id: worker_id.clone(),
        name: Some("Renamed".into()),
        role: Some(account_pb::Role::Accountant as i32),
        ..Default::default()
    };
    mesh.who_am_i()
        .update_account(with_token(&admin, rename))
        .await
        .unwrap();
    popug_testkit::eventually(
        Duration::from_secs(10),
        "the new name on the board",
        || async {
            let answer = task_board(&mesh, &worker).await;
            answer
                .tasks
                .iter()
                .all(|t| t.assignee_name == "Renamed Popug")
                .then_some(())
        },
    )
    .await;
    let profile: Option<Vec<u8>> = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
    let profile = account_pb::Profile::decode(profile.unwrap().as_slice()).unwrap();
    assert_eq!(
        profile.role,
        account_pb::Role::Accountant as i32,
        "the role change is cached too"
    );
}

/// A private Redis for one test, so it can be stopped without touching anyone else's.
struct PrivateRedis {
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (deploy/infra.sh installs it)");
        PrivateRedis { child }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_means_uncached_not_failed() {
    use std::sync::atomic::Ordering;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redis = PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    popug_testkit::eventually(Duration::from_secs(5), "private redis up", || async {
        redis::Client::open(url.as_str())
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let mesh = spawn_mesh_with(
        MeshOptions {
            accounting: false,
            redis_url: Some(url.clone()),
        },
        |_| {},
    )
    .await;
    let worker = mesh.token("worker").to_owned();
    let manager = mesh.token("manager").to_owned();
    create_task(&mesh, &worker, "Cached").await;
    let first = task_board(&mesh, &manager).await;
    let second = task_board(&mesh, &manager).await;
    assert_eq!(first.tasks[0].assignee_name, second.tasks[0].assignee_name);
    let metrics = &mesh.cache.metrics;
    assert!(
        metrics.hits.load(Ordering::Relaxed) >= 1,
        "the second board hit the cache"
    );

    drop(redis);
    let errors_before = metrics.errors.load(Ordering::Relaxed);
    for _ in 0..3 {
        let answer = task_board(&mesh, &manager).await;
        // Redis is not a source, so nothing more is missing than without it (Accounting
        // does not run in this test: prices are missing all along).
        assert_eq!(answer.missing, [board_pb::Part::Prices as i32]);
        assert_eq!(answer.tasks[0].assignee_name, "Test Popug");
    }
    assert!(
        metrics.errors.load(Ordering::Relaxed) > errors_before,
        "the outage is counted"
    );

    // /metrics says so too.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let response = client
        .get(format!("http://{}/metrics", mesh.gateway).parse().unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("gateway_cache_errors_total"),
        "{status} {headers:?} {text}"
    );

    // Redis back: caching resumes.
    let _redis = PrivateRedis::start(port);
    let hits_before = metrics.hits.load(Ordering::Relaxed);
    popug_testkit::eventually(Duration::from_secs(15), "cache hits again", || async {
        task_board(&mesh, &manager).await;
        (metrics.hits.load(Ordering::Relaxed) > hits_before).then_some(())
    })
    .await;
}
