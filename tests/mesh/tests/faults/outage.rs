//! PostgreSQL stopped under load: every call during the outage answers UNAVAILABLE within
//! 2.5 s (never INTERNAL, never a hang), health turns NOT_SERVING, and within 2 s of the
//! database's return calls succeed again — no restart.

use std::time::{Duration, Instant};

use popug_mesh::{Mesh, with_token};
use popug_proto::popug::account::v1::Role;
use popug_proto::popug::accounting::v1 as money;
use popug_proto::popug::tasks::v1 as tasks;
use popug_testkit::servers::PrivatePostgres;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

use crate::health;

/// One round of the three calls of the test's load (create, list, balance) through the
/// gateway; each with the time it took and its code.
async fn round(gateway: &Channel, token: &str) -> Vec<(&'static str, Duration, Code)> {
    let mut out = Vec::new();
    let started = Instant::now();
    let create = tasks::task_service_client::TaskServiceClient::new(gateway.clone())
        .create_task(with_token(
            token,
            tasks::CreateTaskRequest {
                title: "During the outage".into(),
                ..Default::default()
            },
        ))
        .await;
    out.push(("CreateTask", started.elapsed(), code(create)));
    let started = Instant::now();
    let list = tasks::task_service_client::TaskServiceClient::new(gateway.clone())
        .list_tasks(with_token(token, tasks::ListTasksRequest::default()))
        .await;
    out.push(("ListTasks", started.elapsed(), code(list)));
    let started = Instant::now();
    let balance = money::accounting_service_client::AccountingServiceClient::new(gateway.clone())
        .get_balance(with_token(token, money::GetBalanceRequest::default()))
        .await;
    out.push(("GetBalance", started.elapsed(), code(balance)));
    out
}

fn code<T>(result: Result<T, tonic::Status>) -> Code {
    result.err().map_or(Code::Ok, |s| s.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_down_is_unavailable_fast_and_its_return_heals_without_a_restart() {
    let pg = PrivatePostgres::start();
    let mesh = Mesh::builder()
        .postgres(pg.admin_url())
        .taskkeeper()
        .accounting()
        .gateway()
        .start()
        .await;
    let worker = mesh.user("worker1", Role::Worker).await;
    mesh.assignable_in_taskkeeper(worker.id, true).await;
    let gateway = mesh.gateway().channel.clone();
    for (rpc, _, code) in round(&gateway, &worker.token).await {
        assert_eq!(code, Code::Ok, "{rpc} before the outage");
    }

    pg.kill();
    // Eight clients keep calling through the outage.
    let outage = Instant::now();
    let clients = (0..8).map(|_| {
        let (gateway, token) = (gateway.clone(), worker.token.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while outage.elapsed() < Duration::from_secs(4) {
                seen.extend(round(&gateway, &token).await);
            }
            seen
        })
    });
    let mut calls = 0;
    for client in clients.collect::<Vec<_>>() {
        for (rpc, took, code) in client.await.unwrap() {
            calls += 1;
            assert_eq!(code, Code::Unavailable, "{rpc} during the outage");
            assert!(
                took <= Duration::from_millis(2500),
                "{rpc} took {took:?} to say UNAVAILABLE"
            );
        }
    }
    println!("{calls} calls during the outage, every one UNAVAILABLE within 2.5 s");
    let tasks = &mesh.taskkeeper().channel;
    popug_testkit::eventually(Duration::from_secs(5), "TaskKeeper NOT_SERVING", || async {
        (health(tasks, "popug.tasks.v1.TaskService").await == ServingStatus::NotServing)
            .then_some(())
    })
    .await;

    pg.resume();
    let back = Instant::now();
    popug_testkit::eventually(Duration::from_secs(5), "calls succeeding again", || async {
        let codes = round(&gateway, &worker.token).await;
        codes
            .iter()
            .all(|(_, _, code)| *code == Code::Ok)
            .then_some(())
    })
    .await;
    let healed = back.elapsed();
    println!("calls succeed again {healed:?} after PostgreSQL is back");
    assert!(healed <= Duration::from_secs(2), "healed after {healed:?}");
    popug_testkit::eventually(Duration::from_secs(5), "TaskKeeper SERVING", || async {
        (health(tasks, "popug.tasks.v1.TaskService").await == ServingStatus::Serving).then_some(())
    })
    .await;
}
