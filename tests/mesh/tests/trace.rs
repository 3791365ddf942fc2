//! One user action is one trace, across processes and the NATS hop (REQUIREMENTS §9).
//!
//! The four services run as separate processes (`popug-node`), each exporting over
//! OTLP/gRPC to a collector inside this test (a tonic server of the OTLP trace service).
//! A CreateTask through the gateway must yield one trace holding: the gateway's server
//! span, its client span to TaskKeeper, TaskKeeper's server span, its outbox write, the
//! relay's publish span of each event, and Accounting's consume span of `task.created`
//! and `task.assigned` — each the child of the one before. The same for CompleteTask (to
//! the reward) and ReassignOpenTasks (to each chunk). JSON log lines carry the ids.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use popug_mesh::nodes::Nodes;
use popug_mesh::{ADMIN_PASSWORD, connect, through, with_token};
use popug_proto::popug::tasks::v1 as tasks_pb;
use tonic::{Request, Response, Status};

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Got>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut got = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Got {
                    service: service.clone(),
                    name: span.name,
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .into_iter()
                        .map(|kv| (kv.key, text(kv.value.and_then(|v| v.value).as_ref())))
                        .collect(),
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        tokio::spawn(server);
        (collector, url)
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    /// Waits until Accounting has consumed `event` about `key` and every span above it
    /// has arrived (services export in batches, each on its own schedule); gives that
    /// span. A chain still broken after the wait fails in [`chain`], naming the gap.
    async fn consumed(&self, event: &str, key: &str) -> Got {
        let found = || {
            let spans = self.spans();
            let leaf = spans.iter().find(|s| {
                s.service == "accounting"
                    && s.name == "consume"
                    && s.attributes.get("event").is_some_and(|e| e == event)
                    && s.attributes.get("key").is_some_and(|k| k == key)
            })?;
            Some((leaf.clone(), rooted(&spans, leaf)))
        };
        let what = format!("Accounting's consume span of {event} {key}");
        let leaf = popug_testkit::eventually(Duration::from_secs(30), &what, || async {
            found().map(|(leaf, _)| leaf)
        })
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some((leaf, true)) = found() {
                return leaf;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        leaf
    }
}

/// Whether every ancestor of `leaf` has arrived.
fn rooted(spans: &[Got], leaf: &Got) -> bool {
    let by_id: HashMap<&str, &Got> = spans
        .iter()
        .filter(|s| s.trace == leaf.trace)
        .map(|s| (s.id.as_str(), s))
        .collect();
    let mut at = leaf;
    while !at.parent.is_empty() && at.parent != "0000000000000000" {
        match by_id.get(at.parent.as_str()) {
            Some(parent) => at = parent,
            None => return false,
        }
    }
    true
}

/// The chain from `leaf` up to the root of its trace, as (service, name) pairs, leaf
/// first; panics on a parent that never arrived.
fn chain(spans: &[Got], leaf: &Got) -> Vec<(String, String)> {
    let by_id: HashMap<&str, &Got> = spans
        .iter()
        .filter(|s| s.trace == leaf.trace)
        .map(|s| (s.id.as_str(), s))
        .collect();
    let mut out = vec![(leaf.service.clone(), leaf.name.clone())];
    let mut at = leaf;
    while !at.parent.is_empty() && at.parent != "0000000000000000" {
        at = by_id.get(at.parent.as_str()).unwrap_or_else(|| {
            panic!(
                "{}/{}'s parent {} is not in trace {}: {:#?}",
                at.service,
                at.name,
                at.parent,
                leaf.trace,
                by_id.values().collect::<Vec<_>>()
            )
        });
        out.push((at.service.clone(), at.name.clone()));
    }
    out
}

/// Asserts that `leaf`'s ancestors, leaf first, include `expected` in that order (other
/// spans, e.g. a handler's own, may sit between), and that the root is the gateway's
/// server span of `rpc`.
fn assert_chain(spans: &[Got], leaf: &Got, expected: &[(&str, &str)], rpc: &str) {
    let got = chain(spans, leaf);
    let mut rest = got.iter();
    for (service, name) in expected {
        assert!(
            rest.any(|(s, n)| s == service && n == name),
            "no {service}/{name} in the chain of {}/{} (leaf first): {got:?}",
            leaf.service,
            leaf.name
        );
    }
    let by_id: HashMap<&str, &Got> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let mut root = leaf;
    while let Some(parent) = by_id.get(root.parent.as_str()) {
        root = parent;
    }
    assert_eq!(
        (root.service.as_str(), root.name.as_str()),
        ("gateway", "gateway"),
        "root of {got:?}"
    );
    assert_eq!(root.attributes.get("rpc").map(String::as_str), Some(rpc));
}

/// From Accounting's consume span up: the relay's publish, TaskKeeper's outbox write
/// and server span, the gateway's client and server spans.
const FROM_CONSUME: [(&str, &str); 6] = [
    ("accounting", "consume"),
    ("taskkeeper", "publish"),
    ("taskkeeper", "outbox.write"),
    ("taskkeeper", "grpc"),
    ("gateway", "upstream"),
    ("gateway", "gateway"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_action_is_one_trace_across_processes_and_the_bus() {
    let (collector, url) = Collector::start().await;
    let nodes = Nodes::start(
        env!("CARGO_BIN_EXE_popug-node"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info,tower_http=debug"),
        ],
    )
    .await;
    let gateway = connect(nodes.gateway()).await;

    let admin = through::login(&gateway, "admin", ADMIN_PASSWORD).await;
    through::worker(&gateway, &admin, "tracer").await;
    let worker = through::login(&gateway, "tracer", &through::password_of("tracer")).await;
    let tasks = tasks_pb::task_service_client::TaskServiceClient::new(gateway.clone());

    // CreateTask (once TaskKeeper knows the worker: the only assignable user).
    let task = through::first_task(&gateway, &worker, "Traced").await;
    let created = collector.consumed("task.created", &task.id).await;
    let assigned = collector.consumed("task.assigned", &task.id).await;
    assert_eq!(created.trace, assigned.trace, "one trace for both events");
    let spans = collector.spans();
    let create_rpc = "/popug.tasks.v1.TaskService/CreateTask";
    assert_chain(&spans, &created, &FROM_CONSUME, create_rpc);
    assert_chain(&spans, &assigned, &FROM_CONSUME, create_rpc);

    // CompleteTask: to the reward's booking.
    tasks
        .clone()
        .complete_task(with_token(
            &worker,
            tasks_pb::CompleteTaskRequest {
                id: task.id.clone(),
            },
        ))
        .await
        .unwrap();
    let completed = collector.consumed("task.completed", &task.id).await;
    assert_ne!(
        completed.trace, created.trace,
        "another action, another trace"
    );
    let complete_rpc = "/popug.tasks.v1.TaskService/CompleteTask";
    assert_chain(&collector.spans(), &completed, &FROM_CONSUME, complete_rpc);

    // ReassignOpenTasks: to each chunk's booking.
    tasks
        .clone()
        .create_task(with_token(
            &worker,
            tasks_pb::CreateTaskRequest {
                title: "To be moved".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let reassign = tasks
        .clone()
        .reassign_open_tasks(with_token(&admin, tasks_pb::ReassignOpenTasksRequest {}))
        .await
        .unwrap()
        .into_inner();
    let chunk = collector
        .consumed("reassign.chunk", &reassign.reassign_id)
        .await;
    let reassign_rpc = "/popug.tasks.v1.TaskService/ReassignOpenTasks";
    assert_chain(&collector.spans(), &chunk, &FROM_CONSUME, reassign_rpc);

    // The gateway's JSON log lines of that CreateTask carry its trace id.
    let wanted = format!("\"trace_id\":\"{}\"", created.trace);
    let log = nodes.log("gateway");
    let line = log
        .lines()
        .find(|l| l.contains(&wanted))
        .unwrap_or_else(|| panic!("no gateway log line with {wanted}:\n{log}"));
    let json: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        json["span_id"].as_str().is_some_and(|s| s.len() == 16),
        "{line}"
    );
    println!(
        "traces: create {} ({} spans), complete {}, reassign {}",
        created.trace,
        collector
            .spans()
            .iter()
            .filter(|s| s.trace == created.trace)
            .count(),
        completed.trace,
        chunk.trace
    );
}
