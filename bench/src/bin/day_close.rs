//! `day_close`: closing a billing day for 100,000 users with balances.
//!
//! Creates a fresh database migrated exactly as Accounting's startup does
//! (migrated with `accounting::startup::MIGRATOR`), seeds U users (with e-mails) and one
//! ledger entry per user whose balance is not zero, with set-based SQL: about half the
//! balances positive, 40 % negative, 10 % zero, and `balances` equal to the sums of the
//! entries. Then calls `accounting::service::Accounting::close_day` (what the scheduler
//! and the admin's CloseDay call) and times it until it committed: a payout entry, a
//! zeroed balance and a mail row (status new) for every positive balance, the closed
//! day's record, and the `accounting.entry_applied` / `accounting.day_closed` events in
//! the outbox. Checks the result, then repeats on a freshly seeded database.
//!
//! ```sh
//! cargo run --release -p popug-bench --bin day_close -- [--users 100000] [--repeat 1]
//! ```

use std::time::{Duration, Instant};

use accounting::events::PRODUCER;
use accounting::service::Accounting;
use popug_bench::{Args, Bench};
use popug_eventbus::Outbox;
use sqlx::PgPool;

struct Round {
    payouts: i64,
    paid_cents: i64,
    close: Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    let users: i64 = args.get("users", 100_000)?;
    let repeat: usize = args.get("repeat", 1)?;
    popug_bench::run(async |bench| run(bench, users, repeat).await)
}

async fn run(bench: &mut Bench, users: i64, repeat: usize) -> anyhow::Result<()> {
    println!(
        "day close benchmark: {users} users with balances, prefix {}",
        bench.prefix
    );
    let mut rounds = Vec::new();
    for round in 1..=repeat {
        let role = format!("accounting{round}");
        let pool = bench
            .migrated_database(&role, &accounting::startup::MIGRATOR, 4)
            .await?;
        let started = Instant::now();
        let positive = seed(&pool, users).await?;
        println!(
            "round {round}: seeded {users} users ({positive} positive) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let service = Accounting {
            pool: pool.clone(),
            outbox: Outbox::new(bench.topology.clone(), PRODUCER),
            clock: accounting::domain::BillingClock::new(Duration::ZERO),
        };
        accounting::store::billing::init_open_day(
            &mut *pool.acquire().await?,
            service.clock.today(),
        )
        .await?;
        let start = Instant::now();
        let closed = service.close_day(None).await?;
        let close = start.elapsed();
        println!(
            "round {round}: closed {} with {} payouts ({} cents) in {:.2} s",
            accounting::domain::format_day(closed.day),
            closed.payouts,
            closed.paid.get(),
            close.as_secs_f64()
        );
        check(&pool, positive, closed.payouts).await?;
        rounds.push(Round {
            payouts: closed.payouts,
            paid_cents: closed.paid.get(),
            close,
        });
        pool.close().await;
    }
    println!();
    println!("| round | users | payouts | paid cents | close (commit) s |");
    println!("|---|---|---|---|---|");
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {users} | {} | {} | {:.2} |",
            i + 1,
            r.payouts,
            r.paid_cents,
            r.close.as_secs_f64()
        );
    }
    let worst = rounds.iter().map(|r| r.close).max().unwrap_or_default();
    println!(
        "target <= 10 s: {}",
        if worst <= Duration::from_secs(10) {
            "PASS"
        } else {
            "MISS"
        }
    );
    Ok(())
}

/// Users, one entry per non-zero balance and the balances, set-based; returns how many
/// balances are positive.
async fn seed(pool: &PgPool, users: i64) -> anyhow::Result<i64> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, username, name, email, role, active, version)
         SELECT gen_random_uuid(), 'bench' || g, 'Popug ' || g, 'bench' || g || '@popug.example',
                'worker', true, 1
         FROM generate_series(1, $1) g",
    )
    .bind(users)
    .execute(&mut *tx)
    .await?;
    // g % 10: 0..=4 positive (a reward), 5..=8 negative (a fee), 9 zero (no entry).
    sqlx::query(
        "WITH u AS (SELECT id, row_number() OVER (ORDER BY id) AS g FROM users)
         INSERT INTO entries (user_id, kind, amount, event_id, task_id, jira_id, title,
                              description, billing_day)
         SELECT id,
                CASE WHEN g % 10 < 5 THEN 'completion_reward' ELSE 'assign_fee' END,
                CASE WHEN g % 10 < 5 THEN (20 + g % 21) * 100 ELSE -(10 + g % 11) * 100 END,
                gen_random_uuid(), gen_random_uuid(), 'BENCH-' || g, 'Bench task ' || g,
                'seeded by day_close', (SELECT open_day FROM billing_state)
         FROM u WHERE g % 10 <> 9",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO balances (user_id, balance)
         SELECT u.id, COALESCE(sum(e.amount), 0)::bigint
         FROM users u LEFT JOIN entries e ON e.user_id = u.id GROUP BY u.id",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("VACUUM ANALYZE users, entries, balances")
        .execute(pool)
        .await?;
    // Start from a clean checkpoint so the seed's WAL is not billed to the close.
    sqlx::query("CHECKPOINT").execute(pool).await?;
    let positive: i64 = sqlx::query_scalar("SELECT count(*) FROM balances WHERE balance > 0")
        .fetch_one(pool)
        .await?;
    Ok(positive)
}

/// Every positive balance was paid out once, with one mail, and is zero now; the rest
/// are untouched; balances still equal the sums of their entries.
async fn check(pool: &PgPool, positive: i64, payouts: i64) -> anyhow::Result<()> {
    let (entries, mails, still_positive, off, events): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM entries WHERE kind = 'payout'),
                    (SELECT count(*) FROM payout_mails WHERE status = 'new'),
                    (SELECT count(*) FROM balances WHERE balance > 0),
                    (SELECT count(*) FROM balances b
                     FULL JOIN (SELECT user_id, sum(amount) AS s FROM entries GROUP BY user_id) e
                       USING (user_id)
                     WHERE COALESCE(b.balance, 0) <> COALESCE(e.s, 0)),
                    (SELECT count(*) FROM eventbus.outbox)",
    )
    .fetch_one(pool)
    .await?;
    anyhow::ensure!(
        payouts == positive && entries == positive && mails == positive,
        "{positive} positive balances, {payouts} payouts, {entries} payout entries, {mails} mails"
    );
    anyhow::ensure!(
        still_positive == 0,
        "{still_positive} balances still positive"
    );
    anyhow::ensure!(off == 0, "{off} balances differ from their entries");
    anyhow::ensure!(
        events == positive + 1,
        "{events} outbox events for {positive} payouts and one day_closed"
    );
    println!(
        "check: {payouts} payout entries and mails, no positive balance left, balances = sums \
         of entries, {events} events in the outbox"
    );
    Ok(())
}
