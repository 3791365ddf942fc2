//! Who may do what with tasks, and bad input. The policy layer in front of the handlers
//! refuses a worker's reassign; the row-level rules behind it refuse a worker another's
//! task or another's list. Managers see everything, paged and filtered. No token or a bad
//! one is UNAUTHENTICATED; bad input is INVALID_ARGUMENT naming the field, and creates
//! nothing.

use std::collections::HashMap;

use popug_mesh::call::{all_pages, assert_field_error};
use popug_mesh::with_token;
use popug_proto::popug::tasks::v1 as pb;
use tonic::{Code, Request};
use uuid::Uuid;

use crate::{all_tasks, client, complete, create, list, reassign, start, team};

#[tokio::test]
async fn permissions_per_role_and_bad_input() {
    let mesh = start(1000).await;
    let ([w1, w2], manager) = team(&mesh).await;
    let mut mine = HashMap::<Uuid, usize>::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let task = create(&mesh, &w1.token, &format!("task {i}"), "")
            .await
            .unwrap();
        *mine.entry(task.assignee_id.parse().unwrap()).or_default() += 1;
        ids.push(task);
    }

    // Workers: no reassign, only their own tasks.
    let refused = reassign(&mesh, &w1.token).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    for worker in [&w1, &w2] {
        let own = list(&mesh, &worker.token, pb::ListTasksRequest::default())
            .await
            .unwrap();
        assert_eq!(own.tasks.len(), mine.get(&worker.id).copied().unwrap_or(0));
        assert!(
            own.tasks
                .iter()
                .all(|t| t.assignee_id == worker.id.to_string())
        );
        let other = if worker.id == w1.id { &w2 } else { &w1 };
        let refused = list(
            &mesh,
            &worker.token,
            pb::ListTasksRequest {
                assignee_id: other.id.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        for task in &ids {
            let got = client(&mesh)
                .get_task(with_token(
                    &worker.token,
                    pb::GetTaskRequest {
                        id: task.id.clone(),
                    },
                ))
                .await;
            if task.assignee_id == worker.id.to_string() {
                assert_eq!(got.unwrap().into_inner().task.unwrap().id, task.id);
            } else {
                assert_eq!(got.unwrap_err().code(), Code::PermissionDenied);
            }
        }
    }

    // Managers see everything, paged and filtered.
    let seen: Vec<String> = all_pages(|page_token| {
        let request = pb::ListTasksRequest {
            page_size: 5,
            page_token,
            ..Default::default()
        };
        let page = list(&mesh, &manager.token, request);
        async move {
            let page = page.await.unwrap();
            assert!(page.tasks.len() <= 5);
            let ids = page.tasks.into_iter().map(|t| t.id).collect();
            (ids, page.next_page_token)
        }
    })
    .await;
    let expected: Vec<String> = ids.iter().map(|t| t.id.clone()).collect();
    assert_eq!(seen, expected);
    let of_w2 = list(
        &mesh,
        &manager.token,
        pb::ListTasksRequest {
            assignee_id: w2.id.to_string(),
            status: pb::TaskStatus::Open as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(of_w2.tasks.len(), mine.get(&w2.id).copied().unwrap_or(0));
    let done = list(
        &mesh,
        &manager.token,
        pb::ListTasksRequest {
            status: pb::TaskStatus::Done as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(done.tasks.is_empty());

    // No token, a bad token.
    let anonymous = client(&mesh)
        .list_tasks(Request::new(pb::ListTasksRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let forged = list(&mesh, "not.a.token", pb::ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(forged.code(), Code::Unauthenticated);

    // Bad input names the field.
    let create = |title: String, jira_id: &str, description: String| {
        let request = pb::CreateTaskRequest {
            title,
            jira_id: jira_id.into(),
            description,
        };
        let mut client = client(&mesh);
        let token = w1.token.clone();
        async move { client.create_task(with_token(&token, request)).await }
    };
    assert_field_error(create("".into(), "", "".into()).await, "title");
    assert_field_error(
        create("[POP-1] - Title".into(), "", "".into()).await,
        "title",
    );
    assert_field_error(create("x".repeat(201), "", "".into()).await, "title");
    assert_field_error(create("ok".into(), "pop-1", "".into()).await, "jira_id");
    assert_field_error(create("ok".into(), "POP1", "".into()).await, "jira_id");
    assert_field_error(
        create("ok".into(), "", "x".repeat(10_001)).await,
        "description",
    );
    // Control characters PostgreSQL refuses (NUL) or a reader would not see (ESC) were
    // INTERNAL; newline and tab stay allowed in a description.
    for bad in ["nul \u{0} inside", "escape \u{1b}[31m"] {
        assert_field_error(create("ok".into(), "", bad.into()).await, "description");
        assert_field_error(create(bad.into(), "", "".into()).await, "title");
    }
    let multiline = create("Lines".into(), "", "one\n\ttwo\r\nthree".into())
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(multiline.description, "one\n\ttwo\r\nthree");
    let bad_id = client(&mesh)
        .get_task(with_token(
            &w1.token,
            pb::GetTaskRequest { id: "nope".into() },
        ))
        .await;
    assert_field_error(bad_id, "id");
    assert_field_error(complete(&mesh, &w1.token, "nope").await, "id");
    for (request, field) in [
        (
            pb::ListTasksRequest {
                page_size: 501,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListTasksRequest {
                page_token: "x".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListTasksRequest {
                assignee_id: "x".into(),
                ..Default::default()
            },
            "assignee_id",
        ),
        (
            pb::ListTasksRequest {
                status: 9,
                ..Default::default()
            },
            "status",
        ),
    ] {
        assert_field_error(list(&mesh, &manager.token, request).await, field);
    }
    assert_eq!(
        all_tasks(&mesh).await.len(),
        13,
        "bad input created something (12 tasks and the multi-line one)"
    );
}
