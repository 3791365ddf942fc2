//! A whole day by hand through the real mesh.

use accounting::domain::Cents;
use popug_mesh::call::all_pages;
use popug_mesh::{WAIT, with_token};

use super::*;

/// A whole day through the real mesh: tasks created, completed and reassigned in
/// TaskKeeper reach the ledger over the buses; balances, audit log, management earnings
/// and analytics match figures computed by hand from the prices; the day close pays the
/// positive balance (mail received with the amount), carries the negative one, and
/// closes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_day_by_hand() {
    let w = full_mesh().smtp().start().await;
    let sink = w.smtp.clone().unwrap();

    // Morning: only w1 can take tasks; w1 gets and completes two.
    let w1 = w.user("worker1", account_pb::Role::Worker).await;
    w.assignable_in_taskkeeper(w1.id, true).await;
    let t1 = w.create_task(&w1.token, "Feed the parrots", "POP-1").await;
    let t2 = w.create_task(&w1.token, "Clean the cage", "POP-2").await;
    assert_eq!(t1.assignee_id, w1.id.to_string());
    assert_eq!(t2.assignee_id, w1.id.to_string());
    w.complete(&w1.token, &t1.id).await;
    w.complete(&w1.token, &t2.id).await;

    // Noon: w1 leaves; w2 arrives, gets a task, and a manager reassigns it (to w2 again,
    // the only assignable user): two fees for w2, none done.
    w.delete_account(&w.admin, w1.id).await.unwrap();
    w.assignable_in_taskkeeper(w1.id, false).await;
    let w2 = w.user("worker2", account_pb::Role::Worker).await;
    w.assignable_in_taskkeeper(w2.id, true).await;
    let t3 = w.create_task(&w2.token, "Count the seeds", "").await;
    assert_eq!(t3.assignee_id, w2.id.to_string());
    let manager = w.user("boss", account_pb::Role::Manager).await;
    let moved = w
        .tasks_client()
        .reassign_open_tasks(with_token(
            &manager.token,
            tasks_pb::ReassignOpenTasksRequest {},
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.reassigned, 1);

    w.wait_for_entries("six ledger entries", 6).await;
    let (f1, r1) = w.prices(&t1.id).await;
    let (f2, r2) = w.prices(&t2.id).await;
    let (f3, _) = w.prices(&t3.id).await;
    let w1_expected = r1 + r2 - f1 - f2;
    let w2_expected = -2 * f3;

    // Balances: own, and anyone's for an admin.
    let balance = |token: String, user: String| {
        let mut client = w.accounting_client();
        async move {
            client
                .get_balance(with_token(&token, pb::GetBalanceRequest { user_id: user }))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let b1 = balance(w.admin.clone(), w1.id.to_string()).await;
    assert_eq!(b1.balance_cents, w1_expected);
    let b2 = balance(w2.token.clone(), String::new()).await;
    assert_eq!(b2.balance_cents, w2_expected);
    assert_eq!(b2.user_id, w2.id.to_string());
    let today = b2.billing_day.clone();

    // The audit log of w2 for today: two fees for "Count the seeds".
    let log = w
        .accounting_client()
        .list_entries(with_token(&w2.token, pb::ListEntriesRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.entries.len(), 2);
    for e in &log.entries {
        assert_eq!(e.kind, pb::EntryKind::AssignFee as i32);
        assert_eq!(e.amount_cents, -f3);
        assert_eq!(e.title, "Count the seeds");
        assert_eq!(e.task_id, t3.id);
        assert_eq!(e.billing_day, today);
    }
    // w1's log, paged by one: fee, fee, reward, reward with their Jira ids.
    let seen = all_pages(|page_token| {
        let request = pb::ListEntriesRequest {
            user_id: w1.id.to_string(),
            billing_day: today.clone(),
            page_size: 1,
            page_token,
        };
        let mut client = w.accounting_client();
        let request = with_token(&w.admin, request);
        async move {
            let page = client.list_entries(request).await.unwrap().into_inner();
            (page.entries, page.next_page_token)
        }
    })
    .await;
    let summary: Vec<(i32, i64, String)> = seen
        .iter()
        .map(|e| (e.kind, e.amount_cents, e.jira_id.clone()))
        .collect();
    let expected = sorted(vec![
        (pb::EntryKind::AssignFee as i32, -f1, "POP-1".to_owned()),
        (pb::EntryKind::AssignFee as i32, -f2, "POP-2".to_owned()),
        (
            pb::EntryKind::CompletionReward as i32,
            r1,
            "POP-1".to_owned(),
        ),
        (
            pb::EntryKind::CompletionReward as i32,
            r2,
            "POP-2".to_owned(),
        ),
    ]);
    assert_eq!(sorted(summary), expected);

    // Management earnings: fees collected minus rewards paid.
    let earned = f1 + f2 + 2 * f3 - r1 - r2;
    let earnings = w
        .accounting_client()
        .get_management_earnings(with_token(
            &w.admin,
            pb::GetManagementEarningsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    let now = earnings.today.unwrap();
    assert_eq!(now.earnings_cents, earned);
    assert_eq!(now.fees_cents, f1 + f2 + 2 * f3);
    assert_eq!(now.rewards_cents, r1 + r2);
    assert_eq!(earnings.days.len(), 1);

    // Analytics: the dashboard and the most expensive task of the day, week and month.
    let dashboard = w
        .analytics_client()
        .get_dashboard(with_token(&w.admin, analytics_pb::GetDashboardRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dashboard.management_earnings_cents, earned);
    assert_eq!(dashboard.negative_balance_popugs, 1);
    assert_eq!(dashboard.billing_day, today);
    // On a tie the earliest reward entry wins. The two task consumers book side by side,
    // so which reward came first is not the order of the completions: the audit log says.
    let reward_entry = |task: &str| {
        seen.iter()
            .find(|e| e.kind == pb::EntryKind::CompletionReward as i32 && e.task_id == task)
            .map(|e| e.id.parse::<i64>().unwrap())
            .unwrap()
    };
    let t2_first = r2 > r1 || (r2 == r1 && reward_entry(&t2.id) < reward_entry(&t1.id));
    let (top_task, top_reward) = if t2_first { (&t2, r2) } else { (&t1, r1) };
    for period in [
        analytics_pb::Period::Day,
        analytics_pb::Period::Week,
        analytics_pb::Period::Month,
    ] {
        let top = w
            .analytics_client()
            .get_most_expensive_task(with_token(
                &w.admin,
                analytics_pb::GetMostExpensiveTaskRequest {
                    period: period as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(top.reward_cents, top_reward, "{period:?}");
        assert_eq!(top.task_id, top_task.id, "{period:?}");
        assert_eq!(top.title, top_task.title);
        assert_eq!(top.assignee_id, w1.id.to_string());
    }
    let none = w
        .analytics_client()
        .get_most_expensive_task(with_token(
            &w.admin,
            analytics_pb::GetMostExpensiveTaskRequest {
                period: analytics_pb::Period::Custom as i32,
                from_day: "2020-01-01".into(),
                to_day: "2020-01-31".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none.task.is_none());
    w.assert_invariants().await;

    // Evening: the admin closes the day.
    let closed = w
        .accounting_client()
        .close_day(with_token(&w.admin, pb::CloseDayRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(closed.closed_now);
    assert_eq!(closed.billing_day, today);
    assert!(
        w1_expected > 0,
        "rewards never fall below fees: {w1_expected}"
    );
    assert_eq!(closed.payouts, 1);
    assert_eq!(closed.paid_cents, w1_expected);
    assert_eq!(w.db_balance(w1.id).await, 0);
    assert_eq!(
        w.db_balance(w2.id).await,
        w2_expected,
        "negative carried over"
    );

    // The mail reaches w1 with the amount, once; the payout shows it as sent.
    let mail = popug_testkit::eventually(WAIT, "the payout mail", || async {
        sink.messages().into_iter().next()
    })
    .await;
    assert!(mail.contains(&w1.email), "{mail}");
    assert!(mail.contains(&Cents(w1_expected).to_string()), "{mail}");
    popug_testkit::eventually(WAIT, "payout marked sent", || async {
        let payouts = w
            .accounting_client()
            .list_payouts(with_token(
                &w.admin,
                pb::ListPayoutsRequest {
                    user_id: w1.id.to_string(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .payouts;
        (payouts.len() == 1
            && payouts[0].mail_status == pb::MailStatus::Sent as i32
            && payouts[0].amount_cents == w1_expected)
            .then_some(())
    })
    .await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(
        balance(w.admin.clone(), w1.id.to_string())
            .await
            .balance_cents,
        0
    );
    // w1 was deactivated at noon: its token is refused, not just its logins.
    let refused = w
        .accounting_client()
        .get_balance(with_token(&w1.token, pb::GetBalanceRequest::default()))
        .await
        .expect_err("a deactivated account's token");
    assert_eq!(refused.message(), "token revoked");

    // Closing the same day again does nothing.
    let again = w
        .accounting_client()
        .close_day(with_token(
            &w.admin,
            pb::CloseDayRequest {
                billing_day: today.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.closed_now);
    assert_eq!(again.paid_cents, w1_expected);
    w.assert_invariants().await;

    // The accounting bus carries what happened.
    popug_testkit::eventually(WAIT, "accounting events", || async {
        let applied = w.accounting_events("accounting.entry_applied").await.len();
        let closed = w.accounting_events("accounting.day_closed").await.len();
        let sent = w.accounting_events("accounting.payout_sent").await.len();
        (applied == 7 && closed == 1 && sent == 1).then_some(())
    })
    .await;
}
