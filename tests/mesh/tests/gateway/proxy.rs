//! The gateway as a proxy: upstream answers and codes pass through unchanged, an
//! upstream that is down or silent costs a caller little time, and health says which
//! upstream is up.

use std::time::{Duration, Instant};

use bytes::Bytes;
use popug_mesh::call::{RawCodec, assert_field_error, raw_call, refused_by_gateway};
use popug_mesh::{Mesh, closed_addr, with_token};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::{Staff, create_task, tasks};

#[tokio::test]
async fn upstream_answers_and_codes_pass_through_unchanged() {
    let mesh = Mesh::builder().taskkeeper().gateway().start().await;
    let staff = Staff::sign_in(&mesh).await;
    let bad = tasks_pb::CreateTaskRequest {
        title: "[X-1] nope".into(),
        ..Default::default()
    };
    let status = tasks(&mesh)
        .create_task(with_token(&staff.worker.token, bad))
        .await
        .unwrap_err();
    assert!(!refused_by_gateway(&status), "TaskKeeper's own answer");
    // The field violation (google.rpc.BadRequest) passes through unchanged.
    assert_field_error(Err::<(), _>(status), "title");

    // TaskKeeper learns the users from the account bus; then a worker's task is created.
    let created = create_task(&mesh, &staff.worker.token, "Feed").await;
    let fetched = tasks(&mesh)
        .get_task(with_token(
            &staff.manager.token,
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
    let mesh = Mesh::builder()
        .gateway_with(move |s| {
            s.taskkeeper_url = format!("http://{silent_addr}");
            // The gateway's cap, shorter than what the caller asks for below.
            s.default_timeout = Duration::from_secs(1);
        })
        .start()
        .await;
    let token = mesh.user("worker", account_pb::Role::Worker).await.token;

    let started = Instant::now();
    let mut request = with_token(&token, Bytes::new());
    // The caller allows 10 s; the gateway's 1 s cap must cut it short.
    request
        .metadata_mut()
        .insert("grpc-timeout", "10S".parse().unwrap());
    let mut grpc = tonic::client::Grpc::new(mesh.gateway().channel.clone());
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

    // Nothing listening at all (TaskKeeper does not run: a closed port): UNAVAILABLE,
    // fast.
    let down = Mesh::builder().gateway().start().await;
    let token = down.user("worker", account_pb::Role::Worker).await.token;
    let started = Instant::now();
    let status = raw_call(
        &down.gateway().channel,
        "/popug.tasks.v1.TaskService/ListTasks",
        Some(&token),
        Bytes::new(),
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

/// What `health` says of `service` (the empty name: the gateway itself), if it answers.
async fn health_of(health: &HealthClient<Channel>, service: &str) -> Option<i32> {
    let request = HealthCheckRequest {
        service: service.into(),
    };
    let response = health.clone().check(request).await.ok()?;
    Some(response.into_inner().status)
}

#[tokio::test]
async fn health_reports_each_service_through_the_gateway() {
    let mesh = Mesh::builder().taskkeeper().gateway().start().await;
    let health = HealthClient::new(mesh.gateway().channel.clone());
    let serving = Some(ServingStatus::Serving as i32);
    popug_testkit::eventually(Duration::from_secs(10), "upstream health", || async {
        let account = health_of(&health, "popug.account.v1.AccountService").await;
        let tasks = health_of(&health, "popug.tasks.v1.TaskService").await;
        (account == serving && tasks == serving).then_some(())
    })
    .await;
    let own = health_of(&health, "")
        .await
        .expect("the gateway's own health");
    assert_eq!(own, ServingStatus::Serving as i32);

    // With TaskKeeper gone, the gateway says so for its service only.
    let closed = closed_addr();
    let degraded = Mesh::builder()
        .taskkeeper()
        .gateway_with(move |s| s.taskkeeper_url = format!("http://{closed}"))
        .start()
        .await;
    let health = HealthClient::new(degraded.gateway().channel.clone());
    popug_testkit::eventually(
        Duration::from_secs(10),
        "TaskKeeper reported down",
        || async {
            let tasks = health_of(&health, "popug.tasks.v1.TaskService").await?;
            let account = health_of(&health, "popug.account.v1.AuthService").await?;
            (tasks == ServingStatus::NotServing as i32 && account == ServingStatus::Serving as i32)
                .then_some(())
        },
    )
    .await;
    let own = health_of(&health, "")
        .await
        .expect("the gateway's own health");
    assert_eq!(
        own,
        ServingStatus::Serving as i32,
        "the gateway itself still serves"
    );
}
