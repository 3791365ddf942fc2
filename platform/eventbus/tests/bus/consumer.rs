//! Consumers: an event applied once however often it comes, a batch redelivered when its
//! consumer dies and not while it is still applied, and poison dead-lettered while the
//! consumer carries on (transactional and stateless alike).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use popug_eventbus::{
    Bus, Consumer, ConsumerConfig, DeadLetter, Effect, Envelope, HandleError, Stateless,
};
use popug_proto::catalog;
use popug_proto::popug::account::v1::AccountCreated;
use prost::Message;

use crate::{
    Fixture, consumed, consumer, consumer_with, created, effects, fixture, read_stream, relay_all,
    write_events,
};

#[tokio::test]
async fn a_redelivered_event_is_applied_once() {
    let f = fixture().await;
    write_events(&f, &["dup"]).await;
    relay_all(&f).await;
    // The same envelope again under another message id: JetStream cannot drop it, the
    // consumer must.
    let original = read_stream(&f, Bus::Account).await.remove(0);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "another-id");
    f.js.publish_with_headers(original.subject.clone(), headers, original.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();

    let (c, attempts) = consumed(&f, 0, &["dup"]).await;
    // Both copies consumed and acked, still one effect.
    let _ = c.poll_once().await.unwrap();
    assert_eq!(effects(&f.pool).await, ["dup"]);
    let seen = attempts.load(Ordering::SeqCst);
    assert_eq!(seen, 1, "the copy never reached the handler");
}

#[tokio::test]
async fn a_consumer_that_crashes_before_commit_gets_the_event_again_and_applies_it_once() {
    let f = fixture().await;
    write_events(&f, &["retry"]).await;
    relay_all(&f).await;
    let (_, attempts) = consumed(&f, 1, &["retry"]).await;
    let seen = attempts.load(Ordering::SeqCst);
    assert_eq!(seen, 2, "first attempt rolled back, second applied");
}

/// A consumer that dies in the middle of a batch (no ack, no nak: its process is gone)
/// leaves the batch to the next consumer after the ack wait (5 s), not JetStream's
/// default 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_consumer_died_is_redelivered_within_the_ack_wait() {
    let f = fixture().await;
    write_events(&f, &["crash-a", "crash-b"]).await;
    relay_all(&f).await;
    let (dying, dying_attempts) = consumer_with(&f, 0, Duration::from_secs(3600), |_| {}).await;
    let batch = tokio::spawn(async move { dying.poll_once().await });
    popug_testkit::eventually(
        Duration::from_secs(10),
        "the batch in the handler",
        || async { (dying_attempts.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    batch.abort();
    let crashed = std::time::Instant::now();

    let (c, _) = consumer(&f, 0).await;
    popug_testkit::eventually(Duration::from_secs(10), "the batch redelivered", || async {
        let _ = c.poll_once().await.unwrap();
        (effects(&f.pool).await.len() == 2).then_some(())
    })
    .await;
    let took = crashed.elapsed();
    println!("redelivered and applied {took:?} after the crash");
    // The ack wait runs from the delivery, which came before the crash; 500 ms for the
    // second consumer's fetch and transaction.
    assert!(took <= Duration::from_millis(5500), "took {took:?}");
    assert_eq!(effects(&f.pool).await, ["crash-a", "crash-b"]);
}

/// A batch that takes longer than the ack wait is not handed to another consumer while it
/// is still being applied: progress acks keep it, and each event is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_batch_is_not_redelivered_while_it_is_applied() {
    let f = fixture().await;
    write_events(&f, &["slow"]).await;
    relay_all(&f).await;
    let short = |c: &mut ConsumerConfig| c.ack_wait = Duration::from_secs(1);
    let (slow, slow_attempts) = consumer_with(&f, 0, Duration::from_secs(3), short).await;
    let (other, other_attempts) = consumer_with(&f, 0, Duration::ZERO, short).await;
    let batch = tokio::spawn(async move { slow.poll_once().await });
    popug_testkit::eventually(
        Duration::from_secs(10),
        "the batch in the handler",
        || async { (slow_attempts.load(Ordering::SeqCst) > 0).then_some(()) },
    )
    .await;
    // Three ack waits while the slow batch is applied: the other consumer gets nothing.
    let watching = std::time::Instant::now();
    while !batch.is_finished() {
        assert_eq!(
            other.poll_once().await.unwrap(),
            0,
            "redelivered after {:?}",
            watching.elapsed()
        );
    }
    assert_eq!(batch.await.unwrap().unwrap(), 1);
    assert_eq!(other.poll_once().await.unwrap(), 0);
    assert_eq!(effects(&f.pool).await, ["slow"]);
    assert_eq!(slow_attempts.load(Ordering::SeqCst), 1);
    assert_eq!(other_attempts.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_stream_and_the_consumer_carries_on() {
    let f = fixture().await;
    // Not an envelope at all.
    f.js.publish(f.topology.subject("account.created"), "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // An envelope of an unknown version.
    publish_from_the_future(&f).await;
    write_events(&f, &["good"]).await;
    relay_all(&f).await;

    consumed(&f, 0, &["good"]).await;

    let letters: Vec<DeadLetter> = read_stream(&f, Bus::DeadLetter)
        .await
        .iter()
        .map(|m| DeadLetter::decode(m.payload.as_ref()).unwrap())
        .collect();
    assert_eq!(letters.len(), 2);
    assert!(
        letters[0].reason.contains("undecodable envelope"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].original.as_ref(), b"garbage");
    assert!(letters[1].reason.contains("v99"), "{}", letters[1].reason);
    assert!(letters.iter().all(|l| l.consumer == "recorder"));
}

/// Publishes an `account.created` of a version no consumer knows (99).
async fn publish_from_the_future(f: &Fixture) {
    let mut future = popug_eventbus::envelope("test", "k", &created("future"));
    future.version = 99;
    let subject = f.topology.subject("account.created");
    let ack = f.js.publish(subject, future.encode_to_vec().into()).await;
    ack.unwrap().await.unwrap();
}

/// Remembers the usernames it saw; refuses every event but account.created v1.
#[derive(Clone, Default)]
struct Names(Arc<std::sync::Mutex<Vec<String>>>);

impl Effect for Names {
    async fn apply(&self, envelopes: &[Envelope]) -> Result<(), HandleError> {
        let mut seen = Vec::new();
        for envelope in envelopes {
            if !catalog::is::<AccountCreated>(envelope) {
                return Err(catalog::Unreadable::unknown(envelope).into());
            }
            let event = catalog::open::<AccountCreated>(envelope)?;
            seen.push(event.account.unwrap_or_default().username);
        }
        self.0.lock().unwrap().extend(seen);
        Ok(())
    }
}

#[tokio::test]
async fn a_stateless_consumer_applies_what_it_can_and_dead_letters_the_rest() {
    let f = fixture().await;
    write_events(&f, &["first"]).await;
    publish_from_the_future(&f).await;
    relay_all(&f).await;
    write_events(&f, &["second"]).await;
    relay_all(&f).await;

    let names = Names::default();
    let mut config = ConsumerConfig::new("names", Bus::Account);
    config.fetch_wait = Duration::from_millis(200);
    let c = Consumer::bind(
        f.js.clone(),
        f.topology.clone(),
        config,
        Stateless(names.clone()),
    )
    .await
    .unwrap();
    popug_testkit::eventually(Duration::from_secs(10), "both accounts seen", || async {
        let _ = c.poll_once().await.unwrap();
        let seen = names.0.lock().unwrap().clone();
        (seen.len() >= 2).then_some(())
    })
    .await;
    let mut seen = names.0.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        ["first", "second"],
        "the refused event stopped nothing"
    );
    let letters: Vec<DeadLetter> = read_stream(&f, Bus::DeadLetter)
        .await
        .iter()
        .map(|m| DeadLetter::decode(m.payload.as_ref()).unwrap())
        .collect();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].consumer, "names");
    assert!(letters[0].reason.contains("v99"), "{}", letters[0].reason);
}
