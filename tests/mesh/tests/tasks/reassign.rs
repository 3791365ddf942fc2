//! The "reassign open tasks" button: it moves every open task and never a done one, its
//! `reassign.chunk` events cover every moved task exactly once, concurrent reassigns
//! serialize, and completions racing reassigns leave the newest event of every task
//! saying what the database says.

use std::collections::{HashMap, HashSet};

use popug_eventbus::Bus;
use popug_mesh::{Mesh, User};
use popug_proto::catalog::{is, open};
use popug_proto::popug::tasks::v1 as pb;
use tonic::Code;

use crate::{all_tasks, complete, create, reassign, start, team};

/// A mesh reassigning in chunks of `chunk_size`, with three workers and a manager that
/// TaskKeeper knows: the mesh, the manager, and each worker's token by their id (to
/// complete a task as whoever it was assigned to).
async fn crew(chunk_size: usize) -> (Mesh, User, HashMap<String, String>) {
    let mesh = start(chunk_size).await;
    let (workers, manager): ([User; 3], User) = team(&mesh).await;
    let token_of = workers
        .iter()
        .map(|u| (u.id.to_string(), u.token.clone()))
        .collect();
    (mesh, manager, token_of)
}

#[tokio::test]
async fn reassign_moves_open_tasks_and_its_chunks_cover_each_exactly_once() {
    // Chunks of 7 so 40 tasks span several.
    let (mesh, manager, token_of) = crew(7).await;
    let mut done = HashSet::new();
    for i in 0..40 {
        let task = create(&mesh, &manager.token, &format!("task {i}"), "")
            .await
            .unwrap();
        if i % 4 == 0 {
            complete(&mesh, &token_of[&task.assignee_id], &task.id)
                .await
                .unwrap();
            done.insert(task.id);
        }
    }
    let before = all_tasks(&mesh).await;

    let first = reassign(&mesh, &manager.token).await.unwrap();
    assert_eq!(first.reassigned, 30);
    // Two reassigns at once serialize; both move every open task.
    let tasks = &mesh.taskkeeper().tasks;
    let (a, b) = tokio::join!(tasks.reassign(), tasks.reassign());
    assert_eq!((a.unwrap().count, b.unwrap().count), (30, 30));
    let after = all_tasks(&mesh).await;
    for (id, state) in &after {
        if done.contains(id) {
            assert_eq!(state, &before[id], "done task {id} moved");
        } else {
            assert_eq!(state.2, before[id].2 + 3, "open task {id} sequence");
        }
    }

    // 3 reassigns × ceil(30 / 7) = 15 chunks.
    let chunks: Vec<pb::ReassignChunk> = mesh
        .wait_for_events(Bus::Reassign, 15)
        .await
        .iter()
        .map(|e| {
            assert!(is::<pb::ReassignChunk>(e), "{} v{}", e.name, e.version);
            open::<pb::ReassignChunk>(e).unwrap()
        })
        .collect();
    assert_eq!(chunks.len(), 15);
    let mut by_reassign: HashMap<&str, Vec<&pb::ReassignChunk>> = HashMap::new();
    for chunk in &chunks {
        by_reassign
            .entry(&chunk.reassign_id)
            .or_default()
            .push(chunk);
    }
    assert_eq!(by_reassign.len(), 3);
    assert!(by_reassign.contains_key(first.reassign_id.as_str()));
    let open_ids: HashSet<&String> = after.keys().filter(|id| !done.contains(*id)).collect();
    let mut latest: HashMap<String, (String, i64)> = HashMap::new();
    for (reassign, chunks) in &by_reassign {
        let mut indexes: Vec<i32> = chunks.iter().map(|c| c.chunk_index).collect();
        indexes.sort();
        assert_eq!(indexes, [0, 1, 2, 3, 4], "{reassign}");
        assert!(
            chunks
                .iter()
                .all(|c| c.chunk_count == 5 && c.tasks.len() <= 7)
        );
        let mut seen: Vec<&String> = chunks
            .iter()
            .flat_map(|c| c.tasks.iter().map(|t| &t.task_id))
            .collect();
        seen.sort();
        let unique: HashSet<&String> = seen.iter().copied().collect();
        assert_eq!(
            seen.len(),
            unique.len(),
            "a task twice in reassign {reassign}"
        );
        assert_eq!(
            unique, open_ids,
            "reassign {reassign} does not cover every open task"
        );
        for task in chunks.iter().flat_map(|c| &c.tasks) {
            let entry = latest.entry(task.task_id.clone()).or_default();
            if task.sequence > entry.1 {
                *entry = (task.assignee_id.clone(), task.sequence);
            }
        }
    }
    // The newest event of every task matches the database.
    for (id, (assignee, sequence)) in &latest {
        assert_eq!(
            (assignee, *sequence),
            (&after[id].0, after[id].2),
            "task {id}"
        );
    }
}

#[tokio::test]
async fn completions_racing_reassigns_leave_events_consistent_with_the_state() {
    let (mesh, manager, token_of) = crew(1000).await;
    let mut created = Vec::new();
    for i in 0..30 {
        created.push(
            create(&mesh, &manager.token, &format!("task {i}"), "")
                .await
                .unwrap(),
        );
    }

    // Every task's first assignee tries to complete it while three reassigns run.
    let completions = futures::future::join_all(created.iter().map(|task| {
        let token = token_of[&task.assignee_id].clone();
        let id = task.id.clone();
        let mesh = &mesh;
        async move { complete(mesh, &token, &id).await }
    }));
    let reassigns = futures::future::join_all((0..3).map(|_| reassign(&mesh, &manager.token)));
    let (completions, reassigns) = tokio::join!(completions, reassigns);
    let mut completed = 0;
    for outcome in completions {
        match outcome {
            Ok(task) => {
                assert_eq!(task.status, pb::TaskStatus::Done as i32);
                completed += 1;
            }
            // Reassigned away first: no longer theirs.
            Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
        }
    }
    let moving: usize = reassigns
        .into_iter()
        .map(|r| usize::from(r.unwrap().reassigned > 0))
        .sum();

    let state = all_tasks(&mesh).await;
    let task_events = mesh.wait_for_events(Bus::Task, 60 + completed).await;
    assert_eq!(task_events.len(), 60 + completed);
    let chunks = if moving == 0 {
        Vec::new()
    } else {
        mesh.wait_for_events(Bus::Reassign, moving).await
    };
    // The newest event of every task (by sequence) says what the database says.
    let mut latest: HashMap<String, (String, String, i64)> = HashMap::new();
    let mut note = |id: &str, assignee: &str, status: &str, sequence: i64| {
        let entry = latest.entry(id.to_owned()).or_default();
        assert_ne!(
            entry.2, sequence,
            "two events of task {id} share sequence {sequence}"
        );
        if sequence > entry.2 {
            *entry = (assignee.to_owned(), status.to_owned(), sequence);
        }
    };
    for envelope in &task_events {
        if is::<pb::TaskCompleted>(envelope) {
            let e = open::<pb::TaskCompleted>(envelope).unwrap();
            note(&e.task_id, &e.assignee_id, &e.status, e.sequence);
        } else if is::<pb::TaskCreated>(envelope) {
            let e = open::<pb::TaskCreated>(envelope).unwrap();
            note(&e.task_id, &e.assignee_id, &e.status, e.sequence);
        }
    }
    for envelope in &chunks {
        for t in open::<pb::ReassignChunk>(envelope).unwrap().tasks {
            note(&t.task_id, &t.assignee_id, "open", t.sequence);
        }
    }
    assert_eq!(latest.len(), 30);
    for (id, (assignee, status, sequence)) in &latest {
        assert_eq!(
            (assignee, status, *sequence),
            (&state[id].0, &state[id].1, state[id].2),
            "task {id}"
        );
    }
}
