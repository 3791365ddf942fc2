//! `task.created` in both versions reads as v2 (`popug_proto::upcast`): the v1 title
//! `"[POP-7] - Clean the cage"` splits into jira_id and title (`popug_proto::jira`); an
//! unknown version is unreadable, which a consumer dead-letters.

use popug_eventbus::{Envelope, HandleError};
use popug_proto::popug::tasks::v1 as pb;
use popug_proto::upcast::task_created as read_task_created;
use uuid::Uuid;

/// Asserts that `envelope` is `task.created` v`version` and reads as `expected`.
fn assert_reads_as(envelope: &Envelope, version: i32, expected: &pb::TaskCreated) {
    assert_eq!(
        (envelope.name.as_str(), envelope.version),
        ("task.created", version)
    );
    assert_eq!(&read_task_created(envelope).unwrap(), expected);
}

#[test]
fn task_created_v1_and_v2_decode() {
    let v2 = pb::TaskCreated {
        task_id: Uuid::now_v7().to_string(),
        public_id: "7".into(),
        title: "Clean the cage".into(),
        jira_id: "POP-7".into(),
        description: "d".into(),
        assignee_id: Uuid::now_v7().to_string(),
        status: "open".into(),
        sequence: 1,
    };
    let envelope = popug_eventbus::envelope("taskkeeper", &v2.task_id, &v2);
    assert_reads_as(&envelope, 2, &v2);

    let v1 = pb::TaskCreatedV1 {
        task_id: v2.task_id.clone(),
        public_id: "7".into(),
        title: "[POP-7] - Clean the cage".into(),
        description: "d".into(),
        assignee_id: v2.assignee_id.clone(),
        status: "open".into(),
        sequence: 1,
    };
    let envelope = popug_eventbus::envelope("legacy", &v1.task_id, &v1);
    assert_reads_as(&envelope, 1, &v2);

    // Unreadable now; a consumer turns that into a permanent error (a dead letter).
    let mut unknown = envelope.clone();
    unknown.version = 3;
    let unreadable = read_task_created(&unknown).unwrap_err();
    assert!(matches!(
        HandleError::from(unreadable),
        HandleError::Permanent(_)
    ));
}
