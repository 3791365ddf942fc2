//! TaskKeeper's copy of the users, fed by the account bus through
//! `taskkeeper::events::Users` (a `popug_eventbus::Handler`), driven here by hand on a
//! migrated database with no service running: idempotent (a replay changes nothing),
//! order-safe (only a newer version overwrites), and what it cannot read is refused for
//! good (the consumer dead-letters it).

use popug_eventbus::{Envelope, HandleError, Handler};
use popug_proto::popug::account::v1 as account_pb;
use popug_service::AccountBus;
use popug_service::{Service, TokenSettings};
use sqlx::PgPool;
use taskkeeper::events::Users;
use uuid::Uuid;

// The SQL below reads TaskKeeper's `users` table as a test sees it: it is not checked at
// compile time.

fn snapshot(id: Uuid, role: &str, active: bool, version: i64) -> account_pb::AccountSnapshot {
    account_pb::AccountSnapshot {
        id: id.to_string(),
        username: format!("user-v{version}"),
        role: role.into(),
        active,
        version,
        ..Default::default()
    }
}

#[tokio::test]
async fn account_events_apply_idempotently_and_out_of_order() {
    let settings = popug_mesh::taskkeeper_settings(
        popug_testkit::fresh_database().await,
        &popug_testkit::unique_prefix(),
        TokenSettings::DEFAULT_JWKS_URL,
    );
    taskkeeper::Application::migrate(&settings).await.unwrap();
    let pool = PgPool::connect(&settings.common.database.url)
        .await
        .unwrap();
    let users = AccountBus(Users);
    let id = Uuid::now_v7();
    let row = |pool: PgPool| async move {
        sqlx::query_as::<_, (String, String, bool, bool, i64)>(
            "SELECT username, role, active, assignable, version FROM users WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let apply = |envelope: Envelope| {
        let pool = pool.clone();
        let users = users.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            users.handle(&mut conn, &envelope).await
        }
    };

    // The update (v2: promoted to manager) arrives before the creation (v1: worker).
    let updated = popug_eventbus::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountUpdated {
            account: Some(snapshot(id, "manager", true, 2)),
            changed_fields: vec!["role".into()],
        },
    );
    let created = popug_eventbus::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountCreated {
            account: Some(snapshot(id, "worker", true, 1)),
        },
    );
    apply(updated.clone()).await.unwrap();
    apply(created.clone()).await.unwrap();
    let expected = ("user-v2".to_owned(), "manager".to_owned(), true, false, 2);
    assert_eq!(
        row(pool.clone()).await,
        expected,
        "an older event overwrote a newer one"
    );
    // Replays change nothing.
    apply(updated).await.unwrap();
    apply(created).await.unwrap();
    assert_eq!(row(pool.clone()).await, expected);

    // Back to worker (v3): assignable; then deleted (v4): never again.
    apply(popug_eventbus::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountUpdated {
            account: Some(snapshot(id, "worker", true, 3)),
            changed_fields: vec!["role".into()],
        },
    ))
    .await
    .unwrap();
    assert!(row(pool.clone()).await.3);
    apply(popug_eventbus::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountDeleted {
            account: Some(snapshot(id, "worker", false, 4)),
        },
    ))
    .await
    .unwrap();
    let (_, _, active, assignable, version) = row(pool.clone()).await;
    assert_eq!((active, assignable, version), (false, false, 4));

    // What it cannot understand is refused for good (dead-lettered by the consumer).
    let mut unknown = popug_eventbus::envelope(
        "account",
        &id.to_string(),
        &account_pb::AccountCreated {
            account: Some(snapshot(id, "worker", true, 9)),
        },
    );
    unknown.version = 2;
    assert!(matches!(
        apply(unknown).await,
        Err(HandleError::Permanent(_))
    ));
    let mut garbage = popug_eventbus::envelope(
        "account",
        "x",
        &account_pb::AccountCreated { account: None },
    );
    assert!(matches!(
        apply(garbage.clone()).await,
        Err(HandleError::Permanent(_))
    ));
    garbage.payload = vec![0xff, 0xff, 0xff].into();
    assert!(matches!(
        apply(garbage).await,
        Err(HandleError::Permanent(_))
    ));
    assert_eq!(row(pool).await.4, 4);
}
