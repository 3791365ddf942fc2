//! `reassign`: ReassignOpenTasks at scale.
//!
//! Seeds N open tasks and U assignable users into a fresh, migrated TaskKeeper database
//! with set-based SQL, starts TaskKeeper as a child process, calls ReassignOpenTasks over
//! gRPC with an admin token from a real Account, and measures
//! (a) the time until the RPC returns (the transaction committed),
//! (b) the time until JetStream holds every `reassign.chunk` of it (the relay publishes
//!     and waits for each acknowledgement; the REASSIGNS stream's message count is
//!     polled), and until the outbox has nothing pending,
//! (c) TaskKeeper's peak resident memory (`VmHWM` of the child).
//!
//! ```sh
//! cargo run --release -p popug-bench --bin reassign -- \
//!     [--tasks 1000000] [--users 1000] [--chunk-size 1000] [--repeat 1]
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;
use popug_bench::{
    Args, Bench, connect, cpu_seconds, load_average, memory_kib, mib, prepare_taskkeeper_db,
    seed_open_tasks, with_token,
};
use popug_eventbus::Bus;
use popug_proto::popug::tasks::v1 as pb;
use sqlx::Connection;

struct Config {
    tasks: i64,
    users: i64,
    chunk_size: usize,
    repeat: usize,
    timeout: Duration,
}

struct Round {
    moved: i64,
    chunks: u64,
    commit: Duration,
    acked: Duration,
    drained: Duration,
    hwm_kib: u64,
    /// From TaskKeeper's log line: the UPDATE, then writing the chunks to the outbox.
    update_ms: Option<u64>,
    outbox_ms: Option<u64>,
    cpu: f64,
    load: f64,
}

/// The `field` number of the `nth` (0-based) "open tasks reassigned" JSON log line.
fn logged(log: &str, nth: usize, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .filter(|l| l.contains("open tasks reassigned"))
        .nth(nth)?;
    let key = format!("\"{field}\":");
    let at = line.find(&key)? + key.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn ms(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{:.2}", v as f64 / 1000.0))
}

impl Config {
    /// The command line: `--tasks N --users N --chunk-size N --repeat N --timeout-secs N`.
    fn from_args(args: &Args) -> anyhow::Result<Config> {
        Ok(Config {
            tasks: args.get("tasks", 1_000_000)?,
            users: args.get("users", 1_000)?,
            chunk_size: args.get("chunk-size", 1_000)?,
            repeat: args.get("repeat", 1)?,
            timeout: Duration::from_secs(args.get("timeout-secs", 300)?),
        })
    }
}

fn main() -> anyhow::Result<()> {
    popug_bench::main(Config::from_args, run)
}

async fn run(bench: &mut Bench, config: Config) -> anyhow::Result<()> {
    let config = &config;
    println!(
        "reassign benchmark: {} open tasks, {} assignable users, chunk size {}, prefix {}",
        config.tasks, config.users, config.chunk_size, bench.prefix
    );
    let token = bench.start_account().await?;
    let database_url = bench.database("taskkeeper").await?;
    let settings = bench.taskkeeper_settings(&database_url, config.chunk_size);

    // Migrate and seed before TaskKeeper starts, so its memory is only its own work.
    let started = Instant::now();
    let mut conn = prepare_taskkeeper_db(&settings, config.users).await?;
    seed_open_tasks(&mut conn, config.tasks).await?;
    sqlx::query("VACUUM ANALYZE users")
        .execute(&mut conn)
        .await?;
    sqlx::query("VACUUM ANALYZE tasks")
        .execute(&mut conn)
        .await?;
    // Start from a clean checkpoint so the seed's WAL is not billed to the reassign.
    sqlx::query("CHECKPOINT").execute(&mut conn).await?;
    println!(
        "seeded {} tasks and {} users in {:.1} s",
        config.tasks,
        config.users,
        started.elapsed().as_secs_f64()
    );

    // JSON logs, so the reassign's own timing breakdown can be read back.
    let tk = bench
        .spawn_taskkeeper(&settings, &[("LOG_FORMAT", "json".to_owned())])
        .await?;
    let pid = tk.pid();
    let grpc = tk.grpc;
    let log = tk.log.clone();
    let (idle_hwm, idle_rss) = memory_kib(pid).context("reading the child's /proc status")?;
    println!(
        "taskkeeper child pid {pid} on {grpc} (log {log}); after start VmHWM {:.1} MiB, VmRSS {:.1} MiB",
        mib(idle_hwm),
        mib(idle_rss)
    );
    let mut client = pb::task_service_client::TaskServiceClient::new(connect(grpc).await?)
        .max_decoding_message_size(64 * 1024 * 1024);

    let mut rounds = Vec::new();
    for round in 1..=config.repeat {
        let before = bench.stream_messages(Bus::Reassign).await?;
        let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
        let start = Instant::now();
        let response = client
            .reassign_open_tasks(with_token(&token, pb::ReassignOpenTasksRequest {})?)
            .await?
            .into_inner();
        let commit = start.elapsed();
        let moved = response.reassigned;
        let chunks = (moved as u64).div_ceil(config.chunk_size as u64);

        // (b) every chunk in the stream: the relay awaited each acknowledgement.
        let acked = loop {
            let now = bench.stream_messages(Bus::Reassign).await?;
            if now >= before + chunks {
                break start.elapsed();
            }
            if start.elapsed() > config.timeout {
                anyhow::bail!(
                    "only {} of {chunks} chunks after {:?}",
                    now - before,
                    config.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        // ... and the relay has marked them published.
        let drained = loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM eventbus.outbox WHERE published_at IS NULL",
            )
            .fetch_one(&mut conn)
            .await?;
            if pending == 0 {
                break start.elapsed();
            }
            if start.elapsed() > config.timeout {
                anyhow::bail!(
                    "{pending} outbox rows still pending after {:?}",
                    config.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        let (hwm_kib, rss_kib) = memory_kib(pid).context("reading the child's /proc status")?;
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
        let load = load_average();
        println!(
            "round {round}: moved {moved} in {chunks} chunks; commit {:.2} s, all chunks in \
             JetStream {:.2} s, outbox drained {:.2} s; VmHWM {:.1} MiB, VmRSS {:.1} MiB",
            commit.as_secs_f64(),
            acked.as_secs_f64(),
            drained.as_secs_f64(),
            mib(hwm_kib),
            mib(rss_kib)
        );
        anyhow::ensure!(
            moved == config.tasks,
            "expected every one of {} open tasks to move, moved {moved}",
            config.tasks
        );
        rounds.push(Round {
            moved,
            chunks,
            commit,
            acked,
            drained,
            hwm_kib,
            update_ms: logged(&log, round - 1, "update_ms"),
            outbox_ms: logged(&log, round - 1, "outbox_ms"),
            cpu,
            load,
        });
    }
    let _ = conn.close().await;

    println!();
    println!(
        "| round | tasks moved | chunks | (a) RPC/commit s | of which UPDATE s | of which outbox s | (b) all chunks acked s | outbox drained s | (c) taskkeeper VmHWM MiB | taskkeeper CPU s | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {} | {} | {:.2} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
            i + 1,
            r.moved,
            r.chunks,
            r.commit.as_secs_f64(),
            ms(r.update_ms),
            ms(r.outbox_ms),
            r.acked.as_secs_f64(),
            r.drained.as_secs_f64(),
            mib(r.hwm_kib),
            r.cpu,
            r.load
        );
    }
    let worst_commit = rounds.iter().map(|r| r.commit).max().unwrap_or_default();
    let worst_acked = rounds.iter().map(|r| r.acked).max().unwrap_or_default();
    let hwm = rounds.iter().map(|r| r.hwm_kib).max().unwrap_or_default();
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!();
    println!(
        "targets: (a) < 20 s: {} ({:.2} s) | (b) < 20 s: {} ({:.2} s) | (c) < 500 MiB: {} ({:.1} MiB)",
        verdict(worst_commit < Duration::from_secs(20)),
        worst_commit.as_secs_f64(),
        verdict(worst_acked < Duration::from_secs(20)),
        worst_acked.as_secs_f64(),
        verdict(mib(hwm) < 500.0),
        mib(hwm)
    );
    Ok(())
}
