//! Fixtures shared by the test binaries, against real servers only.
//!
//! - [`fresh_database`] creates an empty PostgreSQL database named for the test run.
//! - [`unique_prefix`] gives a NATS subject/stream prefix no other test uses.
//! - [`eventually`] polls a condition until a deadline instead of sleeping.
//! - [`servers`] starts private PostgreSQL and NATS servers a fault test may stop.
//!
//! Servers come from `POPUG_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `POPUG_TEST_NATS_URL`
//! (default `nats://127.0.0.1:4222`); `deploy/test.sh` starts them.

#![allow(clippy::unwrap_used)] // Test fixtures: a failure should stop the test loudly.

pub mod servers;

use std::future::Future;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// Maintenance URL of the test PostgreSQL server.
pub fn pg_admin_url() -> String {
    std::env::var("POPUG_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn nats_url() -> String {
    std::env::var("POPUG_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub fn redis_url() -> String {
    std::env::var("POPUG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Creates an empty database `popug_test_<random>` and returns its URL. `deploy/test.sh`
/// drops leftovers of earlier runs before it starts.
pub async fn fresh_database() -> String {
    fresh_database_on(&pg_admin_url()).await
}

/// [`fresh_database`] on the server of maintenance URL `admin`.
pub async fn fresh_database_on(admin: &str) -> String {
    let admin = admin.to_owned();
    let name = format!("popug_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    match admin.rfind('/') {
        Some(slash) => format!("{}/{name}", &admin[..slash]),
        None => panic!("POPUG_TEST_PG_URL must end with /<database>"),
    }
}

/// A NATS prefix no other test shares, e.g. `t3f9a0c1d2e`.
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// A JetStream context on the test NATS server.
pub async fn jetstream() -> async_nats::jetstream::Context {
    let url = nats_url();
    let client = async_nats::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test NATS at {url}: {e}"));
    async_nats::jetstream::new(client)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every message currently in `stream`, in stream order, read by a throwaway consumer
/// (acks none, so the stream's durable consumers are unaffected).
pub async fn read_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<async_nats::jetstream::Message> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let stream = js.get_stream(stream).await.unwrap();
    let expected = stream.get_info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        let mut batch = consumer
            .fetch()
            .max_messages(expected - out.len())
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(message) = futures::StreamExt::next(&mut batch).await {
            out.push(message.unwrap());
        }
    }
    out
}
