//! The mesh side of the fuzzing: the callers and what requests may name, every public
//! RPC with its request strategy, and the checks at the end (health, drained consumers,
//! dead letters).

use std::collections::BTreeMap;

use futures::StreamExt;
use popug_eventbus::Bus;
use popug_mesh::call::with_token;
use popug_mesh::{ADMIN_PASSWORD, Mesh};
use popug_proto::popug::account::v1::Role;
use popug_proto::popug::tasks::v1 as tasks_pb;
use proptest::strategy::{BoxedStrategy, Strategy};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use uuid::Uuid;

use crate::values::{self, Known};

/// One RPC: its path, the service serving it (none: the gateway's own), its requests.
pub struct Rpc {
    pub path: String,
    pub service: Option<Channel>,
    /// Its response type: every OK answer must decode as one.
    pub output: MessageDescriptor,
    pub requests: BoxedStrategy<DynamicMessage>,
}

/// Who calls: a role's name and token.
pub type Caller = (&'static str, Option<String>);

/// Who calls and what requests may name.
pub struct Fixture {
    /// A signed-in user of each role.
    pub callers: Vec<Caller>,
    /// No token, or a forged, broken or oversized one.
    pub outsiders: Vec<Caller>,
    pub known: Known,
    /// The callers' ids: DeleteAccount, UpdateAccount and LogoutEverywhere spare them.
    pub spared: Vec<Uuid>,
    /// Throwaway users, deleted instead.
    pub victims: Vec<String>,
}

/// Creates the callers, throwaway users and a few tasks.
pub async fn fixture(mesh: &Mesh) -> Fixture {
    let mut known = Known::default();
    let mut callers: Vec<Caller> = Vec::new();
    let mut spared = Vec::new();
    let mut victims = Vec::new();
    let mut tokens = BTreeMap::new();
    let admin_id = mesh
        .accounts_client()
        .who_am_i(with_token(&mesh.admin, Default::default()))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
        .id;
    spared.push(admin_id.parse().unwrap());
    known.user_ids.push(admin_id);
    known.usernames.push("admin".into());
    known.passwords.push(ADMIN_PASSWORD.into());
    let users = [
        ("worker", Role::Worker, true),
        ("accountant", Role::Accountant, true),
        ("manager", Role::Manager, true),
        ("spare-worker", Role::Worker, false),
        ("spare-accountant", Role::Accountant, false),
        ("spare-manager", Role::Manager, false),
    ];
    for (name, role, calls) in users {
        let user = mesh.user(name, role).await;
        known.user_ids.push(user.id.to_string());
        known.usernames.push(user.username.clone());
        known.passwords.push(user.password.clone());
        known.emails.push(user.email.clone());
        tokens.insert(user.id.to_string(), user.token.clone());
        if calls {
            spared.push(user.id);
            callers.push((name, Some(user.token)));
        } else {
            victims.push(user.id.to_string());
            for _ in 0..2 {
                let pair = mesh.login(&user.username, &user.password).await.unwrap();
                known.refresh_tokens.push(pair.refresh_token);
            }
        }
    }
    callers.push(("admin", Some(mesh.admin.clone())));

    // A few tasks, one of them done, for requests to name.
    mesh.assignable_in_taskkeeper(spared[1], true).await;
    let mut client =
        tasks_pb::task_service_client::TaskServiceClient::new(mesh.taskkeeper().channel.clone());
    let mut completed = false;
    for n in 0..6 {
        let request = tasks_pb::CreateTaskRequest {
            title: format!("Fuzz target {n}"),
            jira_id: format!("FUZZ-{n}"),
            description: "made before the fuzzing".into(),
        };
        let task = client
            .create_task(with_token(&mesh.admin, request))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        if let (false, Some(token)) = (completed, tokens.get(&task.assignee_id)) {
            let request = tasks_pb::CompleteTaskRequest {
                id: task.id.clone(),
            };
            client
                .complete_task(with_token(token, request))
                .await
                .unwrap();
            completed = true;
        }
        known.task_ids.push(task.id);
    }
    let outsiders = outsiders(&mesh.admin, &spared[0].to_string());
    Fixture {
        callers,
        outsiders,
        known,
        spared,
        victims,
    }
}

/// No token, and tokens that must not let anyone in: malformed, unsigned (`alg: none`),
/// with a broken signature, cut, oversized.
fn outsiders(admin: &str, admin_id: &str) -> Vec<Caller> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let claims = format!(
        r#"{{"sub":"{admin_id}","role":"admin","iss":"{}","aud":"{}","exp":9999999999}}"#,
        popug_mesh::ISSUER,
        popug_mesh::AUDIENCE
    );
    let unsigned = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(claims)
    );
    let (head, signature) = admin.rsplit_once('.').unwrap();
    let flipped = signature.chars().rev().collect::<String>();
    let forged = [
        String::new(),
        "not-a-jwt".into(),
        "a.b.c".into(),
        "..".into(),
        unsigned,
        format!("{head}.{flipped}"),
        admin[..admin.len() / 2].into(),
        format!("{admin}{}", "A".repeat(9000)),
        "Bearer Bearer".into(),
    ];
    let mut outsiders: Vec<Caller> = vec![("no token", None)];
    outsiders.extend(forged.into_iter().map(|t| ("forged token", Some(t))));
    outsiders
}

/// Every method of every `popug.*` service, with the service that serves it and its
/// request strategy.
pub fn rpcs(mesh: &Mesh, known: &Known, spared: &[Uuid], victims: &[String]) -> Vec<Rpc> {
    let pool = DescriptorPool::decode(popug_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = Vec::new();
    for service in pool.services() {
        let name = service.full_name();
        if !name.starts_with("popug.") {
            continue;
        }
        let channel = match name.split('.').nth(1) {
            Some("account") => Some(mesh.account.clone()),
            Some("tasks") => Some(mesh.taskkeeper().channel.clone()),
            Some("accounting" | "analytics") => Some(mesh.accounting().channel.clone()),
            _ => None,
        };
        for method in service.methods() {
            let requests = values::request(&method.input(), known);
            rpcs.push(Rpc {
                requests: spare_callers(method.name(), requests, spared, victims),
                path: format!("/{name}/{}", method.name()),
                service: channel.clone(),
                output: method.output(),
            });
        }
    }
    // Every RPC with an access policy, i.e. every public one, is fuzzed.
    let mut declared: Vec<&str> = popug_auth::PolicyTable::popug()
        .unwrap()
        .paths()
        .map(|(path, _)| path)
        .collect();
    let mut found: Vec<&str> = rpcs.iter().map(|r| r.path.as_str()).collect();
    declared.sort_unstable();
    found.sort_unstable();
    assert_eq!(
        declared, found,
        "the descriptors and the policies name other RPCs"
    );
    rpcs
}

/// Keeps the callers' accounts as they are — any change of an account revokes its access
/// tokens — so a DeleteAccount, UpdateAccount or LogoutEverywhere naming one goes to a
/// throwaway user instead.
fn spare_callers(
    method: &str,
    requests: BoxedStrategy<DynamicMessage>,
    spared: &[Uuid],
    victims: &[String],
) -> BoxedStrategy<DynamicMessage> {
    if !matches!(
        method,
        "DeleteAccount" | "UpdateAccount" | "LogoutEverywhere"
    ) {
        return requests;
    }
    let (spared, victims) = (spared.to_vec(), victims.to_vec());
    requests
        .prop_map(move |mut request| {
            let id = request.get_field_by_name("id");
            let id = id.as_deref().and_then(Value::as_str).unwrap_or_default();
            let Some(i) = Uuid::parse_str(id)
                .ok()
                .and_then(|id| spared.iter().position(|s| *s == id))
            else {
                return request;
            };
            let victim = victims[i % victims.len()].clone();
            request.set_field_by_name("id", Value::String(victim));
            request
        })
        .boxed()
}

/// The health of `""` at `channel`.
pub async fn serving(channel: &Channel) -> Result<i32, Code> {
    tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|r| r.into_inner().status)
        .map_err(|s| s.code())
}

/// Whether every consumer of every stream of the mesh has caught up.
pub async fn drained(mesh: &Mesh) -> Option<()> {
    for bus in Bus::ALL {
        let Ok(stream) = mesh.js.get_stream(mesh.topology.stream(bus)).await else {
            continue;
        };
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.ok()?;
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return None;
            }
        }
    }
    Some(())
}

/// What consumers gave up on, as "consumer: reason".
pub async fn dead_letters(mesh: &Mesh) -> Vec<String> {
    use popug_proto::popug::events::v1::DeadLetter;
    let name = mesh.topology.stream(Bus::DeadLetter);
    popug_testkit::read_stream(&mesh.js, &name)
        .await
        .iter()
        .filter_map(|m| DeadLetter::decode(m.payload.as_ref()).ok())
        .map(|d| format!("{}: {}", d.consumer, d.reason))
        .collect()
}
