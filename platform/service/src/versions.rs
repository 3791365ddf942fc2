//! What a hop knows of the accounts' versions, so it can refuse revoked access tokens
//! (`popug_auth::revocation`): an in-memory [`AccountVersions`], one per process, that
//! every replica keeps up to date on its own.
//!
//! - [`watch_copy`] — for a service with a copy of the users (TaskKeeper, Accounting):
//!   the whole copy read at start, then every change the account-bus consumer applies,
//!   announced with PostgreSQL `NOTIFY` when its transaction commits ([`notify`]). The
//!   consumer runs on one replica at a time; the notification reaches them all.
//! - [`follow_bus`] — for a hop without one (the gateway): an ordered (ephemeral,
//!   per-replica) consumer reads the account bus from its start, then every new event.
//!
//! Until either has seen an account, tokens of that account are accepted as before.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures::StreamExt;
use popug_auth::AccountVersions;
use popug_eventbus::{Bus, Envelope};
use popug_proto::upcast;
use prost::Message;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::settings::BusSettings;
use crate::users::UserCopy;

/// The PostgreSQL channel account versions are announced on (per database).
pub const CHANNEL: &str = "popug_account_versions";

/// Pause before following again after the database or NATS went away.
const RETRY: Duration = Duration::from_secs(1);

/// Announces that `account` is now at `version` to every replica listening on the
/// database ([`watch_copy`]), when the transaction `conn` is in commits (not at all if it
/// rolls back).
pub async fn notify(conn: &mut PgConnection, account: Uuid, version: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(format!("{account} {version}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Keeps `versions` in step with the service's copy of the users until `stop` resolves:
/// listens on [`CHANNEL`], then reads the whole copy (so nothing committed in between is
/// missed), then applies each announcement; a lost connection starts it over.
pub async fn watch_copy<C: UserCopy>(
    pool: PgPool,
    copy: C,
    versions: Arc<AccountVersions>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    // The listener's one connection comes from a pool of its own: the service's pool
    // keeps all of its connections for requests and consumers.
    let listening = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut last_error = String::new();
    loop {
        let outcome = tokio::select! {
            () = &mut stop => return,
            outcome = watch_once(&listening, &pool, &copy, &versions) => outcome,
        };
        let error = match outcome {
            Ok(()) => "connection lost".to_owned(),
            Err(error) => error.to_string(),
        };
        if error != last_error {
            tracing::warn!(%error, "account versions: not following the user copy; retrying");
            last_error = error;
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// One connection's worth of [`watch_copy`]: returns when the connection is lost.
async fn watch_once<C: UserCopy>(
    listening: &PgPool,
    pool: &PgPool,
    copy: &C,
    versions: &AccountVersions,
) -> sqlx::Result<()> {
    let mut listener = PgListener::connect_with(listening).await?;
    listener.listen(CHANNEL).await?;
    let mut conn = pool.acquire().await?;
    let all = copy.versions(&mut conn).await?;
    drop(conn);
    let read = all.len();
    versions.observe_all(all);
    tracing::debug!(accounts = read, "account versions read from the user copy");
    while let Some(notification) = listener.try_recv().await? {
        match parse(notification.payload()) {
            Some((account, version)) => versions.observe(account, version),
            None => tracing::warn!(
                payload = notification.payload(),
                "account versions: unreadable notification"
            ),
        }
    }
    Ok(())
}

/// `"<uuid> <version>"`, as [`notify`] writes it.
fn parse(payload: &str) -> Option<(Uuid, i64)> {
    let (account, version) = payload.split_once(' ')?;
    Some((account.parse().ok()?, version.parse().ok()?))
}

/// Keeps `versions` in step with the account bus until `stop` resolves, on this replica:
/// every account event from the start of the stream, then each new one as it is
/// published. Retries while NATS is away.
pub async fn follow_bus(
    bus: BusSettings,
    versions: Arc<AccountVersions>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last_error = String::new();
    loop {
        let outcome = tokio::select! {
            () = &mut stop => return,
            outcome = follow_once(&bus, &versions) => outcome,
        };
        let error = match outcome {
            Ok(()) => "the account stream ended".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if error != last_error {
            tracing::warn!(%error, "account versions: not following the account bus; retrying");
            last_error = error;
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

async fn follow_once(bus: &BusSettings, versions: &AccountVersions) -> anyhow::Result<()> {
    let (js, topology) = crate::connect::bus(bus).await?;
    let stream = js.get_stream(topology.stream(Bus::Account)).await?;
    // Ordered: ephemeral, unacknowledged, recreated by the client on any gap; each
    // replica reads every event itself.
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await?;
    let mut messages = std::pin::pin!(consumer.messages().await?);
    tracing::debug!("account versions: following the account bus");
    while let Some(message) = messages.next().await {
        observe_event(versions, &message?.payload);
    }
    Ok(())
}

/// Records the version an account event carries; anything unreadable is skipped (the
/// durable consumers dead-letter it).
fn observe_event(versions: &AccountVersions, payload: &[u8]) {
    let change = Envelope::decode(payload)
        .map_err(|e| e.to_string())
        .and_then(|envelope| upcast::current(envelope).map_err(|u| u.0))
        .and_then(|envelope| upcast::account_change(&envelope).map_err(|u| u.0));
    match change {
        Ok(change) => versions.observe(change.id, change.account.version),
        Err(reason) => tracing::debug!(%reason, "account versions: event skipped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_read_back() {
        let id = Uuid::from_u128(7);
        assert_eq!(parse(&format!("{id} 12")), Some((id, 12)));
        assert_eq!(parse("nope 1"), None);
        assert_eq!(parse(&id.to_string()), None);
    }
}
