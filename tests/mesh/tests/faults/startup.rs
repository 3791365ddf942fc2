//! A service started before its database and NATS: it listens at once, says NOT_SERVING
//! and answers UNAVAILABLE; once both come up it prepares itself (migrations, streams) and
//! serves — no restart.

use std::time::Duration;

use popug_mesh::{Mesh, with_token};
use popug_proto::popug::tasks::v1 as pb;
use popug_service::Service;
use popug_testkit::servers::{PrivateNats, PrivatePostgres};
use tonic::Code;
use tonic_health::ServingStatus;

use crate::{health, lazy_channel};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taskkeeper_starts_before_postgres_and_nats_and_serves_once_they_are_up() {
    // Account (on the shared servers) issues the token.
    let mesh = Mesh::builder().start().await;
    let pg = PrivatePostgres::start();
    let database = popug_testkit::fresh_database_on(&pg.admin_url()).await;
    pg.kill();
    let mut nats = PrivateNats::start();
    nats.kill();

    let mut settings = popug_mesh::taskkeeper_settings(database, &mesh.prefix, &mesh.jwks_url);
    settings.common.bus.nats_url = nats.url();
    let app = taskkeeper::Application::build(settings).await.unwrap();
    let channel = lazy_channel(app.grpc_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(Box::pin(async move {
        let _ = stopped.await;
    })));

    let service = "popug.tasks.v1.TaskService";
    let list = || {
        let mut client = pb::task_service_client::TaskServiceClient::new(channel.clone());
        let request = with_token(&mesh.admin, pb::ListTasksRequest::default());
        async move { client.list_tasks(request).await }
    };
    assert_eq!(health(&channel, service).await, ServingStatus::NotServing);
    let refused = list().await.expect_err("not prepared yet");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    pg.resume();
    nats.resume();
    popug_testkit::eventually(Duration::from_secs(15), "TaskKeeper SERVING", || async {
        (health(&channel, service).await == ServingStatus::Serving).then_some(())
    })
    .await;
    let tasks = list().await.unwrap().into_inner().tasks;
    assert!(
        tasks.is_empty(),
        "a fresh database, migrated by the service itself"
    );

    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
