//! Replicas behind the gateway: two TaskKeeper processes on one database, the gateway
//! balancing over both. Under load one is killed (SIGKILL): reads never fail (one that
//! meets the dead replica is sent again to the other), a write fails only if it was in
//! flight on the dead replica at that moment (it may have happened: never resent), and
//! from then on every call succeeds on the survivor.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use popug_mesh::nodes::Nodes;
use popug_mesh::{ADMIN_PASSWORD, connect, through, with_token};
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::Code;
/// What one call of the load did: when it started and ended (since the load began),
/// whether it was a write, and its code.
#[derive(Debug, Clone)]
struct Done {
    started: Duration,
    ended: Duration,
    write: bool,
    code: Code,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_fails_only_its_writes_in_flight() {
    let mut nodes = Nodes::start_with(
        env!("CARGO_BIN_EXE_popug-node"),
        &[],
        &[("taskkeeper", 2)],
        1,
    )
    .await;
    let gateway = connect(nodes.gateway()).await;
    let admin = through::login(&gateway, "admin", ADMIN_PASSWORD).await;
    through::worker(&gateway, &admin, "loader").await;
    let worker = through::login(&gateway, "loader", &through::password_of("loader")).await;
    let tasks = tasks_pb::task_service_client::TaskServiceClient::new(gateway.clone());
    // Both replicas know the worker before the load starts.
    let seed = through::first_task(&gateway, &worker, "Seed").await;

    let began = Instant::now();
    let load_for = Duration::from_secs(6);
    let done = Arc::new(Mutex::new(Vec::<Done>::new()));
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let (mut tasks, worker, done, seed) =
                (tasks.clone(), worker.clone(), done.clone(), seed.id.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while began.elapsed() < load_for {
                    i += 1;
                    let write = (i + client).is_multiple_of(3);
                    let started = began.elapsed();
                    let code = if write {
                        let request = with_token(
                            &worker,
                            tasks_pb::CreateTaskRequest {
                                title: format!("Load {client}-{i}"),
                                ..Default::default()
                            },
                        );
                        tasks.create_task(request).await.err().map(|s| s.code())
                    } else if i.is_multiple_of(2) {
                        let request =
                            with_token(&worker, tasks_pb::GetTaskRequest { id: seed.clone() });
                        tasks.get_task(request).await.err().map(|s| s.code())
                    } else {
                        let request = with_token(&worker, tasks_pb::ListTasksRequest::default());
                        tasks.list_tasks(request).await.err().map(|s| s.code())
                    };
                    done.lock().unwrap().push(Done {
                        started,
                        ended: began.elapsed(),
                        write,
                        code: code.unwrap_or(Code::Ok),
                    });
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = nodes.replicas("taskkeeper")[0];
    let killed_at = began.elapsed();
    nodes.kill(victim);
    for client in clients {
        client.await.unwrap();
    }

    let done = done.lock().unwrap().clone();
    let failed: Vec<&Done> = done.iter().filter(|d| d.code != Code::Ok).collect();
    let reads = done.iter().filter(|d| !d.write).count();
    let writes = done.len() - reads;
    println!(
        "{} calls ({reads} reads, {writes} writes), TaskKeeper replica killed at {killed_at:?}; failed: {:?}",
        done.len(),
        failed
    );
    assert!(
        done.len() > 100,
        "too little load to say anything: {}",
        done.len()
    );
    // No read failed.
    assert!(failed.iter().all(|d| d.write), "a read failed: {failed:?}");
    // Every failed write was in flight when the replica died, and said UNAVAILABLE.
    for d in &failed {
        assert_eq!(d.code, Code::Unavailable, "{d:?}");
        assert!(
            d.started <= killed_at + Duration::from_millis(50) && d.ended >= killed_at,
            "a write not in flight at the kill failed: {d:?}"
        );
    }
    // At most one write in flight per client.
    assert!(failed.len() <= 8, "{failed:?}");
    // After the kill, calls go on succeeding on the survivor.
    let after = done
        .iter()
        .filter(|d| d.started > killed_at + Duration::from_millis(50))
        .count();
    assert!(after > 50, "only {after} calls after the kill");
}
