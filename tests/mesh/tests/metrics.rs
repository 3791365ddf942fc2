//! Every service's `/metrics`, scraped from the running processes: a known call moves the
//! right counters — on the gateway (server and client side, and its refusals), on
//! TaskKeeper (server, outbox, relay, consumer), on Accounting (consumer, ledger) — and
//! the shared families (pool, process, serving) are there.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use popug_mesh::nodes::Nodes;
use popug_mesh::{ADMIN_PASSWORD, connect, through, with_token};
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::Request;

/// One sample: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
        .map(|s| s.value)
        .sum()
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}

const CREATE: [(&str, &str); 2] = [
    ("grpc_service", "popug.tasks.v1.TaskService"),
    ("grpc_method", "CreateTask"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_known_call_moves_the_right_counters_everywhere() {
    let nodes = Nodes::start(env!("CARGO_BIN_EXE_popug-node"), &[]).await;
    let gateway = connect(nodes.gateway()).await;
    let admin = through::login(&gateway, "admin", ADMIN_PASSWORD).await;
    through::worker(&gateway, &admin, "counted").await;
    let worker = through::login(&gateway, "counted", &through::password_of("counted")).await;
    let tasks = tasks_pb::task_service_client::TaskServiceClient::new(gateway.clone());
    let create = |title: &str| {
        let mut tasks = tasks.clone();
        let request = with_token(
            &worker,
            tasks_pb::CreateTaskRequest {
                title: title.into(),
                ..Default::default()
            },
        );
        async move { tasks.create_task(request).await }
    };
    // The first create waits for TaskKeeper to know the worker (FAILED_PRECONDITION
    // before); count the attempts that failed.
    let mut refused_first = 0.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(status) = create("Counted one").await {
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        refused_first += 1.0;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    create("Counted two").await.unwrap();
    let anonymous = tasks
        .clone()
        .list_tasks(Request::new(tasks_pb::ListTasksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);

    // The gateway: its own server side, its calls upstream, its refusal.
    let g = parse(&nodes.metrics("gateway"));
    let ok = [CREATE[0], CREATE[1], ("grpc_code", "OK")];
    assert_eq!(value(&g, "grpc_server_handled_total", &ok), 2.0);
    assert_eq!(
        value(&g, "grpc_server_started_total", &CREATE),
        2.0 + refused_first
    );
    let upstream = [
        CREATE[0],
        CREATE[1],
        ("grpc_code", "OK"),
        ("upstream", "taskkeeper"),
    ];
    assert_eq!(value(&g, "grpc_client_handled_total", &upstream), 2.0);
    assert_eq!(
        value(&g, "grpc_client_handling_seconds_count", &CREATE),
        2.0 + refused_first
    );
    let missing = [("reason", "unauthenticated"), ("cause", "missing")];
    assert_eq!(value(&g, "gateway_refused_total", &missing), 1.0);
    let unauthenticated = [
        ("grpc_method", "ListTasks"),
        ("grpc_code", "Unauthenticated"),
    ];
    assert_eq!(
        value(&g, "grpc_server_handled_total", &unauthenticated),
        1.0
    );
    assert_eq!(value(&g, "popug_serving", &[]), 1.0);

    // TaskKeeper: the calls, their latency, the events out through the outbox, the users
    // in from the account bus.
    let t = parse(&nodes.metrics("taskkeeper"));
    assert_eq!(value(&t, "grpc_server_handled_total", &ok), 2.0);
    assert_eq!(
        value(&t, "grpc_server_handling_seconds_count", &CREATE),
        2.0 + refused_first
    );
    assert_eq!(value(&t, "grpc_server_in_flight_requests", &CREATE), 0.0);
    let users = [("consumer", "taskkeeper-users")];
    assert!(value(&t, "eventbus_consumer_processed_total", &users) >= 1.0);
    popug_testkit::eventually(
        Duration::from_secs(10),
        "4 task events published",
        || async {
            let t = parse(&nodes.metrics("taskkeeper"));
            (value(&t, "eventbus_relay_published_total", &[]) >= 4.0
                && value(&t, "eventbus_outbox_pending", &[]) == 0.0)
                .then_some(())
        },
    )
    .await;
    for family in [
        "db_pool_connections",
        "db_pool_max_connections",
        "db_pool_acquire_seconds_count",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "popug_build_info",
        "auth_jwks_fetches_total",
    ] {
        assert!(has(&t, family), "TaskKeeper has no {family}");
    }
    assert_eq!(value(&t, "popug_serving", &[]), 1.0);

    // Accounting: the task events consumed and the fees booked (its ledger totals are read
    // every 15 s).
    popug_testkit::eventually(Duration::from_secs(30), "two fees counted", || async {
        let a = parse(&nodes.metrics("accounting"));
        (value(
            &a,
            "accounting_ledger_entries_total",
            &[("kind", "assign_fee")],
        ) == 2.0)
            .then_some(a)
    })
    .await;
    let a = parse(&nodes.metrics("accounting"));
    assert!(value(&a, "eventbus_consumer_processed_total", &[]) >= 4.0);
    assert!(
        value(
            &a,
            "accounting_ledger_cents_total",
            &[("kind", "assign_fee")]
        ) >= 2000.0
    );
    assert!(has(&a, "eventbus_consumer_pending"));

    // Account: the logins and the account created.
    let account = parse(&nodes.metrics("account"));
    let logins = [("grpc_method", "Login"), ("grpc_code", "OK")];
    assert_eq!(value(&account, "grpc_server_handled_total", &logins), 2.0);
}
