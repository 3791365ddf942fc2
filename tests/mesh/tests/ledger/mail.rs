//! Payout e-mails while the SMTP relay is down, then up.

use accounting::domain::Cents;
use popug_mesh::{Sink, WAIT, wait_for_count};
use tokio::net::TcpListener;

use super::*;

/// SMTP down: the mails fail and are retried with backoff; SMTP up: each is delivered,
/// exactly once, and stays sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smtp_down_then_up_sends_each_mail_once() {
    // No SMTP sink yet: the mails go to a closed port, where one is started later.
    let w = ledger_mesh().await;
    let node = w.accounting();
    let port = node.settings.smtp_port;
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (i, user) in users.iter().enumerate() {
        w.known_user(*user, &format!("popug{i}@test.example")).await;
        w.assign_and_complete(*user).await;
    }
    // A payout to a user Accounting has not heard of yet waits for their address.
    let stranger = Uuid::now_v7();
    w.assign_and_complete(stranger).await;

    let closed = node.service.close_day(None).await.unwrap();
    assert_eq!(closed.payouts, 4);
    let failed = "SELECT count(*) FROM payout_mails WHERE status = 'failed' AND attempts >= 2";
    wait_for_count(&node.pool, "failed attempts while SMTP is down", failed, 3).await;

    let sink = Sink::start(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    let sent = "SELECT count(*) FROM payout_mails WHERE status = 'sent'";
    wait_for_count(&node.pool, "three mails sent", sent, 3).await;
    // The stranger arrives: their mail goes too.
    w.known_user(stranger, "stranger@test.example").await;
    popug_testkit::eventually(WAIT, "four mails sent", || async {
        (sink.messages().len() == 4).then_some(())
    })
    .await;
    // More mailer rounds — a second mailer, as another replica would run — send nothing
    // again.
    let before = w.accounting_events("accounting.payout_sent").await.len();
    let replica = accounting::mailer::Mailer::new(
        node.pool.clone(),
        popug_eventbus::Outbox::new(w.topology.clone(), "accounting"),
        &node.settings,
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(replica.round().await.unwrap(), 0, "nothing left to send");
    }
    let messages = sink.messages();
    assert_eq!(messages.len(), 4);
    for (i, _) in users.iter().enumerate() {
        let to = format!("popug{i}@test.example");
        assert_eq!(
            messages.iter().filter(|m| m.contains(&to)).count(),
            1,
            "{to}"
        );
    }
    let amounts: Vec<(i64, String)> =
        sqlx::query_as("SELECT amount_cents, status FROM payout_mails ORDER BY entry_id")
            .fetch_all(&node.pool)
            .await
            .unwrap();
    for (amount, status) in &amounts {
        assert_eq!(status, "sent");
        assert!(
            messages
                .iter()
                .any(|m| m.contains(&Cents(*amount).to_string()))
        );
    }
    assert!(before <= 4);
    popug_testkit::eventually(WAIT, "payout_sent events", || async {
        (w.accounting_events("accounting.payout_sent").await.len() == 4).then_some(())
    })
    .await;
    w.assert_invariants().await;
}
