//! Completion: only the assignee completes (another worker and a manager are refused), a
//! second completion changes nothing, reassigns never move a done task, and the task bus
//! carries exactly one `task.completed`.

use std::collections::HashMap;

use popug_eventbus::Bus;
use popug_mesh::User;
use popug_proto::catalog::open;
use popug_proto::popug::tasks::v1 as pb;
use popug_proto::upcast::task_created as read_task_created;
use tonic::Code;
use uuid::Uuid;

use crate::{all_tasks, complete, create, reassign, start, team};

#[tokio::test]
async fn only_the_assignee_completes_and_done_is_final() {
    let mesh = start(1000).await;
    let ([w1, w2], manager) = team(&mesh).await;
    let by_id: HashMap<String, &User> = [&w1, &w2]
        .into_iter()
        .map(|u| (u.id.to_string(), u))
        .collect();
    let task = create(&mesh, &w1.token, "Feed the popugs", "UBERPOP-42")
        .await
        .unwrap();
    assert_eq!(task.jira_id, "UBERPOP-42");
    let assignee = by_id[&task.assignee_id];
    let other = if assignee.id == w1.id { &w2 } else { &w1 };

    // Another worker: refused by the row-level rule; a manager: by the policy.
    let refused = complete(&mesh, &other.token, &task.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = complete(&mesh, &manager.token, &task.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let unknown = complete(&mesh, &w1.token, &Uuid::now_v7().to_string())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    let done = complete(&mesh, &assignee.token, &task.id).await.unwrap();
    assert_eq!(done.status, pb::TaskStatus::Done as i32);
    assert_eq!(done.sequence, 2);
    let again = complete(&mesh, &assignee.token, &task.id).await.unwrap();
    assert_eq!(again.status, pb::TaskStatus::Done as i32);
    assert_eq!(again.sequence, 2, "a second completion changes nothing");

    // Reassigning many times never moves the done task.
    for _ in 0..5 {
        assert_eq!(reassign(&mesh, &manager.token).await.unwrap().reassigned, 0);
    }
    let after = &all_tasks(&mesh).await[&task.id];
    assert_eq!(after, &(assignee.id.to_string(), "done".to_owned(), 2));

    // The task bus: created (v2) + assigned, then exactly one completed.
    let events = mesh.wait_for_events(Bus::Task, 3).await;
    let names: Vec<(&str, i32)> = events
        .iter()
        .map(|e| (e.name.as_str(), e.version))
        .collect();
    assert_eq!(
        names,
        [
            ("task.created", 2),
            ("task.assigned", 1),
            ("task.completed", 1)
        ]
    );
    let created = read_task_created(&events[0]).unwrap();
    assert_eq!(created.task_id, task.id);
    assert_eq!(created.title, "Feed the popugs");
    assert_eq!(created.jira_id, "UBERPOP-42");
    assert_eq!(created.assignee_id, task.assignee_id);
    assert_eq!(created.sequence, 1);
    let completed = open::<pb::TaskCompleted>(&events[2]).unwrap();
    assert_eq!(completed.assignee_id, assignee.id.to_string());
    assert_eq!((completed.status.as_str(), completed.sequence), ("done", 2));
}
