//! `create`: CreateTask throughput and latency with concurrent clients.
//!
//! Seeds U assignable users into a fresh, migrated TaskKeeper database, starts TaskKeeper
//! as a child process, then runs C clients (each its own HTTP/2 connection) that call
//! CreateTask back to back: first a warm-up, then the measured requests. Reports
//! requests/s, latency percentiles, errors, TaskKeeper's peak memory, and how long the
//! relay took to publish the resulting task events.
//!
//! ```sh
//! cargo run --release -p popug-bench --bin create -- \
//!     [--clients 32] [--requests 20000] [--warmup 2000] [--users 1000] [--pool 16]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use popug_bench::{
    Args, Bench, connect, cpu_seconds, load_average, memory_kib, mib, percentile_ms,
    prepare_taskkeeper_db, with_token,
};
use popug_eventbus::Bus;
use popug_proto::popug::tasks::v1 as pb;
use sqlx::Connection;
use tonic::transport::Channel;

struct Config {
    clients: usize,
    requests: i64,
    warmup: i64,
    users: i64,
    pool: u32,
}

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    wall: Duration,
}

impl Config {
    /// The command line: `--clients N --requests N --warmup N --users N --pool N`.
    fn read(args: &Args) -> anyhow::Result<Config> {
        Ok(Config {
            clients: args.get("clients", 32)?,
            requests: args.get("requests", 20_000)?,
            warmup: args.get("warmup", 2_000)?,
            users: args.get("users", 1_000)?,
            pool: args.get("pool", 16)?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    popug_bench::main(Config::read, run)
}

/// Runs `total` CreateTask calls spread over the clients; each takes the next request
/// number from a shared counter until none are left.
async fn phase(channels: &[Channel], token: &Arc<str>, total: i64, tag: &str) -> Phase {
    let next = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = channels
        .iter()
        .map(|channel| {
            let mut client = pb::task_service_client::TaskServiceClient::new(channel.clone());
            let next = next.clone();
            let token = token.clone();
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut out = Phase::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return out;
                    }
                    let request = match with_token(
                        &token,
                        pb::CreateTaskRequest {
                            title: format!("Bench {tag} task {n}"),
                            jira_id: format!("BENCH-{n}"),
                            description: "created by popug-bench create".into(),
                        },
                    ) {
                        Ok(request) => request,
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(e.to_string());
                            continue;
                        }
                    };
                    let sent = Instant::now();
                    match client.create_task(request).await {
                        Ok(_) => out.latencies.push(sent.elapsed()),
                        Err(status) => {
                            out.errors += 1;
                            out.first_error.get_or_insert(status.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    let mut all = Phase::default();
    for worker in workers {
        match worker.await {
            Ok(part) => {
                all.latencies.extend(part.latencies);
                all.errors += part.errors;
                if all.first_error.is_none() {
                    all.first_error = part.first_error;
                }
            }
            Err(e) => {
                all.errors += 1;
                all.first_error.get_or_insert(e.to_string());
            }
        }
    }
    all.wall = start.elapsed();
    all.latencies.sort();
    all
}

async fn run(bench: &mut Bench, config: Config) -> anyhow::Result<()> {
    let config = &config;
    println!(
        "create benchmark: {} clients, {} requests after {} warm-up, {} assignable users, \
         taskkeeper pool {}, prefix {}",
        config.clients, config.requests, config.warmup, config.users, config.pool, bench.prefix
    );
    let token: Arc<str> = bench.start_account().await?.into();
    let database_url = bench.database("taskkeeper").await?;
    let mut settings = bench.taskkeeper_settings(&database_url, 1000);
    settings.common.database.max_connections = config.pool;
    let mut conn = prepare_taskkeeper_db(&settings, config.users).await?;
    sqlx::query("VACUUM ANALYZE users")
        .execute(&mut conn)
        .await?;

    let tk = bench.spawn_taskkeeper(&settings, &[]).await?;
    let pid = tk.pid();
    let grpc = tk.grpc;
    println!("taskkeeper child pid {pid} on {grpc} (log {})", tk.log);

    let mut channels = Vec::with_capacity(config.clients);
    for _ in 0..config.clients {
        channels.push(connect(grpc).await?);
    }

    let warm = phase(&channels, &token, config.warmup, "warmup").await;
    println!(
        "warm-up: {} ok, {} errors in {:.2} s",
        warm.latencies.len(),
        warm.errors,
        warm.wall.as_secs_f64()
    );
    let tasks_before = bench.stream_messages(Bus::Task).await?;
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    let measured = phase(&channels, &token, config.requests, "run").await;
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let load = load_average();
    let (hwm_kib, rss_kib) = memory_kib(pid).context("reading the child's /proc status")?;

    // The relay publishes task.created + task.assigned per task; how far behind is it?
    let events = 2 * measured.latencies.len() as u64;
    let drain_start = Instant::now();
    let lag = loop {
        let now = bench.stream_messages(Bus::Task).await?;
        if now >= tasks_before + events {
            break Some(drain_start.elapsed());
        }
        if drain_start.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let _ = conn.close().await;

    let ok = measured.latencies.len();
    let rps = ok as f64 / measured.wall.as_secs_f64();
    let l = &measured.latencies;
    println!();
    println!(
        "| clients | requests ok | errors | wall s | requests/s | p50 ms | p90 ms | p99 ms | max ms | taskkeeper VmHWM MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
        config.clients,
        ok,
        measured.errors,
        measured.wall.as_secs_f64(),
        rps,
        percentile_ms(l, 50.0),
        percentile_ms(l, 90.0),
        percentile_ms(l, 99.0),
        percentile_ms(l, 100.0),
        mib(hwm_kib)
    );
    println!();
    println!(
        "taskkeeper VmRSS at the end of the run: {:.1} MiB",
        mib(rss_kib)
    );
    println!(
        "taskkeeper CPU during the run: {cpu:.1} s ({:.2} ms per request); 1-minute load \
         average at the end: {load:.1} (2 cores)",
        cpu * 1000.0 / ok.max(1) as f64
    );
    match lag {
        Some(lag) => println!(
            "relay: all {events} task events of the run in JetStream {:.2} s after the last response",
            lag.as_secs_f64()
        ),
        None => println!("relay: task events still missing 120 s after the last response"),
    }
    if let Some(error) = &measured.first_error {
        println!("first error: {error}");
    }
    println!(
        "target: >= 2000 requests/s: {}",
        if rps >= 2000.0 { "PASS" } else { "MISS" }
    );
    Ok(())
}
