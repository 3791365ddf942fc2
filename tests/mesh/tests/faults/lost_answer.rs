//! An answer lost after the commit, and the TaskKeeper that committed it gone: the client
//! retries with the same idempotency key at its replacement and finds the first call's
//! task — one task, one `task.created`, one fee.

use pb::task_service_client::TaskServiceClient;
use popug_eventbus::Bus;
use popug_mesh::call::assert_field_error;
use popug_mesh::proxy::LossyProxy;
use popug_mesh::{Mesh, WAIT, connect, with_token};
use popug_proto::catalog;
use popug_proto::popug::account::v1::Role;
use popug_proto::popug::tasks::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

fn create(token: &str, title: &str, key: &str) -> tonic::Request<pb::CreateTaskRequest> {
    let mut request = with_token(
        token,
        pb::CreateTaskRequest {
            title: title.into(),
            jira_id: "UBERPOP-7".into(),
            description: "retried".into(),
        },
    );
    request
        .metadata_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

/// Creates with `key` at `channel` and gives the task.
async fn created(channel: &Channel, token: &str, title: &str, key: &str) -> pb::Task {
    TaskServiceClient::new(channel.clone())
        .create_task(create(token, title, key))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
}

// Test SQL reads the services' tables directly: not checked at compile time.
async fn count(pool: &sqlx::PgPool, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_whose_answer_was_lost_is_retried_with_its_key_and_happens_once() {
    let mut mesh = Mesh::builder().taskkeeper().accounting().start().await;
    let worker = mesh.user("worker1", Role::Worker).await;
    mesh.assignable_in_taskkeeper(worker.id, true).await;
    let proxy = LossyProxy::start(mesh.taskkeeper().addr).await;
    let lossy = connect(proxy.addr).await;
    // The connection is up before answers start getting lost.
    TaskServiceClient::new(lossy.clone())
        .list_tasks(with_token(&worker.token, pb::ListTasksRequest::default()))
        .await
        .unwrap();

    proxy.lose_answers(true);
    let lost = TaskServiceClient::new(lossy)
        .create_task(create(&worker.token, "Lost answer", "key-1"))
        .await;
    let status = lost.expect_err("the answer was lost");
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ),
        "{status:?}"
    );
    // The work was done although its answer never arrived.
    let tasks = &mesh.taskkeeper().pool.clone();
    let titled = "SELECT count(*) FROM tasks WHERE title = $1";
    popug_testkit::eventually(WAIT, "the first call's task", || async {
        (count(tasks, titled, "Lost answer").await == 1).then_some(())
    })
    .await;

    // The process that did the work dies before anyone learns the answer; its
    // replacement takes the retries (same database, new process).
    mesh.restart_taskkeeper().await;
    let direct = mesh.taskkeeper().channel.clone();
    // The client retries with the same key: the first call's task, not a second one.
    let again = created(&direct, &worker.token, "Lost answer", "key-1").await;
    let twice = created(&direct, &worker.token, "Lost answer", "key-1").await;
    assert_eq!(again.id, twice.id);
    assert_eq!(count(tasks, titled, "Lost answer").await, 1, "one task");
    // The same key with another request is refused, naming the key.
    let other = TaskServiceClient::new(direct.clone())
        .create_task(create(&worker.token, "Another task", "key-1"))
        .await;
    assert_field_error(other, "idempotency-key");
    // Another caller's key is another key.
    let manager = mesh.user("manager1", Role::Manager).await;
    let theirs = created(&direct, &manager.token, "Lost answer", "key-1").await;
    assert_ne!(theirs.id, again.id);

    // One task.created for it, and Accounting booked one fee.
    let created = mesh
        .events(Bus::Task)
        .await
        .into_iter()
        .filter(|e| e.name == "task.created")
        .filter_map(|e| popug_proto::upcast::task_created(&e).ok())
        .filter(|t| t.task_id == again.id)
        .count();
    assert_eq!(created, 1, "one task.created");
    let money = &mesh.accounting().pool;
    let fees = "SELECT count(*) FROM entries WHERE task_id::text = $1 AND kind = 'assign_fee'";
    popug_testkit::eventually(WAIT, "the fee booked", || async {
        (count(money, fees, &again.id).await >= 1).then_some(())
    })
    .await;
    // Only one assignment was ever published, so no second fee can come.
    let assigned = mesh
        .events(Bus::Task)
        .await
        .iter()
        .filter(|e| catalog::is::<pb::TaskAssigned>(e) && e.key == again.id)
        .count();
    assert_eq!(assigned, 1, "one task.assigned");
    assert_eq!(count(money, fees, &again.id).await, 1, "one fee");
}
