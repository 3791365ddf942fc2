//! The outbox, relay and consumer against real PostgreSQL and NATS JetStream, each test
//! with its own database and stream prefix.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use popug_eventbus::dead_letters::{DeadLetters, Filter, Letter, Replayed, Status};
use popug_eventbus::{
    Bus, Consumer, ConsumerConfig, DeadLetter, Effect, Envelope, HandleError, Handler, Outbox,
    Relay, Stateless, Topology, Transactional, schema,
};
use popug_proto::popug::account::v1::{AccountCreated, AccountSnapshot};
use popug_proto::{catalog, upcast};
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

// ---------------------------------------------------------------------------------------
// Dead letters and their replay. The upcaster registry is per process: each test uses a
// version of account.created no other test publishes.

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
