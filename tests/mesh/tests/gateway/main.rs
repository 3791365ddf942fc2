//! The gateway in front of real services (real PostgreSQL, NATS and Redis), each test
//! with its own mesh: token checks at the edge and the rate limit ([`auth`]), upstream
//! answers, deadlines, outages and health passed through ([`proxy`]), grpc-web and the
//! web UI over HTTP/1.1 ([`web`]), the composed task board and overview ([`board`]) and
//! the Redis cache: what it holds, how account events drop it, and Redis going away
//! ([`cache`]); revoked tokens refused by the gateway and by every service within a
//! second of the change, measured ([`revocation`]).
//!
//! Who may call what through the gateway is checked by `tests/roles.rs`.

#![allow(clippy::unwrap_used)]

mod auth;
mod board;
mod cache;
mod edge;
mod proxy;
mod revocation;
mod web;

use std::time::Duration;

use bytes::Bytes;
use popug_auth::Claims;
use popug_mesh::{Mesh, MeshBuilder, User, with_token};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::gateway::v1 as board_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::transport::Channel;

/// The users signed in besides the admin: a manager (sees every task), and an accountant
/// and a worker (the only ones tasks can be assigned to).
struct Staff {
    manager: User,
    accountant: User,
    worker: User,
}

impl Staff {
    async fn sign_in(mesh: &Mesh) -> Staff {
        Staff {
            manager: mesh.user("manager", account_pb::Role::Manager).await,
            accountant: mesh.user("accountant", account_pb::Role::Accountant).await,
            worker: mesh.user("worker", account_pb::Role::Worker).await,
        }
    }
}

/// TaskKeeper and the gateway, which caches in the shared test Redis.
fn cached_mesh() -> MeshBuilder {
    Mesh::builder()
        .taskkeeper()
        .gateway_with(|s| s.redis_url = Some(popug_testkit::redis_url()))
}

/// The name the board shows for a user `Mesh::user` made (name and surname).
fn full_name(username: &str) -> String {
    format!("Popug {username} Popugaev")
}

/// The claims of `token`, unverified.
fn decode_claims(token: &str) -> Claims {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

/// `token` with `edit` applied to its claims, signed with Account's real key.
fn forge(mesh: &Mesh, token: &str, edit: impl FnOnce(&mut Claims)) -> String {
    let mut claims = decode_claims(token);
    edit(&mut claims);
    mesh.accounts.keys.sign(&claims).unwrap()
}

/// Account's `AccountService` through the gateway.
fn accounts(mesh: &Mesh) -> account_pb::account_service_client::AccountServiceClient<Channel> {
    account_pb::account_service_client::AccountServiceClient::new(mesh.gateway().channel.clone())
}

/// The gateway's own `BoardService`.
fn board(mesh: &Mesh) -> board_pb::board_service_client::BoardServiceClient<Channel> {
    board_pb::board_service_client::BoardServiceClient::new(mesh.gateway().channel.clone())
}

/// `TaskService` through the gateway.
fn tasks(mesh: &Mesh) -> tasks_pb::task_service_client::TaskServiceClient<Channel> {
    tasks_pb::task_service_client::TaskServiceClient::new(mesh.gateway().channel.clone())
}

/// Creates a task as `token` through the gateway, waiting until TaskKeeper knows an
/// assignable user.
async fn create_task(mesh: &Mesh, token: &str, title: &str) -> tasks_pb::Task {
    popug_testkit::eventually(Duration::from_secs(10), "an assignable user", || async {
        let request = tasks_pb::CreateTaskRequest {
            title: title.into(),
            ..Default::default()
        };
        tasks(mesh)
            .create_task(with_token(token, request))
            .await
            .ok()
    })
    .await
    .into_inner()
    .task
    .unwrap()
}

/// GETs `url` over plain HTTP/1.1: the status, the headers and the whole body.
async fn http_get(url: &str) -> (http::StatusCode, http::HeaderMap, Bytes) {
    use hyper_util::client::legacy::Client;
    let client = Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (parts.status, parts.headers, body)
}

/// The task board as `token` sees it.
async fn task_board(mesh: &Mesh, token: &str) -> board_pb::GetTaskBoardResponse {
    board(mesh)
        .get_task_board(with_token(token, board_pb::GetTaskBoardRequest::default()))
        .await
        .unwrap()
        .into_inner()
}
