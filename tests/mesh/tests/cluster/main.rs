//! The mesh on a three-node NATS JetStream cluster: every stream with three replicas,
//! two replicas of Account, TaskKeeper and Accounting, two gateways each balancing over
//! both replicas of each service, every process given the three NATS URLs. Load goes
//! through both gateways (creates, completions, reassigns, account changes); mid-load the
//! NATS node leading the TASKS stream is killed (SIGKILL), then one replica of each
//! service, and all of them come back. Once the mesh has settled the money is checked:
//! every acknowledged create exists and is priced once, one fee per assignment, one
//! reward per completion, balances are the sums of their entries, management earns what
//! the workers lose, nothing is left unpublished, pending or dead — and both Accounting
//! replicas closing the day at once close it once, with one payout and one mail per
//! positive balance.

#![allow(clippy::unwrap_used)]

mod load;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use popug_eventbus::{Bus, Topology};
use popug_mesh::nodes::Nodes;
use popug_mesh::{ADMIN_PASSWORD, Sink, connect, through, with_token};
use popug_proto::popug::accounting::v1 as accounting_pb;
use popug_testkit::servers::PrivateNats;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

/// Workers calling through each gateway (one client each).
const WORKERS: usize = 4;
/// How long the load runs; the faults fall inside it.
const LOAD_AT_MOST: Duration = Duration::from_secs(90);
/// Acknowledged creates before the first fault, and between each step after it: the
/// faults fall where the load has made progress, whatever this machine's speed.
const STEP: usize = 150;
/// How long the mesh may take to settle after the load.
const SETTLE: Duration = Duration::from_secs(90);

/// The load's acknowledged creates, watched: [`Progress::step`] waits for STEP more.
struct Progress {
    tally: Arc<Mutex<load::Tally>>,
    next: usize,
    deadline: Instant,
}

impl Progress {
    fn new(tally: Arc<Mutex<load::Tally>>, deadline: Instant) -> Progress {
        Progress {
            tally,
            next: 0,
            deadline,
        }
    }

    /// Waits (until the load's deadline at most) for STEP more acknowledged creates.
    async fn step(&mut self, what: &str) {
        self.next += STEP;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let (tally, next) = (self.tally.clone(), self.next);
        popug_testkit::eventually(
            left,
            &format!("{next} creates acknowledged ({what})"),
            || {
                let done = tally.lock().unwrap().created.len() >= next;
                std::future::ready(done.then_some(()))
            },
        )
        .await;
    }
}

/// The server name leading `stream`'s RAFT group.
async fn leader(js: &jetstream::Context, stream: &str) -> String {
    popug_testkit::eventually(Duration::from_secs(30), "a stream leader", || async {
        let mut stream = js.get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    })
    .await
}

/// Messages every durable consumer of the mesh's streams has not had acknowledged yet.
async fn unacknowledged(js: &jetstream::Context, topology: &Topology) -> Result<u64, String> {
    let mut total = 0;
    for bus in Bus::ALL {
        let stream = js
            .get_stream(topology.stream(bus))
            .await
            .map_err(|e| e.to_string())?;
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| e.to_string())?;
            total += info.num_pending + info.num_ack_pending as u64;
        }
    }
    Ok(total)
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_node_and_a_replica_of_each_service_lost_under_load_lose_no_money() {
    let mut cluster = PrivateNats::cluster(3);
    let urls: Vec<String> = cluster.iter().map(PrivateNats::url).collect();
    let urls = urls.join(",");
    let smtp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_port = smtp_listener.local_addr().unwrap().port().to_string();
    let smtp = Sink::start(smtp_listener);
    let mut extra = vec![("ACCOUNTING__SMTP_PORT".to_owned(), smtp_port)];
    for service in ["ACCOUNT", "TASKKEEPER", "ACCOUNTING", "GATEWAY"] {
        extra.push((format!("{service}__NATS_URL"), urls.clone()));
        extra.push((format!("{service}__STREAM_REPLICAS"), "3".to_owned()));
    }
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let started = Instant::now();
    let mut nodes = Nodes::start_with(
        env!("CARGO_BIN_EXE_popug-node"),
        &extra,
        &[("account", 2), ("taskkeeper", 2), ("accounting", 2)],
        2,
    )
    .await;
    println!(
        "cluster: 3 NATS nodes, 2+2+2 service replicas, 2 gateways up in {:?}",
        started.elapsed()
    );

    let servers: Vec<async_nats::ServerAddr> =
        cluster.iter().map(|n| n.url().parse().unwrap()).collect();
    let js = jetstream::new(async_nats::connect(servers).await.unwrap());
    let topology = Topology::new(&nodes.prefix).unwrap();
    for bus in Bus::ALL {
        let mut stream = js.get_stream(topology.stream(bus)).await.unwrap();
        let replicas = stream.info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{bus:?} stream replicas");
    }

    let gateways: Vec<Channel> = {
        let mut channels = Vec::new();
        for index in nodes.replicas("gateway") {
            channels.push(connect(nodes.nodes[index].addr).await);
        }
        channels
    };
    let admin = through::login(&gateways[0], "admin", ADMIN_PASSWORD).await;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let username = format!("worker{w}");
        let id = through::worker(&gateways[0], &admin, &username).await;
        let token = through::login(&gateways[0], &username, &through::password_of(&username)).await;
        workers.push((id, token));
    }
    // Every TaskKeeper replica's copy knows the workers before the load (a create is
    // refused while nobody is assignable).
    let first = through::first_task(&gateways[1], &workers[0].1, "First").await;
    let first: Uuid = first.id.parse().unwrap();

    // The load, through both gateways.
    let tally = Arc::new(Mutex::new(load::Tally::default()));
    tally.lock().unwrap().created.push(first);
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for gateway in &gateways {
        for (id, token) in &workers {
            clients.push(tokio::spawn(load::worker_load(
                gateway.clone(),
                token.clone(),
                id.clone(),
                stop.clone(),
                tally.clone(),
            )));
        }
    }
    clients.push(tokio::spawn(load::admin_load(
        gateways.clone(),
        admin.clone(),
        stop.clone(),
        tally.clone(),
    )));

    // The faults, mid-load: each step once the load has acknowledged STEP more creates.
    let mut progress = Progress::new(tally.clone(), began + LOAD_AT_MOST);
    progress.step("the load under way").await;
    let tasks_stream = topology.stream(Bus::Task);
    let leading = leader(&js, &tasks_stream).await;
    let node = cluster.iter().position(|n| n.name() == leading).unwrap();
    cluster[node].kill();
    println!(
        "{:>5.1?}: killed NATS node {leading} (leader of {tasks_stream})",
        began.elapsed()
    );
    progress.step("creates with a NATS node down").await;
    // Not the first Account replica: it serves the JWKS every verifier was given.
    let victims = [
        nodes.replicas("account")[1],
        nodes.replicas("taskkeeper")[0],
        nodes.replicas("accounting")[0],
    ];
    for victim in victims {
        nodes.kill(victim);
    }
    println!(
        "{:>5.1?}: killed one replica of Account, TaskKeeper and Accounting",
        began.elapsed()
    );
    let new_leader = leader(&js, &tasks_stream).await;
    println!(
        "{:>5.1?}: {tasks_stream} now led by {new_leader}",
        began.elapsed()
    );
    progress
        .step("creates with a replica of each service down")
        .await;
    cluster[node].resume();
    println!("{:>5.1?}: NATS node {leading} back", began.elapsed());
    progress.step("creates with the node back").await;
    for victim in victims {
        nodes.restart(victim).await;
    }
    progress.step("creates with everything back").await;
    stop.store(true, Ordering::Relaxed);
    println!(
        "{:>5.1?}: the three replicas back and SERVING",
        began.elapsed()
    );
    for client in clients {
        client.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap());
    println!(
        "{:>5.1?}: load done: {} creates acknowledged, {} completions, {} reassigns, {} account changes; failed after retries: {:?}",
        began.elapsed(),
        tally.created.len(),
        tally.completed.len(),
        tally.reassigns,
        tally.account_changes,
        tally.failed
    );
    assert!(tally.created.len() > 100, "too little load: {tally:?}");
    assert!(
        tally.reassigns > 0 && !tally.completed.is_empty() && tally.account_changes > 0,
        "{tally:?}"
    );
    // A create is retried with its key until it is acknowledged; none gave up.
    assert!(
        !tally.failed.keys().any(|k| k.starts_with("CreateTask")),
        "{:?}",
        tally.failed
    );

    // Settling: every outbox published, every consumer caught up, every task priced.
    let taskkeeper = PgPool::connect(&nodes.database("taskkeeper"))
        .await
        .unwrap();
    let accounting = PgPool::connect(&nodes.database("accounting"))
        .await
        .unwrap();
    let account = PgPool::connect(&nodes.database("account")).await.unwrap();
    let settle_began = Instant::now();
    popug_testkit::eventually(SETTLE, "the mesh settled", || async {
        for pool in [&account, &taskkeeper, &accounting] {
            let unpublished = scalar(
                pool,
                "SELECT count(*) FROM eventbus.outbox WHERE published_at IS NULL",
            )
            .await;
            if unpublished > 0 {
                return None;
            }
        }
        let pending = unacknowledged(&js, &topology).await.ok()?;
        let tasks = scalar(&taskkeeper, "SELECT count(*) FROM tasks").await;
        let priced = scalar(&accounting, "SELECT count(*) FROM tasks").await;
        (pending == 0 && tasks == priced).then_some(())
    })
    .await;
    println!("settled {:?} after the load", settle_began.elapsed());

    // Every acknowledged create exists, in TaskKeeper and priced once in Accounting.
    let created: HashSet<Uuid> = tally.created.iter().copied().collect();
    assert_eq!(
        created.len(),
        tally.created.len(),
        "one create acknowledged twice"
    );
    let ids: Vec<Uuid> = created.iter().copied().collect();
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&taskkeeper)
        .await
        .unwrap();
    let priced: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&accounting)
        .await
        .unwrap();
    assert_eq!((known, priced), (ids.len() as i64, ids.len() as i64));
    // Every acknowledged completion is done, with one reward.
    let completed: Vec<Uuid> = tally
        .completed
        .iter()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let done: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasks WHERE id = ANY($1) AND status = 'done'")
            .bind(&completed)
            .fetch_one(&taskkeeper)
            .await
            .unwrap();
    assert_eq!(
        done,
        completed.len() as i64,
        "acknowledged completions not done"
    );
    let rewarded: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT task_id, count(*) FROM entries
         WHERE kind = 'completion_reward' AND task_id = ANY($1) GROUP BY task_id",
    )
    .bind(&completed)
    .fetch_all(&accounting)
    .await
    .unwrap();
    assert_eq!(
        rewarded.len(),
        completed.len(),
        "acknowledged completions without a reward"
    );
    assert!(
        rewarded.iter().all(|(_, n)| *n == 1),
        "a completion rewarded twice"
    );
    // One fee per assignment (creation 1, a reassign +1, a completion +1 of the
    // sequence), one reward per completion.
    let (tasks, assignments, completions): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                COALESCE(sum(CASE status WHEN 'done' THEN sequence - 1 ELSE sequence END), 0)::bigint,
                count(*) FILTER (WHERE status = 'done')
         FROM tasks",
    )
    .fetch_one(&taskkeeper)
    .await
    .unwrap();
    let (fees, rewards, legs, distinct_legs): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'assign_fee'),
                count(*) FILTER (WHERE kind = 'completion_reward'),
                count(*), count(DISTINCT (event_id, task_id, kind))
         FROM entries WHERE kind <> 'payout'",
    )
    .fetch_one(&accounting)
    .await
    .unwrap();
    assert_eq!(fees, assignments, "fees vs assignments");
    assert_eq!(rewards, completions, "rewards vs completions");
    assert_eq!(
        legs, distinct_legs,
        "two entries of one (event, task, kind)"
    );
    let off_balances = scalar(
        &accounting,
        "SELECT count(*) FROM balances b
         FULL JOIN (SELECT user_id, sum(amount) AS s FROM entries GROUP BY user_id) e USING (user_id)
         WHERE COALESCE(b.balance, 0) <> COALESCE(e.s, 0)",
    )
    .await;
    assert_eq!(
        off_balances, 0,
        "balances that are not the sum of their entries"
    );
    let mut books =
        accounting_pb::accounting_service_client::AccountingServiceClient::new(gateways[1].clone());
    let today = books
        .get_management_earnings(with_token(
            &admin,
            accounting_pb::GetManagementEarningsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
        .today
        .unwrap();
    // The workers' entries of that billing day (the load may straddle a cutoff).
    let workers_sum: i64 = sqlx::query_scalar(
        "SELECT COALESCE(sum(amount), 0)::bigint FROM entries
         WHERE kind <> 'payout' AND billing_day = $1::text::date",
    )
    .bind(&today.billing_day)
    .fetch_one(&accounting)
    .await
    .unwrap();
    assert_eq!(
        today.earnings_cents, -workers_sum,
        "management earnings vs the workers' sum"
    );
    let dead = {
        let mut stream = js
            .get_stream(topology.stream(Bus::DeadLetter))
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    };
    assert_eq!(dead, 0, "dead letters");
    println!(
        "invariants: {tasks} tasks ({} acknowledged by the load), {fees} fees = {assignments} assignments, \
         {rewards} rewards = {completions} completions, {legs} entries with distinct legs, \
         management earnings {} = -({workers_sum}), 0 unpublished, 0 pending, 0 dead letters",
        ids.len(),
        today.earnings_cents
    );

    // Both Accounting replicas close the day at once: one close, one payout and one mail
    // per positive balance.
    let positive = scalar(
        &accounting,
        "SELECT count(*) FROM balances WHERE balance > 0",
    )
    .await;
    assert!(positive > 0, "nobody to pay: the close would prove nothing");
    let replicas = nodes.replicas("accounting");
    let mut direct = Vec::new();
    for index in &replicas {
        direct.push(
            accounting_pb::accounting_service_client::AccountingServiceClient::new(
                connect(nodes.nodes[*index].addr).await,
            ),
        );
    }
    let close =
        |mut client: accounting_pb::accounting_service_client::AccountingServiceClient<Channel>| {
            let admin = admin.clone();
            async move {
                client
                    .close_day(with_token(
                        &admin,
                        accounting_pb::CloseDayRequest::default(),
                    ))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
    let (one, two) = tokio::join!(close(direct[0].clone()), close(direct[1].clone()));
    assert_eq!(one.billing_day, two.billing_day);
    assert!(one.closed_now != two.closed_now, "{one:?} {two:?}");
    let closed = if one.closed_now { one } else { two };
    assert_eq!(closed.payouts, positive);
    assert_eq!(
        scalar(&accounting, "SELECT count(*) FROM billing_days").await,
        1
    );
    assert_eq!(
        scalar(
            &accounting,
            "SELECT count(*) FROM entries WHERE kind = 'payout'"
        )
        .await,
        positive
    );
    popug_testkit::eventually(Duration::from_secs(30), "one mail per payout", || async {
        (smtp.messages().len() as i64 >= positive).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.messages().len() as i64, positive, "mails");
    println!(
        "day close: both replicas at once -> one close of {}, {} payouts, {} mails",
        closed.billing_day,
        closed.payouts,
        smtp.messages().len()
    );
}
