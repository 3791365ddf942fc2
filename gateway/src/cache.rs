//! The read-through cache in Redis, for what is safe to share: public profiles (no
//! e-mail, no permissions) and task prices (the same for everyone, never changed). Keys
//! hold no user-specific data, so no user can ever be served another user's private data;
//! private answers (balances, audit logs, one's own tasks) are never cached.
//!
//! Redis down or slow is not an error: every operation has a short timeout, after which
//! the request goes on uncached, a warning is logged and `gateway_cache_errors_total`
//! counts it. The connection is retried in the background.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use popug_metrics::names;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// This cache's own counts (the tests read them); `/metrics` has the process's totals
/// (`gateway_cache_*_total`).
#[derive(Default)]
pub struct CacheMetrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub errors: AtomicU64,
}

pub struct Cache {
    client: Option<redis::Client>,
    connection: Mutex<Option<ConnectionManager>>,
    /// When the last connection attempt failed, to retry at most every few seconds.
    last_attempt: Mutex<Option<Instant>>,
    /// Namespace of every key (per deployment; per test).
    prefix: String,
    pub ttl: Duration,
    /// Longest a cache operation may take before the request goes on without it.
    op_timeout: Duration,
    pub metrics: CacheMetrics,
}

impl Cache {
    /// A cache on `url` (`None`: caching off). Never fails: Redis may come later.
    pub fn new(url: Option<&str>, prefix: &str, ttl: Duration) -> Cache {
        let client = url.and_then(|url| match redis::Client::open(url) {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::warn!(%error, "Redis URL unusable; caching is off");
                None
            }
        });
        for name in [
            names::GATEWAY_CACHE_HITS,
            names::GATEWAY_CACHE_MISSES,
            names::GATEWAY_CACHE_ERRORS,
        ] {
            metrics::counter!(name).increment(0);
        }
        Cache {
            client,
            connection: Mutex::new(None),
            last_attempt: Mutex::new(None),
            prefix: prefix.to_owned(),
            ttl,
            op_timeout: Duration::from_millis(100),
            metrics: CacheMetrics::default(),
        }
    }

    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    async fn connection(&self) -> Option<ConnectionManager> {
        let client = self.client.as_ref()?;
        if let Some(conn) = self
            .connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(conn);
        }
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.op_timeout))
            .set_response_timeout(Some(self.op_timeout))
            .set_number_of_retries(1);
        match ConnectionManager::new_with_config(client.clone(), config).await {
            Ok(conn) => {
                tracing::info!("connected to Redis");
                *self.connection.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                Some(conn)
            }
            Err(error) => {
                self.failed("connect", &error);
                None
            }
        }
    }

    fn failed(&self, op: &str, error: &dyn std::fmt::Display) {
        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::GATEWAY_CACHE_ERRORS).increment(1);
        tracing::warn!(op, %error, "Redis unavailable; serving uncached");
    }

    /// The values of `keys`; all `None` when Redis is away.
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<Vec<u8>>> {
        let misses = || vec![None; keys.len()];
        if keys.is_empty() {
            return Vec::new();
        }
        let Some(mut conn) = self.connection().await else {
            return misses();
        };
        let found: Vec<Option<Vec<u8>>> =
            match tokio::time::timeout(self.op_timeout, conn.mget(keys)).await {
                Ok(Ok(values)) => values,
                Ok(Err(error)) => {
                    self.failed("mget", &error);
                    return misses();
                }
                Err(_) => {
                    self.failed("mget", &"timed out");
                    return misses();
                }
            };
        let hits = found.iter().filter(|v| v.is_some()).count() as u64;
        let misses = keys.len() as u64 - hits;
        self.metrics.hits.fetch_add(hits, Ordering::Relaxed);
        self.metrics.misses.fetch_add(misses, Ordering::Relaxed);
        metrics::counter!(names::GATEWAY_CACHE_HITS).increment(hits);
        metrics::counter!(names::GATEWAY_CACHE_MISSES).increment(misses);
        found
    }

    /// Stores `items` with the TTL, in one round trip; failures only count.
    pub async fn put_many(&self, items: Vec<(String, Vec<u8>)>) {
        if items.is_empty() {
            return;
        }
        let Some(mut conn) = self.connection().await else {
            return;
        };
        let mut pipe = redis::pipe();
        for (key, value) in items {
            pipe.set_ex(key, value, self.ttl.as_secs().max(1)).ignore();
        }
        match tokio::time::timeout(self.op_timeout, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.failed("set", &error),
            Err(_) => self.failed("set", &"timed out"),
        }
    }

    /// Forgets `keys` (event-driven invalidation). Errors are returned so the caller can
    /// retry the event.
    pub async fn delete(&self, keys: &[String]) -> Result<(), String> {
        if self.client.is_none() {
            // Caching is off: nothing can be stale.
            return Ok(());
        }
        let Some(mut conn) = self.connection().await else {
            return Err("Redis unavailable".into());
        };
        match tokio::time::timeout(self.op_timeout, conn.del::<_, ()>(keys)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.failed("del", &error);
                Err(error.to_string())
            }
            Err(_) => {
                self.failed("del", &"timed out");
                Err("timed out".into())
            }
        }
    }
}
