//! Dead letters and their replay: a dead event keeps its row, marked dead, and nothing of
//! it; its replay applies it once, alone or in a batch with its copies. The upcaster
//! registry is per process: each test uses a version of account.created no other test
//! publishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use popug_eventbus::dead_letters::{DeadLetters, Filter, Letter, Replayed, Status};
use popug_eventbus::{Bus, Consumer, ConsumerConfig, Envelope, Transactional};
use popug_proto::popug::account::v1::AccountCreated;
use popug_proto::{catalog, upcast};
use prost::Message;

use crate::{
    Fixture, Recorder, RecorderConsumer, consumer, created, effects, fixture, read_stream,
    relay_all, write_events,
};

/// A recorder consumer that takes whole batches (the set-based path of the sink).
async fn batched_consumer(f: &Fixture) -> (RecorderConsumer, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut config = ConsumerConfig::new("recorder", Bus::Account);
    config.retry_delay = Duration::from_millis(50);
    config.fetch_wait = Duration::from_millis(200);
    let handler = Recorder {
        fail_first: AtomicUsize::new(0),
        attempts: attempts.clone(),
        delay: Duration::ZERO,
        batched: true,
    };
    let sink = Transactional::new(f.pool.clone(), handler);
    let c = Consumer::bind(f.js.clone(), f.topology.clone(), config, sink)
        .await
        .unwrap();
    (c, attempts)
}

/// An `account.created` for `username` at `version`, not yet published.
fn from_version(username: &str, version: i32) -> Envelope {
    let mut envelope = popug_eventbus::envelope("test", username, &created(username));
    envelope.version = version;
    envelope
}

/// Publishes `envelope` on its subject (JetStream keeps every copy: no message id).
async fn publish(f: &Fixture, envelope: &Envelope) {
    let subject = f.topology.subject(&envelope.name);
    let ack = f.js.publish(subject, envelope.encode_to_vec().into()).await;
    ack.unwrap().await.unwrap();
}

/// From now on account.created `version` reads as v1 (its payload is a v1 one).
fn learn(version: i32) {
    upcast::register::<AccountCreated>(version, |payload| {
        AccountCreated::decode(payload).map_err(|e| catalog::Unreadable(e.to_string()))
    });
}

/// The outcome column of the recorder's row for `envelope` (None: no row).
async fn outcome(f: &Fixture, envelope: &Envelope) -> Option<String> {
    sqlx::query_scalar(
        "SELECT outcome FROM eventbus.processed_events
         WHERE consumer = 'recorder' AND event_id = $1::uuid",
    )
    .bind(&envelope.event_id)
    .fetch_optional(&f.pool)
    .await
    .unwrap()
}

fn recorder_letters(f: &Fixture) -> DeadLetters {
    DeadLetters::new(
        f.js.clone(),
        f.topology.clone(),
        &["recorder"],
        Some(f.pool.clone()),
    )
}

/// Polls `c` until `letters` lists `n` dead letters; returns them.
async fn dead(c: &RecorderConsumer, letters: &DeadLetters, n: usize) -> Vec<Letter> {
    popug_testkit::eventually(Duration::from_secs(10), "the dead letters", || async {
        let _ = c.poll_once().await.unwrap();
        let listed = letters.list(&Filter::default()).await.unwrap();
        (listed.len() == n).then_some(listed)
    })
    .await
}

/// Polls `c` until the effects are `expected`.
async fn applied(f: &Fixture, c: &RecorderConsumer, expected: &[&str]) {
    let done = popug_testkit::eventually(Duration::from_secs(10), "effects applied", || async {
        let _ = c.poll_once().await.unwrap();
        let done = effects(&f.pool).await;
        (done.len() >= expected.len()).then_some(done)
    })
    .await;
    assert_eq!(done, expected);
}

/// A refused event keeps its row, marked dead, and nothing of it; its replay, once the
/// consumer reads its version, applies it once and marks the row applied. Replayed again
/// (same message id) JetStream drops the copy; any other copy is skipped by the row, and
/// a letter of an applied event is not republished at all.
#[tokio::test]
async fn a_dead_event_is_applied_once_by_its_replay() {
    let f = fixture().await;
    let future = from_version("seventy-seven", 77);
    publish(&f, &future).await;
    let (c, attempts) = consumer(&f, 0).await;
    let letters = recorder_letters(&f);
    let listed = dead(&c, &letters, 1).await;
    let letter = &listed[0];
    assert_eq!(
        letter.event_id().map(|id| id.to_string()),
        Some(future.event_id.clone())
    );
    assert_eq!(letter.event(), Some(("account.created", 77)));
    assert!(letter.reason.contains("v77"), "{}", letter.reason);
    assert_eq!(letter.subject, f.topology.subject("account.created"));
    assert_eq!(outcome(&f, &future).await.as_deref(), Some("dead"));
    assert_eq!(letters.status(letter).await.unwrap(), Status::Dead);
    assert!(effects(&f.pool).await.is_empty());
    let payload = popug_eventbus::dead_letters::payload(letter.envelope.as_ref().unwrap());
    assert!(
        payload.json.is_none() && payload.error.is_some(),
        "{payload:?}"
    );

    // Replayed before the consumer can read it: refused again, a new letter, still dead.
    letters.replay(letter).await.unwrap();
    let listed = popug_testkit::eventually(Duration::from_secs(10), "a new letter", || async {
        let _ = c.poll_once().await.unwrap();
        let listed = letters.list(&Filter::default()).await.unwrap();
        (listed.len() == 1 && listed[0].sequence != letter.sequence).then_some(listed)
    })
    .await;
    let letter = &listed[0];
    assert_eq!(outcome(&f, &future).await.as_deref(), Some("dead"));
    assert!(effects(&f.pool).await.is_empty());

    learn(77);
    let payload = popug_eventbus::dead_letters::payload(letter.envelope.as_ref().unwrap());
    assert_eq!(payload.upcast_to, Some(1));
    assert_eq!(payload.message, Some("popug.account.v1.AccountCreated"));
    let json = payload.json.unwrap();
    assert_eq!(json["account"]["username"], "seventy-seven", "{json}");

    let replayed = letters.replay(letter).await.unwrap();
    assert!(
        matches!(
            replayed,
            Replayed::Republished {
                duplicate: false,
                ..
            }
        ),
        "{replayed:?}"
    );
    applied(&f, &c, &["seventy-seven"]).await;
    assert_eq!(outcome(&f, &future).await.as_deref(), Some("applied"));
    assert!(
        letters.list(&Filter::default()).await.unwrap().is_empty(),
        "the replayed letter is deleted"
    );
    assert_eq!(letters.get(letter.sequence).await.unwrap(), None);
    let seen = attempts.load(Ordering::SeqCst);

    // The same replay again, within the duplicate window: dropped at publish.
    assert!(letters.republish(letter).await.unwrap().duplicate);
    // A copy under another id (after the window, a copy still on its way): skipped by
    // the row, the handler never sees it.
    publish(&f, &future).await;
    write_events(&f, &["marker"]).await;
    relay_all(&f).await;
    applied(&f, &c, &["marker", "seventy-seven"]).await;
    assert_eq!(attempts.load(Ordering::SeqCst), seen + 1, "only the marker");
    // A letter whose event is applied is not republished, only deleted.
    assert_eq!(letters.status(letter).await.unwrap(), Status::Applied);
    assert_eq!(
        letters.replay(letter).await.unwrap(),
        Replayed::AlreadyApplied
    );
    // The original, two replays, the copy and the marker.
    assert_eq!(
        read_stream(&f, Bus::Account).await.len(),
        5,
        "nothing more published"
    );
    upcast::unregister("account.created", 77);
}

/// The set-based path of the sink: a batch refused as a whole is applied one by one and
/// its dead event marked dead; a later batch holding the replay, another copy of the same
/// event and a fresh one turns the dead row applied once.
#[tokio::test]
async fn a_batch_applies_a_dead_event_once_with_its_copies() {
    let f = fixture().await;
    let future = from_version("seventy-six", 76);
    publish(&f, &future).await;
    write_events(&f, &["first"]).await;
    relay_all(&f).await;
    let (c, attempts) = batched_consumer(&f).await;
    let letters = recorder_letters(&f);
    let listed = dead(&c, &letters, 1).await;
    applied(&f, &c, &["first"]).await;
    assert_eq!(outcome(&f, &future).await.as_deref(), Some("dead"));

    learn(76);
    // Replay, a copy under another id and a fresh event, all before the next fetch.
    let replayed = letters.replay(&listed[0]).await.unwrap();
    assert!(
        matches!(replayed, Replayed::Republished { .. }),
        "{replayed:?}"
    );
    publish(&f, &future).await;
    write_events(&f, &["second"]).await;
    relay_all(&f).await;
    let before = attempts.load(Ordering::SeqCst);
    applied(&f, &c, &["first", "second", "seventy-six"]).await;
    assert_eq!(outcome(&f, &future).await.as_deref(), Some("applied"));
    assert_eq!(
        attempts.load(Ordering::SeqCst) - before,
        2,
        "the two copies reached the handler once"
    );
    assert!(letters.list(&Filter::default()).await.unwrap().is_empty());
    upcast::unregister("account.created", 76);
}
