//! The outbox relay: events go out in commit order under their event ids as message ids,
//! a relay that dies before marking is covered by JetStream's duplicate window, and one
//! relay publishes at a time.

use std::time::Duration;

use popug_eventbus::{Bus, Envelope, Relay};
use prost::Message;

use crate::{created, fixture, read_stream, relay_all, relay_once, usernames, write_events};

#[tokio::test]
async fn relay_publishes_in_order_with_message_ids() {
    let f = fixture().await;
    write_events(&f, &["a", "b", "c"]).await;
    assert_eq!(relay_all(&f).await, 3);
    assert_eq!(relay_all(&f).await, 0, "nothing is published twice");

    let messages = read_stream(&f, Bus::Account).await;
    assert_eq!(usernames(&messages), ["a", "b", "c"]);
    for m in &messages {
        let envelope = Envelope::decode(m.payload.as_ref()).unwrap();
        let msg_id = m
            .headers
            .as_ref()
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str();
        assert_eq!(msg_id, envelope.event_id);
        assert_eq!(envelope.name, "account.created");
        assert_eq!(envelope.version, 1);
        assert_eq!(envelope.producer, "test");
        assert!(m.subject.starts_with(f.topology.prefix()));
    }
}

#[tokio::test]
async fn relay_killed_before_marking_republishes_and_jetstream_drops_the_copy() {
    let f = fixture().await;
    write_events(&f, &["x", "y"]).await;
    let relay = Relay::new(f.pool.clone(), f.js.clone(), &f.outbox);
    let batch =
        popug_testkit::eventually(Duration::from_secs(10), "both events eligible", || async {
            let batch = relay.publish_pending().await.unwrap().unwrap();
            if batch.len() == 2 {
                Some(batch)
            } else {
                batch.mark().await.unwrap();
                None
            }
        })
        .await;
    drop(batch); // the crash: published and acknowledged, never marked

    assert_eq!(
        relay_all(&f).await,
        2,
        "the rows are still pending and go out again"
    );
    let messages = read_stream(&f, Bus::Account).await;
    assert_eq!(
        usernames(&messages),
        ["x", "y"],
        "the duplicates were dropped by Nats-Msg-Id"
    );
}

#[tokio::test]
async fn a_transaction_that_commits_late_is_not_overtaken() {
    let f = fixture().await;
    let mut early = f.pool.begin().await.unwrap();
    f.outbox
        .add(&mut early, "early", &created("early"))
        .await
        .unwrap();
    write_events(&f, &["late"]).await;

    assert_eq!(
        relay_once(&f).await,
        0,
        "the later commit waits for the older transaction"
    );
    early.commit().await.unwrap();
    assert_eq!(relay_all(&f).await, 2);
    assert_eq!(
        usernames(&read_stream(&f, Bus::Account).await),
        ["early", "late"]
    );
}

#[tokio::test]
async fn only_one_relay_publishes_at_a_time() {
    let f = fixture().await;
    write_events(&f, &["solo"]).await;
    let a = Relay::new(f.pool.clone(), f.js.clone(), &f.outbox);
    let b = Relay::new(f.pool.clone(), f.js.clone(), &f.outbox);
    let held = popug_testkit::eventually(Duration::from_secs(10), "the event eligible", || async {
        let batch = a.publish_pending().await.unwrap().unwrap();
        if batch.is_empty() {
            batch.mark().await.unwrap();
            None
        } else {
            Some(batch)
        }
    })
    .await;
    assert!(
        b.publish_pending().await.unwrap().is_none(),
        "the lock is held"
    );
    held.mark().await.unwrap();
    assert_eq!(read_stream(&f, Bus::Account).await.len(), 1);
}
