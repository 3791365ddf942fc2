//! The outbox, relay and consumer against real PostgreSQL and NATS JetStream, each test
//! with its own database and stream prefix.
//!
//! Here: the fixture and what the topics share (events written and relayed, a recording
//! consumer). The tests, by topic:
//!
//! - [`relay`] — the outbox relay: order, message ids, crashes, one relay at a time
//! - [`consumer`] — applied once, redelivery, poison to the dead-letter stream
//! - [`dead_letters`] — dead letters listed, read and replayed

#![allow(clippy::unwrap_used)]

mod consumer;
mod dead_letters;
mod relay;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use popug_eventbus::{
    Bus, Consumer, ConsumerConfig, Envelope, HandleError, Handler, Outbox, Relay, Topology,
    Transactional, schema,
};
use popug_proto::catalog;
use popug_proto::popug::account::v1::{AccountCreated, AccountSnapshot};
use prost::Message;
use sqlx::{PgConnection, PgPool};

struct Fixture {
    pool: PgPool,
    js: jetstream::Context,
    topology: Topology,
    outbox: Outbox,
}

async fn fixture() -> Fixture {
    let pool = PgPool::connect(&popug_testkit::fresh_database().await)
        .await
        .unwrap();
    schema::migrate(&pool).await.unwrap();
    sqlx::query("CREATE TABLE effects (event_id text NOT NULL, username text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let js = popug_testkit::jetstream().await;
    let topology = Topology::new(&popug_testkit::unique_prefix()).unwrap();
    topology.ensure_streams(&js).await.unwrap();
    // Twice: stream creation must be idempotent.
    topology.ensure_streams(&js).await.unwrap();
    let outbox = Outbox::new(topology.clone(), "test");
    Fixture {
        pool,
        js,
        topology,
        outbox,
    }
}

fn created(username: &str) -> AccountCreated {
    AccountCreated {
        account: Some(AccountSnapshot {
            username: username.into(),
            version: 1,
            ..Default::default()
        }),
    }
}

async fn write_events(f: &Fixture, names: &[&str]) {
    let mut tx = f.pool.begin().await.unwrap();
    for name in names {
        f.outbox.add(&mut tx, name, &created(name)).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Every message on `bus`, in stream order.
async fn read_stream(f: &Fixture, bus: Bus) -> Vec<async_nats::jetstream::Message> {
    popug_testkit::read_stream(&f.js, &f.topology.stream(bus)).await
}

fn usernames(messages: &[async_nats::jetstream::Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            let envelope = Envelope::decode(m.payload.as_ref()).unwrap();
            catalog::open::<AccountCreated>(&envelope)
                .unwrap()
                .account
                .unwrap()
                .username
        })
        .collect()
}

/// One relay pass: publishes and marks whatever is eligible now. Waits out a relay lock
/// still held by a batch dropped earlier (its rollback runs when the pooled connection
/// is next used).
async fn relay_once(f: &Fixture) -> usize {
    let relay = Relay::new(f.pool.clone(), f.js.clone(), &f.outbox);
    let batch = popug_testkit::eventually(Duration::from_secs(5), "the relay lock", || async {
        relay.publish_pending().await.unwrap()
    })
    .await;
    batch.mark().await.unwrap()
}

async fn pending(f: &Fixture) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM eventbus.outbox WHERE published_at IS NULL")
        .fetch_one(&f.pool)
        .await
        .unwrap()
}

/// Relays until the outbox is empty; returns how many events went out. Rows become
/// eligible only once every older transaction on the server has ended (other tests
/// run concurrently), so this polls.
async fn relay_all(f: &Fixture) -> usize {
    let total = std::sync::atomic::AtomicUsize::new(0);
    popug_testkit::eventually(Duration::from_secs(10), "the outbox drained", || async {
        total.fetch_add(relay_once(f).await, Ordering::SeqCst);
        (pending(f).await == 0).then_some(())
    })
    .await;
    total.into_inner()
}

/// Records each applied event, after `delay`; fails the first `fail_first` attempts as a
/// crash would. Takes whole batches when `batched`.
struct Recorder {
    fail_first: AtomicUsize,
    attempts: Arc<AtomicUsize>,
    delay: Duration,
    batched: bool,
}

impl Handler for Recorder {
    fn batches(&self) -> bool {
        self.batched
    }

    async fn handle(
        &self,
        conn: &mut PgConnection,
        envelope: &Envelope,
    ) -> Result<(), HandleError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if !catalog::is::<AccountCreated>(envelope) {
            return Err(catalog::Unreadable::unknown(envelope).into());
        }
        let event = catalog::open::<AccountCreated>(envelope)?;
        sqlx::query("INSERT INTO effects (event_id, username) VALUES ($1, $2)")
            .bind(&envelope.event_id)
            .bind(event.account.unwrap_or_default().username)
            .execute(&mut *conn)
            .await?;
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandleError::Transient(
                "simulated crash before commit".into(),
            ));
        }
        Ok(())
    }
}

type RecorderConsumer = Consumer<Transactional<Recorder>>;

async fn consumer(f: &Fixture, fail_first: usize) -> (RecorderConsumer, Arc<AtomicUsize>) {
    consumer_with(f, fail_first, Duration::ZERO, |_| {}).await
}

/// A recorder consumer whose handler takes `delay` per event, its configuration tweaked.
async fn consumer_with(
    f: &Fixture,
    fail_first: usize,
    delay: Duration,
    tweak: impl FnOnce(&mut ConsumerConfig),
) -> (RecorderConsumer, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut config = ConsumerConfig::new("recorder", Bus::Account);
    config.retry_delay = Duration::from_millis(50);
    config.fetch_wait = Duration::from_millis(200);
    tweak(&mut config);
    let handler = Recorder {
        fail_first: AtomicUsize::new(fail_first),
        attempts: attempts.clone(),
        delay,
        batched: false,
    };
    let c = Consumer::bind(
        f.js.clone(),
        f.topology.clone(),
        config,
        Transactional::new(f.pool.clone(), handler),
    )
    .await
    .unwrap();
    (c, attempts)
}

// The test's own table: not in any migration, so not checked at compile time.
async fn effects(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT username FROM effects ORDER BY username")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A recorder consumer (failing its first `fail_first` attempts) polled until the effects
/// are `expected`; with how many attempts its handler saw.
async fn consumed(
    f: &Fixture,
    fail_first: usize,
    expected: &[&str],
) -> (RecorderConsumer, Arc<AtomicUsize>) {
    let (c, attempts) = consumer(f, fail_first).await;
    let applied = popug_testkit::eventually(Duration::from_secs(10), "effects applied", || async {
        let _ = c.poll_once().await.unwrap();
        let done = effects(&f.pool).await;
        (done.len() >= expected.len()).then_some(done)
    })
    .await;
    assert_eq!(applied, expected);
    (c, attempts)
}
