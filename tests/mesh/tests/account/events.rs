//! The account bus: every change publishes exactly one event, in order, and the outbox
//! is drained.

use popug_eventbus::Bus;
use popug_mesh::wait_for_count;
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
