//! Random assignment: uniform over the active assignable users (workers and accountants),
//! never to managers, deactivated, deleted or promoted users; nobody to give a task to is
//! FAILED_PRECONDITION.

use std::collections::{HashMap, HashSet};

use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::tasks::v1 as pb;
use tonic::Code;

use crate::{all_tasks, create, reassign, start, synced, update};

#[tokio::test]
async fn assignment_is_uniform_and_only_to_active_assignable_users() {
    let mesh = start(1000).await;
    let w1 = mesh.user("worker1", account_pb::Role::Worker).await;
    let w2 = mesh.user("worker2", account_pb::Role::Worker).await;
    let acc = mesh.user("accountant1", account_pb::Role::Accountant).await;
    let manager = mesh.user("manager1", account_pb::Role::Manager).await;
    let gone = mesh.user("gone", account_pb::Role::Worker).await;
    let promoted = mesh.user("promoted", account_pb::Role::Worker).await;
    mesh.delete_account(&mesh.admin, gone.id).await.unwrap();
    update(
        &mesh,
        account_pb::UpdateAccountRequest {
            id: promoted.id.to_string(),
            role: Some(account_pb::Role::Manager as i32),
            ..Default::default()
        },
    )
    .await;
    for user in [&w1, &w2, &acc, &manager] {
        synced(&mesh, user.id, 1).await;
    }
    synced(&mesh, gone.id, 2).await;
    synced(&mesh, promoted.id, 2).await;

    // 300 tasks over 3 assignable users: each count is Binomial(300, 1/3), mean 100,
    // sd 8.2; 50..=150 is ±6 sd, so a fair pick fails this about once in 10^9 runs.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let task = create(&mesh, &manager.token, &format!("task {i}"), "")
            .await
            .unwrap();
        assert_eq!(task.status, pb::TaskStatus::Open as i32);
        assert_eq!(task.sequence, 1);
        *counts.entry(task.assignee_id).or_default() += 1;
    }
    let allowed: HashSet<String> = [&w1, &w2, &acc].iter().map(|u| u.id.to_string()).collect();
    for (assignee, count) in &counts {
        assert!(
            allowed.contains(assignee),
            "assigned to a non-assignable user {assignee}"
        );
        assert!(
            (50..=150).contains(count),
            "{assignee} got {count} of 300: {counts:?}"
        );
    }
    assert_eq!(counts.len(), 3, "{counts:?}");

    // Reassign also only picks assignable users.
    let done = reassign(&mesh, &manager.token).await.unwrap();
    assert_eq!(done.reassigned, 300);
    for (assignee, _, _) in all_tasks(&mesh).await.values() {
        assert!(allowed.contains(assignee));
    }
}

#[tokio::test]
async fn no_assignable_user_is_a_failed_precondition() {
    let mesh = start(1000).await;
    let manager = mesh.user("manager1", account_pb::Role::Manager).await;
    synced(&mesh, manager.id, 1).await;
    let refused = create(&mesh, &manager.token, "nobody to do it", "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let refused = reassign(&mesh, &manager.token).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(all_tasks(&mesh).await.is_empty());

    let worker = mesh.user("worker1", account_pb::Role::Worker).await;
    synced(&mesh, worker.id, 1).await;
    let task = create(&mesh, &manager.token, "now it works", "")
        .await
        .unwrap();
    assert_eq!(task.assignee_id, worker.id.to_string());

    // Deactivating the only worker makes creation fail again.
    update(
        &mesh,
        account_pb::UpdateAccountRequest {
            id: worker.id.to_string(),
            active: Some(false),
            ..Default::default()
        },
    )
    .await;
    synced(&mesh, worker.id, 2).await;
    let refused = create(&mesh, &manager.token, "again nobody", "")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}
