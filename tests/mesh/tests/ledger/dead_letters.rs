//! Dead letters operated through `accounting dead-letters` (the function the binary
//! calls, command line parsing included): an event of a version Accounting cannot read
//! is dead-lettered and books nothing; once Accounting learns the version (an upcaster
//! registered in its process), replaying the letter books it exactly once, however often
//! it is replayed or copied.

use popug_mesh::WAIT;
use popug_proto::catalog::Unreadable;
use popug_proto::upcast;
use popug_service::dead_letters::{self, Output, Report, Row};

use super::*;

/// The imagined `task.assigned` v9: only which task went to whom (a `ReassignedTask` on
/// the wire), no text.
fn assigned_v9(task: Uuid, assignee: Uuid, sequence: i64) -> Envelope {
    let mut envelope = assigned(task, "", "", assignee, sequence);
    envelope.version = 9;
    envelope.payload = tasks_pb::ReassignedTask {
        task_id: task.to_string(),
        assignee_id: assignee.to_string(),
        sequence,
    }
    .encode_to_vec()
    .into();
    envelope
}

/// What Accounting's next build would know: v9 read as the current `task.assigned`.
fn learn_v9() {
    upcast::register::<tasks_pb::TaskAssigned>(9, |payload| {
        let v9 =
            tasks_pb::ReassignedTask::decode(payload).map_err(|e| Unreadable(e.to_string()))?;
        Ok(tasks_pb::TaskAssigned {
            task_id: v9.task_id,
            assignee_id: v9.assignee_id,
            sequence: v9.sequence,
            status: "open".into(),
            ..Default::default()
        })
    });
}

/// `accounting dead-letters <args>` with Accounting's own settings.
async fn accounting_dead_letters(w: &Mesh, args: &[&str]) -> Output {
    let settings = &w.accounting().settings;
    dead_letters::run::<accounting::Application>(settings, args)
        .await
        .unwrap_or_else(|e| panic!("dead-letters {args:?}: {e}"))
}

async fn listed(w: &Mesh, args: &[&str]) -> Vec<Row> {
    match accounting_dead_letters(w, args).await.report {
        Report::List(rows) => rows,
        other => panic!("not a list: {other:?}"),
    }
}

/// The outcome the task consumer's processed-events row records for `envelope`.
async fn outcome(w: &Mesh, envelope: &Envelope) -> Option<String> {
    sqlx::query_scalar(
        "SELECT outcome FROM eventbus.processed_events
         WHERE consumer = 'accounting-tasks' AND event_id = $1::uuid",
    )
    .bind(&envelope.event_id)
    .fetch_optional(&w.accounting().pool)
    .await
    .unwrap()
}

async fn entries_of(w: &Mesh, task: Uuid) -> usize {
    w.rows()
        .await
        .iter()
        .filter(|r| r.task_id == Some(task))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_event_is_booked_once_by_its_replay_after_the_consumer_learns_its_version() {
    let w = ledger_mesh().await;
    let (task, user) = (Uuid::now_v7(), Uuid::now_v7());
    let v9 = assigned_v9(task, user, 1);
    w.publish(&v9).await;
    w.publish(&assigned(Uuid::now_v7(), "Marker", "", user, 1))
        .await;
    w.wait_for_entries("the marker booked", 1).await;

    // Listed, for a human and for a script.
    let rows = popug_testkit::eventually(WAIT, "the v9 letter listed", || async {
        let rows = listed(&w, &["list", "--json"]).await;
        (rows.len() == 1).then_some(rows)
    })
    .await;
    let row = &rows[0];
    assert_eq!(row.consumer, "accounting-tasks");
    assert_eq!(row.subject, w.topology.subject("task.assigned"));
    assert_eq!(
        (row.event.as_deref(), row.version),
        (Some("task.assigned"), Some(9))
    );
    assert_eq!(row.event_id.as_deref(), Some(v9.event_id.as_str()));
    assert_eq!(row.status, "dead");
    assert!(row.reason.contains("task.assigned v9"), "{}", row.reason);
    assert!(row.failed_at.is_some());
    let table = accounting_dead_letters(&w, &["list", "--consumer", "accounting-tasks"])
        .await
        .to_string();
    println!("{table}");
    assert!(table.contains("task.assigned v9") && table.contains(&v9.event_id));
    assert!(table.ends_with("1 dead letter\n"), "{table}");
    let json = accounting_dead_letters(&w, &["list", "--json"])
        .await
        .to_string();
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed[0]["event_id"], v9.event_id.as_str());
    // Filters that leave it out.
    for args in [
        &["list", "--consumer", "accounting-users"][..],
        &["list", "--event", "task.completed"],
        &["list", "--version", "1"],
        &["list", "--since", "2999-01-01T00:00:00Z"],
        &["list", "--until", "1h"],
    ] {
        assert!(listed(&w, args).await.is_empty(), "{args:?}");
    }
    assert_eq!(entries_of(&w, task).await, 0, "nothing booked for v9");
    assert_eq!(outcome(&w, &v9).await.as_deref(), Some("dead"));

    // Shown: the payload cannot be read yet.
    let sequence = row.sequence.to_string();
    let shown = accounting_dead_letters(&w, &["show", &sequence]).await;
    let Report::Show(detail) = &shown.report else {
        panic!("not a letter: {shown:?}");
    };
    assert!(detail.payload.is_none());
    assert!(detail.raw_base64.is_some());
    println!("{shown}");

    // Accounting learns v9: the letter now shows as the current version.
    learn_v9();
    let shown = accounting_dead_letters(&w, &["show", &sequence, "--json"]).await;
    let Report::Show(detail) = &shown.report else {
        panic!("not a letter: {shown:?}");
    };
    assert_eq!(detail.payload_message, Some("popug.tasks.v1.TaskAssigned"));
    assert_eq!(detail.payload_upcast_to, Some(1));
    let payload = detail.payload.as_ref().unwrap();
    assert_eq!(payload["taskId"], task.to_string().as_str(), "{payload}");
    println!(
        "{}",
        accounting_dead_letters(&w, &["show", &sequence]).await
    );

    // A dry run changes nothing.
    let dry = accounting_dead_letters(&w, &["replay", "--all", "--dry-run"]).await;
    let Report::Replay(planned) = &dry.report else {
        panic!("not a replay: {dry:?}");
    };
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].outcome, "would-republish");
    assert_eq!(listed(&w, &["list"]).await.len(), 1);

    // Replayed by event: booked once, the letter gone.
    let replay = accounting_dead_letters(
        &w,
        &["replay", "--event", "task.assigned", "--version", "9"],
    )
    .await;
    println!("{replay}");
    let Report::Replay(done) = &replay.report else {
        panic!("not a replay: {replay:?}");
    };
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome, "republished");
    assert!(done[0].removed);
    assert_eq!(replay.report.failures(), 0);
    w.wait_for_entries("the replayed assignment booked", 2)
        .await;
    assert_eq!(entries_of(&w, task).await, 1);
    assert_eq!(outcome(&w, &v9).await.as_deref(), Some("applied"));
    assert!(listed(&w, &["list"]).await.is_empty());

    // Replayed again: nothing is left to replay.
    let again = accounting_dead_letters(&w, &["replay", "--all"]).await;
    assert_eq!(again.report, Report::Replay(vec![]));
    assert_eq!(again.to_string(), "no dead letters to replay\n");
    // A copy of the event after all (a replay racing the first, or past JetStream's
    // duplicate window): skipped by the processed-events row.
    w.publish(&v9).await;
    w.publish(&assigned(Uuid::now_v7(), "Second marker", "", user, 1))
        .await;
    w.wait_for_entries("the second marker booked", 3).await;
    assert_eq!(entries_of(&w, task).await, 1, "booked once");
    assert!(listed(&w, &["list"]).await.is_empty());
    assert_eq!(
        accounting_dead_letters(&w, &["list"]).await.to_string(),
        "no dead letters\n"
    );
    w.assert_invariants().await;
    upcast::unregister("task.assigned", 9);
}
