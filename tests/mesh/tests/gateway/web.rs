//! The browser's side of the gateway: the web UI and grpc-web over plain HTTP/1.1, with
//! CORS for a front end served from another origin.

use bytes::Bytes;
use popug_mesh::{ADMIN_PASSWORD, Mesh, with_token};
use popug_proto::popug::account::v1 as account_pb;
use tonic::Code;

use crate::http_get;

/// Header `name` as text.
fn header(headers: &http::HeaderMap, name: &str) -> String {
    headers[name].to_str().unwrap().to_owned()
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
    let mesh = Mesh::builder()
        .taskkeeper()
        .gateway_with(move |s| s.web_dir = dir)
        .start()
        .await;
    let gateway = mesh.gateway().addr;

    // The web UI over plain HTTP/1.1, with index.html for client-side routes.
    for path in ["/", "/tasks/mine"] {
        let (status, _, body) = http_get(&format!("http://{gateway}{path}")).await;
        assert_eq!(status, http::StatusCode::OK, "{path}");
        assert_eq!(body.as_ref(), b"<h1>PopugJira</h1>", "{path}");
    }
    let _ = std::fs::remove_dir_all(&web_dir);

    let http1 = Client::builder(TokioExecutor::new())
        .build_http::<tonic_web::GrpcWebCall<tonic::body::Body>>();
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http1);
    let origin: http::Uri = format!("http://{gateway}").parse().unwrap();
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
    let url = format!("http://{gateway}/popug.account.v1.AuthService/Login");
    let preflight = http::Request::options(&url)
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,x-grpc-web,authorization,idempotency-key",
        )
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(preflight).await.unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    let allowed = header(response.headers(), "access-control-allow-headers");
    assert!(
        ["authorization", "x-grpc-web", "idempotency-key"]
            .iter()
            .all(|h| allowed.contains(h)),
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
    let exposed = header(&headers, "access-control-expose-headers");
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
