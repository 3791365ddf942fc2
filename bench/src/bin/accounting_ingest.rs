//! `accounting_ingest`: how fast Accounting applies task events to the ledger, beside a
//! raw JetStream consume-and-ack of the same messages.
//!
//! Creates a fresh database migrated exactly as Accounting's startup does
//! (migrated with `accounting::startup::MIGRATOR`) and a unique stream prefix, then
//! publishes, as TaskKeeper would (catalog envelopes, `Nats-Msg-Id` = event id), the
//! events of T tasks: `task.created` v2 and `task.assigned` for each, one reassign of
//! every task in `reassign.chunk`s of 1000, and `task.completed` for as many tasks as it
//! takes to reach the message count (default 200,000 messages). Then, on the same
//! streams:
//!
//! 1. **raw** — one plain durable pull consumer per stream that fetches batches of the
//!    same size and acks every message (no database);
//! 2. **ledger** — Accounting's real consumers (`popug_eventbus::Consumer` with
//!    `accounting::events::Ledger`: the task consumers and the reassign consumer, as many
//!    and configured as `startup` does), driven by `poll_once` (what `Consumer::run`
//!    loops on) until every message is acked;
//!    then checks the ledger holds every entry and its invariants.
//!
//! The two streams are consumed concurrently, as in the service, so reassign chunks
//! often reach the ledger before the tasks' creations (the out-of-order path). The
//! outbox relay does not run: `accounting.entry_applied` rows are written (in the same
//! transactions, as always) but not published during the measurement.
//!
//! ```sh
//! cargo run --release -p popug-bench --bin accounting_ingest -- \
//!     [--messages 200000] [--tasks 80000] [--users 1000] [--chunk-size 1000] \
//!     [--batch 2000] [--reassign-batch 20] [--task-consumers 2] [--pool 8] \
//!     [--replicas 1]
//! ```
//!
//! `--replicas N` runs the ledger as N Accounting replicas would: N sets of consumers
//! (each as many as `startup` starts) on the same durable consumers, each set with its
//! own NATS connection and its own pool of `--pool` connections to the one database —
//! in this one process, so on this machine they share its cores with each other and
//! with PostgreSQL and NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use accounting::domain::BillingClock;
use accounting::events::{
    Ledger, PRODUCER, REASSIGNS_BATCH, REASSIGNS_CONSUMER, TASKS_BATCH, TASKS_CONSUMER,
    TASKS_CONSUMERS,
};
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use popug_bench::{Args, Bench};
use popug_eventbus::{Bus, Consumer, ConsumerConfig, Envelope, Outbox, Topology, Transactional};
use popug_proto::popug::tasks::v1 as pb;
use prost::Message;
use uuid::Uuid;

struct Config {
    messages: usize,
    tasks: usize,
    users: usize,
    chunk_size: usize,
    batch: usize,
    reassign_batch: usize,
    task_consumers: usize,
    pool: u32,
    replicas: usize,
    timeout: Duration,
}

/// What was published, for checking the ledger afterwards.
struct Published {
    task_messages: u64,
    reassign_messages: u64,
    completions: usize,
    /// Ledger entries every message together must produce.
    entries: i64,
    /// Legs (assignments and completions) across all messages.
    legs: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    let config = Config {
        messages: args.get("messages", 200_000)?,
        tasks: args.get("tasks", 80_000)?,
        users: args.get("users", 1_000)?,
        chunk_size: args.get("chunk-size", 1_000)?,
        batch: args.get("batch", TASKS_BATCH)?,
        reassign_batch: args.get("reassign-batch", REASSIGNS_BATCH)?,
        task_consumers: args.get("task-consumers", TASKS_CONSUMERS)?,
        pool: args.get("pool", 8)?,
        replicas: args.get("replicas", 1)?,
        timeout: Duration::from_secs(args.get("timeout-secs", 600)?),
    };
    popug_bench::run(async |bench| {
        // Logs and spans as in the service (`RUST_LOG`, default info).
        let _telemetry = popug_telemetry::init("accounting-bench");
        run(bench, &config).await
    })
}

async fn run(bench: &mut Bench, config: &Config) -> anyhow::Result<()> {
    println!(
        "accounting ingest benchmark: {} messages ({} tasks, {} users, chunk size {}), \
         {} replicas x {} task consumers, batches {}/{}, pool {}, stream replicas {}, prefix {}",
        config.messages,
        config.tasks,
        config.users,
        config.chunk_size,
        config.replicas,
        config.task_consumers,
        config.batch,
        config.reassign_batch,
        config.pool,
        bench.topology.replicas(),
        bench.prefix
    );
    let pool = bench
        .migrated_database("accounting", &accounting::startup::MIGRATOR, config.pool)
        .await?;
    // What Accounting's start does after migrating: open the first billing day.
    let clock = BillingClock::new(Duration::ZERO);
    accounting::store::billing::init_open_day(&mut *pool.acquire().await?, clock.today()).await?;
    bench.topology.ensure_streams(&bench.js).await?;

    let started = Instant::now();
    let published = publish(&bench.js, &bench.topology, config).await?;
    println!(
        "published {} task + {} reassign messages ({} legs, {} completions) in {:.1} s",
        published.task_messages,
        published.reassign_messages,
        published.legs,
        published.completions,
        started.elapsed().as_secs_f64()
    );
    let total = published.task_messages + published.reassign_messages;

    // 1. Raw consume-and-ack.
    let raw = {
        let start = Instant::now();
        let a = tokio::spawn(raw_consume(
            bench.js.clone(),
            bench.topology.stream(Bus::Task),
            published.task_messages,
            config.batch,
        ));
        let b = tokio::spawn(raw_consume(
            bench.js.clone(),
            bench.topology.stream(Bus::Reassign),
            published.reassign_messages,
            config.batch,
        ));
        a.await??;
        b.await??;
        start.elapsed()
    };
    println!(
        "raw consume-and-ack: {total} messages in {:.2} s = {:.0} messages/s",
        raw.as_secs_f64(),
        total as f64 / raw.as_secs_f64()
    );

    // 2. The ledger, with Accounting's own consumers and handler.
    let ledger = Ledger {
        outbox: Outbox::new(bench.topology.clone(), PRODUCER),
        clock,
    };
    let mut tasks_config = ConsumerConfig::new(TASKS_CONSUMER, Bus::Task);
    tasks_config.batch = config.batch;
    let mut reassigns_config = ConsumerConfig::new(REASSIGNS_CONSUMER, Bus::Reassign);
    reassigns_config.batch = config.reassign_batch;
    let mut tasks = Vec::new();
    let mut reassigns = Vec::new();
    for replica in 0..config.replicas.max(1) {
        // The first replica reuses the migrated pool; the others bring their own, and
        // each its own NATS connection, as separate processes would.
        let (pool, js) = if replica == 0 {
            (pool.clone(), bench.js.clone())
        } else {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(config.pool)
                .connect_with((*pool.connect_options()).clone())
                .await?;
            (pool, jetstream::new(popug_bench::nats_client().await?))
        };
        for _ in 0..config.task_consumers.max(1) {
            tasks.push(
                Consumer::bind(
                    js.clone(),
                    bench.topology.clone(),
                    tasks_config.clone(),
                    Transactional::new(pool.clone(), ledger.clone()),
                )
                .await?,
            );
        }
        reassigns.push(
            Consumer::bind(
                js,
                bench.topology.clone(),
                reassigns_config.clone(),
                Transactional::new(pool, ledger.clone()),
            )
            .await?,
        );
    }
    let applied = {
        let start = Instant::now();
        let (tasks_acked, reassigns_acked) =
            (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut running = Vec::new();
        for consumer in tasks {
            running.push(tokio::spawn(drive(
                consumer,
                tasks_acked.clone(),
                published.task_messages,
                config.timeout,
            )));
        }
        for consumer in reassigns {
            running.push(tokio::spawn(drive(
                consumer,
                reassigns_acked.clone(),
                published.reassign_messages,
                config.timeout,
            )));
        }
        for task in running {
            task.await??;
        }
        start.elapsed()
    };
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
        .fetch_one(&pool)
        .await?;
    println!(
        "ledger: {total} messages ({} legs, {entries} entries) in {:.2} s = {:.0} messages/s, \
         {:.0} legs/s",
        published.legs,
        applied.as_secs_f64(),
        total as f64 / applied.as_secs_f64(),
        published.legs as f64 / applied.as_secs_f64()
    );
    check(&pool, config, &published).await?;

    let raw_rate = total as f64 / raw.as_secs_f64();
    let ledger_rate = total as f64 / applied.as_secs_f64();
    let ratio = ledger_rate / raw_rate;
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!();
    println!("| messages | raw s | raw msg/s | ledger s | ledger msg/s | ledger legs/s | ratio |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
        raw.as_secs_f64(),
        raw_rate,
        applied.as_secs_f64(),
        ledger_rate,
        published.legs as f64 / applied.as_secs_f64(),
        ratio
    );
    println!(
        "target >= 20000 events/s: {}; target ratio >= 0.5 of raw: {}",
        verdict(ledger_rate >= 20_000.0),
        verdict(ratio >= 0.5)
    );
    pool.close().await;
    Ok(())
}

/// Builds and publishes every message; returns what the ledger must end up with.
async fn publish(
    js: &jetstream::Context,
    topology: &Topology,
    config: &Config,
) -> anyhow::Result<Published> {
    let users: Vec<String> = (0..config.users.max(1))
        .map(|_| Uuid::new_v4().to_string())
        .collect();
    let tasks: Vec<String> = (0..config.tasks)
        .map(|_| Uuid::new_v4().to_string())
        .collect();
    let chunks = config.tasks.div_ceil(config.chunk_size.max(1));
    let fixed = 2 * config.tasks + chunks;
    anyhow::ensure!(
        config.messages >= fixed && config.messages - fixed <= config.tasks,
        "--messages must be between {fixed} and {} for {} tasks",
        fixed + config.tasks,
        config.tasks
    );
    let completions = config.messages - fixed;
    let user = |i: usize| users[i % users.len()].clone();
    let text = |i: usize| {
        (
            format!("{}", i + 1),
            format!("Bench task {i}"),
            format!("BENCH-{i}"),
            format!("seeded by accounting_ingest, task {i}"),
        )
    };

    let mut task_envelopes = Vec::with_capacity(2 * config.tasks + completions);
    for (i, id) in tasks.iter().enumerate() {
        let (public_id, title, jira_id, description) = text(i);
        task_envelopes.push(popug_eventbus::envelope(
            "taskkeeper",
            id,
            &pb::TaskCreated {
                task_id: id.clone(),
                public_id: public_id.clone(),
                title: title.clone(),
                jira_id: jira_id.clone(),
                description: description.clone(),
                assignee_id: user(i),
                status: "open".into(),
                sequence: 1,
            },
        ));
        task_envelopes.push(popug_eventbus::envelope(
            "taskkeeper",
            id,
            &pb::TaskAssigned {
                task_id: id.clone(),
                public_id,
                title,
                jira_id,
                description,
                assignee_id: user(i),
                status: "open".into(),
                sequence: 1,
            },
        ));
    }
    // One reassign of every task (all open), sequence 2, to the next user.
    let reassign_id = Uuid::new_v4().to_string();
    let mut reassign_envelopes = Vec::with_capacity(chunks);
    for (index, slice) in tasks.chunks(config.chunk_size.max(1)).enumerate() {
        let base = index * config.chunk_size;
        reassign_envelopes.push(popug_eventbus::envelope(
            "taskkeeper",
            &reassign_id,
            &pb::ReassignChunk {
                reassign_id: reassign_id.clone(),
                chunk_index: index as i32,
                chunk_count: chunks as i32,
                tasks: slice
                    .iter()
                    .enumerate()
                    .map(|(j, id)| pb::ReassignedTask {
                        task_id: id.clone(),
                        assignee_id: user(base + j + 1),
                        sequence: 2,
                    })
                    .collect(),
            },
        ));
    }
    // Completions by the new assignee, sequence 3.
    for (i, id) in tasks.iter().enumerate().take(completions) {
        let (public_id, title, jira_id, description) = text(i);
        task_envelopes.push(popug_eventbus::envelope(
            "taskkeeper",
            id,
            &pb::TaskCompleted {
                task_id: id.clone(),
                public_id,
                title,
                jira_id,
                description,
                assignee_id: user(i + 1),
                status: "done".into(),
                sequence: 3,
            },
        ));
    }
    let published = Published {
        task_messages: task_envelopes.len() as u64,
        reassign_messages: reassign_envelopes.len() as u64,
        completions,
        entries: (2 * config.tasks + completions) as i64,
        legs: 3 * config.tasks + completions,
    };
    publish_all(js, topology, &task_envelopes).await?;
    publish_all(js, topology, &reassign_envelopes).await?;
    Ok(published)
}

/// Publishes like the outbox relay: `Nats-Msg-Id` = event id, acknowledgements awaited
/// in windows.
async fn publish_all(
    js: &jetstream::Context,
    topology: &Topology,
    envelopes: &[Envelope],
) -> anyhow::Result<()> {
    for window in envelopes.chunks(2_000) {
        let mut acks = Vec::with_capacity(window.len());
        for envelope in window {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", envelope.event_id.as_str());
            acks.push(
                js.publish_with_headers(
                    topology.subject(&envelope.name),
                    headers,
                    envelope.encode_to_vec().into(),
                )
                .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}

/// A plain durable pull consumer: fetch a batch, ack each message, until `expected`.
async fn raw_consume(
    js: jetstream::Context,
    stream: String,
    expected: u64,
    batch: usize,
) -> anyhow::Result<()> {
    let consumer = js
        .get_stream(&stream)
        .await?
        .get_or_create_consumer(
            "raw-bench",
            pull::Config {
                durable_name: Some("raw-bench".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                max_ack_pending: 20_000,
                ..Default::default()
            },
        )
        .await?;
    let mut acked = 0;
    while acked < expected {
        let mut fetched = consumer
            .fetch()
            .max_messages(batch)
            .expires(Duration::from_millis(500))
            .messages()
            .await?;
        let mut messages = Vec::new();
        while let Some(message) = fetched.next().await {
            messages.push(message.map_err(|e| anyhow::anyhow!(e))?);
        }
        for message in &messages {
            message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
        }
        acked += messages.len() as u64;
    }
    Ok(())
}

/// Runs a consumer batch after batch (what `Consumer::run` does) until it and its
/// siblings on the same durable consumer acked `expected` messages.
async fn drive(
    consumer: Consumer<Transactional<Ledger>>,
    acked: Arc<AtomicU64>,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while acked.load(Ordering::SeqCst) < expected {
        match consumer.poll_once().await {
            Ok(n) => {
                acked.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(error) => {
                eprintln!("consumer batch failed (retrying): {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        anyhow::ensure!(
            start.elapsed() < timeout,
            "only {} of {expected} messages acked after {timeout:?}",
            acked.load(Ordering::SeqCst)
        );
    }
    Ok(())
}

/// The ledger holds exactly what the events say, and its invariants hold.
async fn check(pool: &sqlx::PgPool, config: &Config, published: &Published) -> anyhow::Result<()> {
    let (entries, fees, rewards): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE kind = 'assign_fee'),
                count(*) FILTER (WHERE kind = 'completion_reward')
         FROM entries",
    )
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(
        entries == published.entries,
        "ledger has {entries} entries, expected {}",
        published.entries
    );
    anyhow::ensure!(
        fees == 2 * config.tasks as i64 && rewards == published.completions as i64,
        "{fees} fees and {rewards} rewards"
    );
    let off = accounting::store::ledger::unbalanced_users(&mut *pool.acquire().await?).await?;
    anyhow::ensure!(off == 0, "{off} balances differ from their entries");
    let (tasks, placeholders, wrong_price, completed, latest): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM tasks),
                    (SELECT count(*) FROM entries WHERE NOT text_known),
                    (SELECT count(*) FROM entries e JOIN tasks t ON t.id = e.task_id
                     WHERE (e.kind = 'assign_fee' AND e.amount <> -t.fee_cents)
                        OR (e.kind = 'completion_reward' AND e.amount <> t.reward_cents)),
                    (SELECT count(*) FROM tasks WHERE completed),
                    (SELECT count(*) FROM tasks WHERE sequence = 3 OR (sequence = 2 AND NOT completed))",
        )
        .fetch_one(pool)
        .await?;
    anyhow::ensure!(
        tasks == config.tasks as i64,
        "{tasks} tasks, expected {}",
        config.tasks
    );
    anyhow::ensure!(placeholders == 0, "{placeholders} entries lack task text");
    anyhow::ensure!(
        wrong_price == 0,
        "{wrong_price} entries off their task's price"
    );
    anyhow::ensure!(
        completed == published.completions as i64 && latest == tasks,
        "{completed} completed, {latest} at their last sequence"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM eventbus.outbox")
        .fetch_one(pool)
        .await
        .context("counting the outbox")?;
    anyhow::ensure!(
        outbox == entries,
        "{outbox} entry_applied events for {entries} entries"
    );
    println!(
        "check: {entries} entries ({fees} fees, {rewards} rewards), {tasks} tasks each with one \
         price, balances = sums of entries, no placeholders left, {outbox} entry_applied events"
    );
    Ok(())
}
