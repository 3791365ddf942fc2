//! The day close: two replicas at once, racing the consumers, and the scheduler.

use std::time::Duration;

use accounting::domain::Cents;
use accounting::service::Accounting;
use popug_mesh::WAIT;

use super::*;

/// Two replicas closing the same day at once: one closes it, the other finds it closed;
/// each positive balance is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_day_closes_close_once() {
    let w = ledger_mesh().await;
    let node = w.accounting();
    let users: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for (i, user) in users.iter().enumerate() {
        if i % 2 == 0 {
            w.assign_and_complete(*user).await;
        } else {
            w.deliver(&assigned(Uuid::now_v7(), "t", "", *user, 1))
                .await
                .unwrap();
        }
    }
    let positive = w
        .scalar("SELECT count(*) FROM balances WHERE balance > 0")
        .await;
    let owed = w
        .scalar("SELECT COALESCE(sum(balance), 0)::bigint FROM balances WHERE balance > 0")
        .await;
    // A second replica: its own pool on the same database.
    let other = Accounting {
        pool: sqlx::PgPool::connect(&node.database_url).await.unwrap(),
        outbox: node.service.outbox.clone(),
        clock: node.service.clock,
    };
    let (one, two) = tokio::join!(node.service.close_day(None), other.close_day(None));
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.day, two.day);
    assert!(one.closed_now ^ two.closed_now, "exactly one close");
    let winner = if one.closed_now { &one } else { &two };
    assert_eq!(winner.payouts, positive);
    assert_eq!(winner.paid, Cents(owed));
    let payouts = w
        .scalar("SELECT count(*) FROM entries WHERE kind = 'payout'")
        .await;
    assert_eq!(payouts, positive);
    let closed_days = w.scalar("SELECT count(*) FROM billing_days").await;
    assert_eq!(closed_days, 1);
    let negative = w
        .scalar("SELECT count(*) FROM balances WHERE balance < 0")
        .await;
    assert_eq!(negative, 10, "negative balances carried over");
    // Entries after the close go to the next billing day.
    let late = Uuid::now_v7();
    w.deliver(&assigned(late, "late", "", users[0], 1))
        .await
        .unwrap();
    let day: time::Date = sqlx::query_scalar("SELECT billing_day FROM entries WHERE task_id = $1")
        .bind(late)
        .fetch_one(&node.pool)
        .await
        .unwrap();
    assert!(day > one.day);
    w.assert_invariants().await;
}

/// A day close racing the consumers: every entry lands either before the close (and
/// is paid out with it) or in the next billing day, never lost between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_day_close_racing_the_consumers_loses_nothing() {
    let w = ledger_mesh().await;
    let node = w.accounting();
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let feed = |offset: usize| {
        let users = users.clone();
        let w = &w;
        async move {
            for i in 0..40 {
                w.assign_and_complete(users[(i + offset) % users.len()])
                    .await;
            }
        }
    };
    let close = async {
        // Close while the feeders are mid-way.
        popug_testkit::eventually(WAIT, "some entries", || async {
            (w.entry_count().await >= 40).then_some(())
        })
        .await;
        node.service.close_day(None).await.unwrap()
    };
    let ((), (), closed) = tokio::join!(feed(0), feed(3), close);
    assert!(closed.closed_now);
    let day = closed.day;
    // Nothing positive is left in the closed day, and each payout is exactly what its
    // user earned up to the close.
    let per_user: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id,
                COALESCE(sum(amount) FILTER (WHERE kind <> 'payout'), 0)::bigint,
                COALESCE(-sum(amount) FILTER (WHERE kind = 'payout'), 0)::bigint
         FROM entries WHERE billing_day <= $1 GROUP BY user_id",
    )
    .bind(day)
    .fetch_all(&node.pool)
    .await
    .unwrap();
    let mut paid_total = 0;
    for (user, earned, paid) in &per_user {
        if *earned > 0 {
            assert_eq!(paid, earned, "{user}");
        } else {
            assert_eq!(*paid, 0, "{user}");
        }
        paid_total += paid;
    }
    assert_eq!(paid_total, closed.paid.get());
    let total = w
        .scalar("SELECT count(*) FROM entries WHERE kind <> 'payout'")
        .await;
    assert_eq!(total, 2 * 2 * 40);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM entries WHERE billing_day > $1")
        .bind(day)
        .fetch_one(&node.pool)
        .await
        .unwrap();
    assert!(
        after > 0 && after < total,
        "the close fell mid-way: {after}"
    );
    w.assert_invariants().await;
}

/// The automatic close at the cutoff: a billing day left open past its end is closed by
/// the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scheduler_closes_a_past_day() {
    let w = Mesh::builder()
        .accounting_with(|s| s.close_check_interval = Some(Duration::from_millis(100)))
        .start()
        .await;
    let pool = &w.accounting().pool;
    let user = Uuid::now_v7();
    w.assign_and_complete(user).await;
    let owed = w.db_balance(user).await;
    // Pretend yesterday is still open, as after a night without any replica running.
    // (Accounting opened today, under its cutoff, when it started.)
    sqlx::query("UPDATE billing_state SET open_day = open_day - 1")
        .execute(pool)
        .await
        .unwrap();
    let yesterday: time::Date = sqlx::query_scalar("SELECT open_day FROM billing_state")
        .fetch_one(pool)
        .await
        .unwrap();
    let paid: i64 = popug_testkit::eventually(WAIT, "the scheduled close", || async {
        sqlx::query_scalar("SELECT paid_cents FROM billing_days WHERE day = $1")
            .bind(yesterday)
            .fetch_optional(pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(paid, owed);
    assert_eq!(w.db_balance(user).await, 0);
    // Today stays open.
    let open: time::Date = sqlx::query_scalar("SELECT open_day FROM billing_state")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(open, yesterday.next_day().unwrap());
    w.assert_invariants().await;
}
