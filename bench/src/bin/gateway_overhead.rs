//! `gateway_overhead`: what the gateway costs, measured side by side in one run.
//!
//! Starts Account, TaskKeeper, Accounting and the Gateway in-process (fresh databases, a
//! unique stream prefix, Redis at 127.0.0.1:6379 under a unique key prefix) and Debian's
//! nginx as a child process with `grpc_pass` to TaskKeeper (no auth). Then, with the same
//! client (tonic over HTTP/2, C concurrent callers, warm-up first):
//!
//! 1. `TaskService/GetTask` of the caller's own task straight to TaskKeeper, through the
//!    gateway, and through nginx (as many worker processes as the gateway has runtime
//!    threads, keep-alive for the whole run): with one caller (the added latency) and
//!    with C callers (throughput) — throughput, mean, p50 and p99, and the machine's CPU
//!    time per call (all processes, from `/proc/stat`: the paths differ only by the
//!    proxy, so the difference is what the proxy costs);
//! 2. `BoardService/GetTaskBoard` (a page of tasks with names and prices) against the
//!    three calls it stands for, made one after another through the gateway
//!    (`ListTasks`, then `ListProfiles`, then `GetTaskPrices`): p50 and p99 of each.
//!
//! ```sh
//! cargo run --release -p popug-bench --bin gateway_overhead -- [--callers 16] [--requests 20000] \
//!     [--board-requests 2000] [--tasks 50]
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use popug_bench::{Args, Bench, connect, percentile_ms, with_token};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::accounting::v1 as accounting_pb;
use popug_proto::popug::gateway::v1 as board_pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use popug_service::Service;
use tonic::transport::Channel;

fn stopper() -> (
    tokio::sync::oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// Latencies of `total` calls made by `callers` concurrent loops, and the wall time.
async fn load<F, Fut>(
    callers: usize,
    total: usize,
    call: F,
) -> anyhow::Result<(Vec<Duration>, Duration)>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let per = total / callers;
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..callers {
        let call = call.clone();
        handles.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per);
            for _ in 0..per {
                let at = Instant::now();
                call().await?;
                out.push(at.elapsed());
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for handle in handles {
        all.extend(handle.await??);
    }
    let wall = started.elapsed();
    all.sort();
    Ok((all, wall))
}

struct Row {
    name: &'static str,
    callers: usize,
    rps: f64,
    mean: f64,
    p50: f64,
    p99: f64,
    /// Busy CPU of the whole machine per call, µs.
    cpu_us: f64,
}

/// Busy time of every CPU of the machine so far (user, nice, system, irq, softirq,
/// steal), in clock ticks (`/proc/stat`).
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| fields.get(*i))
        .sum()
}

/// Clock ticks per second of `/proc/stat` (USER_HZ: 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

async fn get_task_load(
    name: &'static str,
    channel: Channel,
    token: &str,
    task_id: &str,
    callers: usize,
    requests: usize,
) -> anyhow::Result<Row> {
    let token = token.to_owned();
    let task_id = task_id.to_owned();
    let call = move || {
        let mut client = tasks_pb::task_service_client::TaskServiceClient::new(channel.clone());
        let request = with_token(
            &token,
            tasks_pb::GetTaskRequest {
                id: task_id.clone(),
            },
        );
        async move {
            client.get_task(request?).await?;
            anyhow::Ok(())
        }
    };
    let call = Arc::new(call);
    let warm = call.clone();
    load(callers, requests / 10, move || warm()).await?;
    let busy = busy_ticks();
    let (latencies, wall) = load(callers, requests, move || call()).await?;
    let busy = busy_ticks().saturating_sub(busy) as f64 / TICKS_PER_SEC;
    let calls = latencies.len() as f64;
    Ok(Row {
        name,
        callers,
        rps: calls / wall.as_secs_f64(),
        mean: latencies.iter().map(Duration::as_secs_f64).sum::<f64>() / calls * 1000.0,
        p50: percentile_ms(&latencies, 50.0),
        p99: percentile_ms(&latencies, 99.0),
        cpu_us: busy / calls * 1e6,
    })
}

/// nginx with `grpc_pass` in front of `upstream`, as a child process; stopped on drop.
struct Nginx {
    child: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Nginx {
    /// `workers`: as many as the gateway has runtime threads.
    fn start(upstream: SocketAddr, workers: usize) -> anyhow::Result<Nginx> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("popug-bench-nginx-{port}"));
        std::fs::create_dir_all(dir.join("logs"))?;
        let conf = format!(
            "daemon off;\nworker_processes {workers};\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 10000000;\n  keepalive_timeout 600s;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n\
             fastcgi_temp_path {dir}/fcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n\
             upstream taskkeeper {{ server {upstream}; keepalive 64; }}\n\
             server {{\n    listen 127.0.0.1:{port} http2;\n    location / {{ grpc_pass grpc://taskkeeper; }}\n  }}\n}}\n",
            dir = dir.display(),
            workers = workers,
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = std::process::Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .spawn()
            .context("nginx not found: apt-get install nginx-light")?;
        Ok(Nginx { child, dir, port })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    let callers: usize = args.get("callers", 16)?;
    let requests: usize = args.get("requests", 20_000)?;
    let board_requests: usize = args.get("board-requests", 2_000)?;
    let tasks: usize = args.get("tasks", 50)?;
    popug_bench::run(async |bench| measure(bench, callers, requests, board_requests, tasks).await)
}

async fn measure(
    bench: &mut Bench,
    callers: usize,
    requests: usize,
    board_requests: usize,
    tasks: usize,
) -> anyhow::Result<()> {
    let admin = bench.start_account().await?;
    let account = connect(bench.account_grpc.context("account not started")?).await?;
    let mut accounts =
        account_pb::account_service_client::AccountServiceClient::new(account.clone());
    accounts
        .create_account(with_token(
            &admin,
            account_pb::CreateAccountRequest {
                username: "benchworker".into(),
                name: "Bench".into(),
                surname: "Worker".into(),
                email: "benchworker@bench.example".into(),
                role: account_pb::Role::Worker as i32,
                password: "benchworker-password".into(),
                extra_permissions: vec![],
            },
        )?)
        .await?;
    let worker = account_pb::auth_service_client::AuthServiceClient::new(account)
        .login(account_pb::LoginRequest {
            username: "benchworker".into(),
            password: "benchworker-password".into(),
        })
        .await?
        .into_inner()
        .tokens
        .context("no tokens")?
        .access_token;

    let mut stops = Vec::new();
    let tk_db = bench.database("taskkeeper").await?;
    let tk = taskkeeper::Application::build(bench.taskkeeper_settings(&tk_db, 1000)).await?;
    let tk_addr = tk.grpc_addr();
    let (stop, stopped) = stopper();
    tokio::spawn(tk.run_until_stopped(Box::pin(stopped)));
    stops.push(stop);

    let acc_db = bench.database("accounting").await?;
    // Payout mail goes nowhere here.
    let mut settings = popug_mesh::accounting_settings(acc_db, &bench.prefix, &bench.jwks_url, 9);
    settings.mail_poll_interval = Duration::from_secs(60);
    let acc = accounting::Application::build(settings).await?;
    let acc_addr = acc.grpc_addr();
    let (stop, stopped) = stopper();
    tokio::spawn(acc.run_until_stopped(Box::pin(stopped)));
    stops.push(stop);

    popug_mesh::Mesh::wait_serving(tk_addr, "popug.tasks.v1.TaskService").await;
    popug_mesh::Mesh::wait_serving(acc_addr, "popug.accounting.v1.AccountingService").await;
    let upstreams = [
        format!("http://{}", bench.account_grpc.context("account")?),
        format!("http://{tk_addr}"),
        format!("http://{acc_addr}"),
    ];
    let mut settings = popug_mesh::gateway_settings(&bench.prefix, upstreams, &bench.jwks_url);
    settings.default_timeout = Duration::from_secs(10);
    settings.connect_timeout = Duration::from_secs(1);
    settings.max_message_bytes = 4 * 1024 * 1024;
    settings.redis_url = Some("redis://127.0.0.1:6379".into());
    settings.cache_ttl = Duration::from_secs(600);
    let gw = gateway::Application::build(settings).await?;
    let gw_addr = gw.local_addr();
    let (stop, stopped) = stopper();
    tokio::spawn(gw.run_until_stopped(Box::pin(stopped)));
    stops.push(stop);

    let direct = connect(tk_addr).await?;
    let via_gateway = connect(gw_addr).await?;

    // The worker is the only assignable user: every task is theirs.
    let mut tasks_client = tasks_pb::task_service_client::TaskServiceClient::new(direct.clone());
    let mut ids = Vec::new();
    for n in 0..tasks {
        let created = wait_for("TaskKeeper to know the worker", || {
            let mut client = tasks_client.clone();
            let request = with_token(
                &worker,
                tasks_pb::CreateTaskRequest {
                    title: format!("Bench {n}"),
                    ..Default::default()
                },
            );
            async move { client.create_task(request.ok()?).await.ok() }
        })
        .await?;
        ids.push(created.into_inner().task.context("no task")?.id);
    }
    let own = ids[0].clone();
    // Accounting must have priced every task before the board is measured.
    let prices = accounting_pb::price_service_client::PriceServiceClient::new(via_gateway.clone());
    wait_for("every task priced", || {
        let request = with_token(
            &worker,
            accounting_pb::GetTaskPricesRequest {
                task_ids: ids.clone(),
            },
        );
        let mut prices = prices.clone();
        let n = ids.len();
        async move {
            (prices
                .get_task_prices(request.ok()?)
                .await
                .ok()?
                .into_inner()
                .prices
                .len()
                == n)
                .then_some(())
        }
    })
    .await?;
    let _ = tasks_client
        .get_task(with_token(
            &worker,
            tasks_pb::GetTaskRequest { id: own.clone() },
        )?)
        .await?;

    // The gateway runs on this process's runtime: one thread per core.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let nginx = Nginx::start(tk_addr, threads)?;
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let via_nginx = wait_for("nginx to listen", || async {
        connect(nginx_addr).await.ok()
    })
    .await?;

    println!(
        "GetTask of one's own task, side by side: 1 caller ({} requests) and {callers} callers \
         ({requests} requests), each after a 10 % warm-up; nginx with {threads} workers",
        requests / 4
    );
    let mut rows = Vec::new();
    for (concurrency, count) in [(1, requests / 4), (callers, requests)] {
        for (name, channel) in [
            ("direct", direct.clone()),
            ("gateway", via_gateway.clone()),
            ("nginx", via_nginx.clone()),
        ] {
            rows.push(
                get_task_load(name, channel, &worker, &own, concurrency, count)
                    .await
                    .with_context(|| format!("GetTask via {name}"))?,
            );
        }
    }
    drop(nginx);
    println!(
        "| path | callers | req/s | mean ms | p50 ms | p99 ms | machine CPU µs/call |\n|---|---|---|---|---|---|---|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.0} |",
            r.name, r.callers, r.rps, r.mean, r.p50, r.p99, r.cpu_us
        );
    }
    let (d1, g1, n1) = (&rows[0], &rows[1], &rows[2]);
    let (d, g, n) = (&rows[3], &rows[4], &rows[5]);
    println!(
        "{callers} callers: gateway/nginx throughput {:.2} (target >= 1.15), gateway/direct {:.2}; \
         1 caller: added mean latency gateway {:.0} us, nginx {:.0} us (target: gateway <= nginx + 50); \
         proxy CPU per call (machine, over direct, {callers} callers): gateway {:.0} us, nginx {:.0} us",
        g.rps / n.rps,
        g.rps / d.rps,
        (g1.mean - d1.mean) * 1000.0,
        (n1.mean - d1.mean) * 1000.0,
        g.cpu_us - d.cpu_us,
        n.cpu_us - d.cpu_us,
    );

    // The board against the three calls it stands for, one after another, via the gateway.
    let page = ids.len() as i32;
    let board = board_pb::board_service_client::BoardServiceClient::new(via_gateway.clone());
    // ListProfiles asks for the worker's own id, as the board does.
    let me: String = {
        let mut c =
            account_pb::account_service_client::AccountServiceClient::new(via_gateway.clone());
        c.who_am_i(with_token(&worker, account_pb::WhoAmIRequest {})?)
            .await?
            .into_inner()
            .account
            .context("me")?
            .id
    };
    let single = |what: &'static str| {
        let channel = via_gateway.clone();
        let worker = worker.clone();
        let ids = ids.clone();
        let me = me.clone();
        move || {
            let channel = channel.clone();
            let worker = worker.clone();
            let ids = ids.clone();
            let me = me.clone();
            async move {
                match what {
                    "tasks" => {
                        let mut c = tasks_pb::task_service_client::TaskServiceClient::new(channel);
                        c.list_tasks(with_token(
                            &worker,
                            tasks_pb::ListTasksRequest {
                                page_size: page,
                                ..Default::default()
                            },
                        )?)
                        .await?;
                    }
                    "profiles" => {
                        let mut c =
                            account_pb::account_service_client::AccountServiceClient::new(channel);
                        c.list_profiles(with_token(
                            &worker,
                            account_pb::ListProfilesRequest {
                                ids: vec![me.clone()],
                            },
                        )?)
                        .await?;
                    }
                    _ => {
                        let mut c =
                            accounting_pb::price_service_client::PriceServiceClient::new(channel);
                        c.get_task_prices(with_token(
                            &worker,
                            accounting_pb::GetTaskPricesRequest { task_ids: ids },
                        )?)
                        .await?;
                    }
                }
                anyhow::Ok(())
            }
        }
    };
    let board_call = {
        let worker = worker.clone();
        move || {
            let mut board = board.clone();
            let request = with_token(
                &worker,
                board_pb::GetTaskBoardRequest {
                    page_size: page,
                    ..Default::default()
                },
            );
            async move {
                let answer = board.get_task_board(request?).await?.into_inner();
                anyhow::ensure!(
                    answer.missing.is_empty() && answer.tasks.iter().all(|t| t.priced),
                    "incomplete board"
                );
                anyhow::Ok(())
            }
        }
    };
    let sequential = {
        let (t, p, r) = (single("tasks"), single("profiles"), single("prices"));
        move || {
            let (t, p, r) = (t.clone(), p.clone(), r.clone());
            async move {
                t().await?;
                p().await?;
                r().await
            }
        }
    };
    // One caller: latency, not throughput.
    println!(
        "\nGetTaskBoard ({page} tasks) vs its three calls, 1 caller, {board_requests} requests each"
    );
    let mut lines = Vec::new();
    for (name, result) in [
        ("ListTasks", load(1, board_requests, single("tasks")).await?),
        (
            "ListProfiles",
            load(1, board_requests, single("profiles")).await?,
        ),
        (
            "GetTaskPrices",
            load(1, board_requests, single("prices")).await?,
        ),
        (
            "the three in sequence",
            load(1, board_requests, sequential).await?,
        ),
        ("GetTaskBoard", load(1, board_requests, board_call).await?),
    ] {
        let (latencies, _) = result;
        lines.push((
            name,
            percentile_ms(&latencies, 50.0),
            percentile_ms(&latencies, 99.0),
        ));
    }
    println!("| call | p50 ms | p99 ms |\n|---|---|---|");
    for (name, p50, p99) in &lines {
        println!("| {name} | {p50:.3} | {p99:.3} |");
    }
    let slowest = lines[..3].iter().map(|l| l.1).fold(0.0, f64::max);
    println!(
        "board p50 / slowest single p50 = {:.2} (target <= 1.20); board p50 / sequential p50 = {:.2}",
        lines[4].1 / slowest,
        lines[4].1 / lines[3].1
    );
    drop(stops);
    Ok(())
}
