//! The account bus: every change publishes exactly one event, in order, and the outbox
//! is drained; a create retried with its idempotency key publishes one.

use popug_eventbus::Bus;
use popug_mesh::call::assert_field_error;
use popug_mesh::{Mesh, wait_for_count, with_token};
use popug_proto::catalog;
use popug_proto::popug::account::v1 as pb;

use crate::{set_role, with_worker};

#[tokio::test]
async fn every_change_publishes_exactly_one_event() {
    let (mesh, worker) = with_worker("eventful").await;
    let admin = mesh.admin.clone();
    let role = set_role(&worker.id, pb::Role::Manager);
    mesh.update_account(&admin, role.clone()).await.unwrap();
    // The same change again changes nothing and publishes nothing; likewise a second
    // delete.
    mesh.update_account(&admin, role).await.unwrap();
    mesh.delete_account(&admin, &worker.id).await.unwrap();
    mesh.delete_account(&admin, &worker.id).await.unwrap();

    // Bootstrap admin + created + updated + deleted.
    let events = mesh.wait_for_events(Bus::Account, 4).await;
    let names: Vec<_> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "account.created",
            "account.created",
            "account.updated",
            "account.deleted"
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.version == 1 && e.producer == "account")
    );
    let mut ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 4);

    let created = catalog::open::<pb::AccountCreated>(&events[1])
        .unwrap()
        .account
        .unwrap();
    assert_eq!(
        (
            created.username.as_str(),
            created.role.as_str(),
            created.email.as_str()
        ),
        ("eventful", "worker", "eventful@test.example")
    );
    assert_eq!(events[1].key, worker.id);
    let updated = catalog::open::<pb::AccountUpdated>(&events[2]).unwrap();
    assert_eq!(updated.changed_fields, ["role"]);
    let snapshot = updated.account.unwrap();
    assert_eq!(snapshot.role, "manager");
    assert!(snapshot.version > created.version);
    let deleted = catalog::open::<pb::AccountDeleted>(&events[3])
        .unwrap()
        .account
        .unwrap();
    assert!(!deleted.active);
    assert!(deleted.version > snapshot.version);

    // Nothing more is waiting to go out. The relay marks rows published only after NATS
    // acknowledged them, so the last mark may land just after the stream shows the
    // events: wait for it. (Test SQL is not checked at compile time.)
    let pending = "SELECT count(*) FROM eventbus.outbox WHERE published_at IS NULL";
    wait_for_count(&mesh.account_pool, "the outbox drained", pending, 0).await;
    assert_eq!(mesh.events(Bus::Account).await.len(), 4);
}

/// CreateAccount retried with the same `idempotency-key` returns the first account and
/// publishes one `account.created`; the same key with another request is refused naming
/// the key; an expired key is forgotten by the sweep.
#[tokio::test]
async fn a_create_retried_with_its_key_creates_one_account() {
    let mesh = Mesh::builder().start().await;
    let create = |username: &str, key: &str| {
        let mut request = with_token(
            &mesh.admin,
            pb::CreateAccountRequest {
                username: username.into(),
                email: format!("{username}@test.example"),
                role: pb::Role::Worker as i32,
                name: "Re".into(),
                surname: "Try".into(),
                password: "retry-password".into(),
                ..Default::default()
            },
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        let mut client = mesh.accounts_client();
        async move { client.create_account(request).await }
    };
    let first = create("retrier", "k-1").await.unwrap().into_inner().account;
    let again = create("retrier", "k-1").await.unwrap().into_inner().account;
    assert_eq!(first.unwrap().id, again.unwrap().id);
    assert_field_error(create("other", "k-1").await, "idempotency-key");
    // Without the key, the same request is a duplicate username.
    let status = mesh
        .accounts_client()
        .create_account(with_token(
            &mesh.admin,
            pb::CreateAccountRequest {
                username: "retrier".into(),
                email: "retrier@test.example".into(),
                role: pb::Role::Worker as i32,
                name: "Re".into(),
                surname: "Try".into(),
                password: "retry-password".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    // Bootstrap admin + one creation.
    let events = mesh.wait_for_events(Bus::Account, 2).await;
    let created = events
        .iter()
        .filter(|e| e.name == "account.created")
        .count();
    assert_eq!(created, 2);

    // Keys older than twice the kept time are forgotten; fresh ones stay. (Test SQL.)
    sqlx::query("UPDATE idempotency.keys SET created_at = now() - interval '49 hours'")
        .execute(&mesh.account_pool)
        .await
        .unwrap();
    create("fresh", "k-2").await.unwrap();
    let forgotten = popug_idempotency::forget_expired(&mesh.account_pool)
        .await
        .unwrap();
    assert_eq!(forgotten, 1);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency.keys")
        .fetch_all(&mesh.account_pool)
        .await
        .unwrap();
    assert_eq!(left, ["k-2"]);
}
