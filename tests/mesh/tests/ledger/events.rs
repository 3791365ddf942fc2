//! Task and reassign events into the ledger: redelivered, out of order, as one batch,
//! and those that can never be applied.

use popug_eventbus::DeadLetter;
use popug_mesh::WAIT;

use super::*;

/// Delivers `events` once more, one by one, and asserts that the entries are still
/// `before`: a redelivery adds or changes none. Gives the entries.
async fn redeliver<'a>(
    w: &Mesh,
    before: Vec<Row>,
    events: impl IntoIterator<Item = &'a Envelope>,
) -> Vec<Row> {
    for e in events {
        w.deliver(e).await.unwrap();
    }
    let rows = w.rows().await;
    assert_eq!(rows, before, "a redelivery added or changed an entry");
    rows
}

/// Each entry as (user, kind, amount, task), sorted.
fn summary(rows: &[Row]) -> Vec<(Uuid, &str, i64, Uuid)> {
    let summary = rows
        .iter()
        .map(|r| (r.user_id, r.kind.as_str(), r.amount, r.task_id.unwrap()))
        .collect();
    sorted(summary)
}

/// Every event delivered twice gives one entry; out-of-order arrivals (a reassign before
/// the creation, a completion before the reassign chunk, a task before its user) lose,
/// double and misattribute nothing; one price per task; v1 and v2 both read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_and_out_of_order_keep_the_ledger_exact() {
    let w = ledger_mesh().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    // Task X: the reassign to A (seq 2) arrives before X's creation (v1) and its
    // assignment to B (seq 1).
    let x = Uuid::now_v7();
    let early_chunk = chunk(&[(x, a, 2)]);
    w.deliver(&early_chunk).await.unwrap();
    let rows = w.rows().await;
    assert_eq!(rows.len(), 1);
    assert!(
        !rows[0].text_known,
        "a placeholder until the creation arrives"
    );
    assert_eq!(rows[0].user_id, a);
    let x_created = created_v1(x, "[POP-7] - Legacy task", b);
    let x_assigned = assigned(x, "Legacy task", "POP-7", b, 1);
    for e in [&x_created, &x_assigned] {
        w.deliver(e).await.unwrap();
    }
    // Task Y: created and assigned to B, completed by A (seq 3) before the chunk that
    // gave it to A (seq 2).
    let y = Uuid::now_v7();
    let y_events = [
        created_v2(y, "Modern task", "POP-8", b),
        assigned(y, "Modern task", "POP-8", b, 1),
        completed(y, "Modern task", "POP-8", a, 3),
        chunk(&[(y, a, 2)]),
    ];
    for e in &y_events {
        w.deliver(e).await.unwrap();
    }

    // Everything once more, in another order: nothing changes.
    let before = w.rows().await;
    let again = y_events
        .iter()
        .rev()
        .chain([&x_assigned, &x_created, &early_chunk]);
    let rows = redeliver(&w, before, again).await;

    let (fx, _) = w.prices(&x.to_string()).await;
    let (fy, ry) = w.prices(&y.to_string()).await;
    let expected = sorted(vec![
        (a, "assign_fee", -fx, x),
        (b, "assign_fee", -fx, x),
        (b, "assign_fee", -fy, y),
        (a, "completion_reward", ry, y),
        (a, "assign_fee", -fy, y),
    ]);
    assert_eq!(summary(&rows), expected);
    // The placeholder got X's text from the v1 title, split.
    for r in rows.iter().filter(|r| r.task_id == Some(x)) {
        assert!(r.text_known);
        assert_eq!(
            (r.jira_id.as_str(), r.title.as_str()),
            ("POP-7", "Legacy task")
        );
    }
    // The newest assignment wins whatever the order: Y is A's (seq 3), X is A's (seq 2).
    let owners = w.owners().await;
    assert_eq!(owners, vec![(x, Some(a), 2, false), (y, Some(a), 3, true)]);
    assert_eq!(w.db_balance(a).await, -fx + ry - fy);
    assert_eq!(w.db_balance(b).await, -fx - fy);
    w.assert_invariants().await;

    // Through the real consumers, across buses: a reassign applied before the task's
    // creation and assignment arrive; the placeholder is filled, both fees stand.
    let v = Uuid::now_v7();
    w.publish(&chunk(&[(v, a, 2)])).await;
    w.wait_for_entries("the early chunk applied", 6).await;
    for e in [
        created_v2(v, "Late news", "POP-9", b),
        assigned(v, "Late news", "POP-9", b, 1),
    ] {
        w.publish(&e).await;
    }
    popug_testkit::eventually(WAIT, "the creation applied", || async {
        let rows = w.rows().await;
        let v_rows: Vec<&Row> = rows.iter().filter(|r| r.task_id == Some(v)).collect();
        (v_rows.len() == 2
            && v_rows
                .iter()
                .all(|r| r.text_known && r.title == "Late news"))
        .then_some(())
    })
    .await;
    let (fv, _) = w.prices(&v.to_string()).await;
    assert_eq!(w.db_balance(a).await, -fx + ry - fy - fv);
    assert_eq!(w.db_balance(b).await, -fx - fy - fv);

    // Through the bus: the same event published twice (different message ids) is
    // applied once by the consumer.
    let z = Uuid::now_v7();
    let z_assigned = assigned(z, "Bus task", "", b, 1);
    for _ in 0..2 {
        w.publish(&z_assigned).await;
    }
    w.publish(&assigned(Uuid::now_v7(), "Marker", "", b, 1))
        .await;
    w.wait_for_entries("the marker applied", 9).await;
    let z_entries = w
        .rows()
        .await
        .iter()
        .filter(|r| r.task_id == Some(z))
        .count();
    assert_eq!(z_entries, 1);
    w.assert_invariants().await;
}

/// A whole consumer batch booked at once (the set-based path) ends exactly where the
/// same events applied one by one in that order would: a reassign before the task's
/// creation, a completion before the reassign that precedes it, a completion older than
/// a later reassign (it is paid but does not mark the task completed), duplicates; and
/// each `entry_applied` carries the balance right after its entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_books_like_one_event_after_another() {
    let w = ledger_mesh().await;
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let (x, y) = (Uuid::now_v7(), Uuid::now_v7());
    let early = chunk(&[(x, a, 2), (y, a, 2)]);
    let batch = vec![
        early.clone(),
        completed(x, "Batch X", "POP-20", a, 3),
        created_v2(x, "Batch X", "POP-20", b),
        assigned(x, "Batch X", "POP-20", b, 1),
        created_v1(y, "[POP-21] - Batch Y", b),
        assigned(y, "Batch Y", "POP-21", b, 1),
        chunk(&[(y, c, 4)]),
        completed(y, "Batch Y", "POP-21", a, 3),
        // A duplicate inside the batch adds nothing.
        early,
    ];
    w.deliver_batch(&batch).await.unwrap();
    let before = w.rows().await;
    // Redelivered as a batch, and one by one: nothing changes.
    w.deliver_batch(&batch).await.unwrap();
    let rows = redeliver(&w, before, &batch).await;

    let (fx, rx) = w.prices(&x.to_string()).await;
    let (fy, ry) = w.prices(&y.to_string()).await;
    let expected = sorted(vec![
        (a, "assign_fee", -fx, x),
        (a, "completion_reward", rx, x),
        (b, "assign_fee", -fx, x),
        (a, "assign_fee", -fy, y),
        (b, "assign_fee", -fy, y),
        (c, "assign_fee", -fy, y),
        (a, "completion_reward", ry, y),
    ]);
    assert_eq!(summary(&rows), expected);
    for r in &rows {
        let text = if r.task_id == Some(x) {
            ("POP-20", "Batch X")
        } else {
            ("POP-21", "Batch Y")
        };
        assert!(r.text_known, "placeholder left: {r:?}");
        assert_eq!((r.jira_id.as_str(), r.title.as_str()), text);
    }
    let owners = w.owners().await;
    let expected = sorted(vec![(x, Some(a), 3, true), (y, Some(c), 4, false)]);
    assert_eq!(owners, expected);
    assert_eq!(w.db_balance(a).await, -fx + rx - fy + ry);
    assert_eq!(w.db_balance(b).await, -fx - fy);
    assert_eq!(w.db_balance(c).await, -fy);
    w.assert_invariants().await;

    // One entry_applied per entry, each with the balance right after it.
    let bodies: Vec<Vec<u8>> = sqlx::query_scalar("SELECT envelope FROM eventbus.outbox")
        .fetch_all(&w.accounting().pool)
        .await
        .unwrap();
    let mut applied: Vec<pb::EntryApplied> = bodies
        .iter()
        .map(|b| Envelope::decode(b.as_slice()).unwrap())
        .filter(|e| e.name == "accounting.entry_applied")
        .map(|e| pb::EntryApplied::decode(e.payload.as_ref()).unwrap())
        .collect();
    applied.sort_by_key(|e| e.entry_id.parse::<i64>().unwrap());
    assert_eq!(applied.len(), rows.len());
    for user in [a, b, c] {
        let mut running = 0;
        for e in applied.iter().filter(|e| e.user_id == user.to_string()) {
            running += e.amount_cents;
            assert_eq!(
                e.balance_cents, running,
                "balance after entry {}",
                e.entry_id
            );
        }
        assert_eq!(running, w.db_balance(user).await);
    }
}

/// What can never be applied goes to the dead-letter stream with its reason, and the
/// consumer carries on with the next event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_goes_to_dead_letters() {
    let w = ledger_mesh().await;
    let task = Uuid::now_v7();
    let mut unknown_version = created_v2(task, "Future", "", Uuid::now_v7());
    unknown_version.version = 99;
    let mut bad_payload = assigned(task, "x", "", Uuid::now_v7(), 1);
    bad_payload.payload = vec![0xff, 0xff, 0xff].into();
    let mut bad_ids = assigned(task, "x", "", Uuid::now_v7(), 1);
    bad_ids.payload = tasks_pb::TaskAssigned {
        task_id: "not-a-uuid".into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into();
    let subject = w.topology.subject("task.assigned");
    for body in [
        unknown_version.encode_to_vec(),
        bad_payload.encode_to_vec(),
        bad_ids.encode_to_vec(),
        b"not an envelope at all".to_vec(),
    ] {
        w.js.publish(subject.clone(), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    w.publish(&assigned(task, "Good", "", Uuid::now_v7(), 1))
        .await;
    w.wait_for_entries("the good event applied", 1).await;
    let letters: Vec<DeadLetter> = popug_testkit::eventually(WAIT, "four dead letters", || async {
        let letters: Vec<DeadLetter> =
            popug_testkit::read_stream(&w.js, &w.topology.stream(Bus::DeadLetter))
                .await
                .iter()
                .map(|m| DeadLetter::decode(m.payload.as_ref()).unwrap())
                .collect();
        (letters.len() == 4).then_some(letters)
    })
    .await;
    assert!(letters.iter().all(|l| l.consumer == "accounting-tasks"));
    assert!(letters.iter().all(|l| !l.reason.is_empty()));
    // Two task consumers share the durable consumer, so the letters come in any order.
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    for expected in [
        "v99",
        "payload undecodable",
        "not-a-uuid",
        "undecodable envelope",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says {expected:?}: {reasons:?}"
        );
    }
    // Also refused when handed to the handler directly.
    assert!(matches!(
        w.deliver(&unknown_version).await,
        Err(HandleError::Permanent(_))
    ));
    w.assert_invariants().await;
}

/// The ledger deduplicates by business key, not only by event id: the same assignment
/// (task, assignee, sequence) or completion re-emitted under new event ids — one by one,
/// in one batch, or on the bus — is one fee and one reward.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn re_emitted_events_under_new_ids_book_once() {
    let w = ledger_mesh().await;
    let (a, t) = (Uuid::now_v7(), Uuid::now_v7());
    let once = [
        created_v2(t, "Re-emitted", "POP-30", a),
        assigned(t, "Re-emitted", "POP-30", a, 1),
        completed(t, "Re-emitted", "POP-30", a, 1),
    ];
    for e in &once {
        w.deliver(e).await.unwrap();
    }
    let before = w.rows().await;
    assert_eq!(before.len(), 2, "{before:?}");
    // Each helper call mints a new event id for the same facts.
    w.deliver(&assigned(t, "Re-emitted", "POP-30", a, 1))
        .await
        .unwrap();
    w.deliver(&completed(t, "Re-emitted", "POP-30", a, 1))
        .await
        .unwrap();
    w.deliver_batch(&[
        assigned(t, "Re-emitted", "POP-30", a, 1),
        assigned(t, "Re-emitted", "POP-30", a, 1),
        completed(t, "Re-emitted", "POP-30", a, 1),
    ])
    .await
    .unwrap();
    assert_eq!(
        w.rows().await,
        before,
        "a re-emitted event was booked again"
    );

    // On the bus, through the real consumer: the re-emissions, then a marker.
    w.publish(&assigned(t, "Re-emitted", "POP-30", a, 1)).await;
    w.publish(&completed(t, "Re-emitted", "POP-30", a, 1)).await;
    w.publish(&assigned(Uuid::now_v7(), "Marker", "", a, 1))
        .await;
    w.wait_for_entries("the marker applied", 3).await;
    let rows = w.rows().await;
    let of_t: Vec<&Row> = rows.iter().filter(|r| r.task_id == Some(t)).collect();
    assert_eq!(of_t.len(), 2, "{of_t:?}");
    let (fee, reward) = w.prices(&t.to_string()).await;
    let amounts = sorted(of_t.iter().map(|r| r.amount).collect());
    assert_eq!(amounts, sorted(vec![-fee, reward]));
    w.assert_invariants().await;

    // A new assignment of the same task (a later sequence) is a new fee.
    w.deliver(&assigned(t, "Re-emitted", "POP-30", a, 2))
        .await
        .unwrap();
    assert_eq!(w.rows().await.len(), 4);
}
