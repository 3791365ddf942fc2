//! The gateway's Redis cache: it holds only what is public, account events drop what
//! changed, and Redis going away mid-run makes answers uncached, never failed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use popug_mesh::{Mesh, with_token};
use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::gateway::v1 as board_pb;
use prost::Message;

use crate::{Staff, accounts, cached_mesh, create_task, full_name, http_get, task_board};

#[tokio::test]
async fn the_cache_never_leaks_and_follows_account_events() {
    let mesh = cached_mesh().start().await;
    let staff = Staff::sign_in(&mesh).await;
    let worker = staff.worker.token.clone();
    let accountant = staff.accountant.token.clone();
    let admin = mesh.admin.clone();
    // Assignment is random between the worker and the accountant: create until each has
    // one (six at least), so the worker's board has a name to cache.
    let worker_id = staff.worker.id.to_string();
    let accountant_id = staff.accountant.id.to_string();
    let mut created = 0;
    let mut assignees = std::collections::HashSet::new();
    while created < 6 || assignees.len() < 2 {
        assert!(
            created < 40,
            "40 tasks and still not one each: {assignees:?}"
        );
        let task = create_task(&mesh, &worker, &format!("Task {created}")).await;
        assignees.insert(task.assignee_id);
        created += 1;
    }
    // Each assignee sees only their own tasks, whatever the cache holds.
    let mine = task_board(&mesh, &worker).await;
    assert!(
        mine.tasks
            .iter()
            .all(|t| t.task.as_ref().unwrap().assignee_id == worker_id)
    );
    let theirs = task_board(&mesh, &accountant).await;
    assert!(
        theirs
            .tasks
            .iter()
            .all(|t| t.task.as_ref().unwrap().assignee_id == accountant_id)
    );
    assert_eq!(mine.tasks.len() + theirs.tasks.len(), created);

    // What the cache holds about a user is public: no e-mail anywhere in it.
    let redis = redis::Client::open(popug_testkit::redis_url()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = mesh.gateway().cache.key("profile", &worker_id);
    let cached: Option<Vec<u8>> = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
    let cached = cached.expect("the worker's profile is cached after a board");
    assert!(!String::from_utf8_lossy(&cached).contains(&staff.worker.email));

    // A new name shows at once (the TTL here is an hour): the account event dropped it.
    let rename = account_pb::UpdateAccountRequest {
        id: worker_id.clone(),
        name: Some("Renamed".into()),
        role: Some(account_pb::Role::Accountant as i32),
        ..Default::default()
    };
    accounts(&mesh)
        .update_account(with_token(&admin, rename))
        .await
        .unwrap();
    // The change revoked the worker's tokens (any change of an account does).
    let worker = mesh
        .login(&staff.worker.username, &staff.worker.password)
        .await
        .unwrap()
        .access_token;
    popug_testkit::eventually(
        Duration::from_secs(10),
        "the new name on the board",
        || async {
            let answer = task_board(&mesh, &worker).await;
            answer
                .tasks
                .iter()
                .all(|t| t.assignee_name == "Renamed Popugaev")
                .then_some(())
        },
    )
    .await;
    let profile: Option<Vec<u8>> = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
    let profile = account_pb::Profile::decode(profile.unwrap().as_slice()).unwrap();
    assert_eq!(
        profile.role,
        account_pb::Role::Accountant as i32,
        "the role change is cached too"
    );
}

/// A private Redis for one test, so it can be stopped without touching anyone else's.
struct PrivateRedis {
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server on PATH (deploy/infra.sh installs it)");
        PrivateRedis { child }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn redis_stopped_mid_run_means_uncached_not_failed() {
    let port = popug_mesh::closed_addr().port();
    let redis = PrivateRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    popug_testkit::eventually(Duration::from_secs(5), "private redis up", || async {
        redis::Client::open(url.as_str())
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let mesh = Mesh::builder()
        .taskkeeper()
        .gateway_with(move |s| s.redis_url = Some(url))
        .start()
        .await;
    let staff = Staff::sign_in(&mesh).await;
    let worker = staff.worker.token.clone();
    let manager = staff.manager.token.clone();
    create_task(&mesh, &worker, "Cached").await;
    let first = task_board(&mesh, &manager).await;
    let second = task_board(&mesh, &manager).await;
    assert_eq!(first.tasks[0].assignee_name, second.tasks[0].assignee_name);
    let metrics = &mesh.gateway().cache.metrics;
    assert!(
        metrics.hits.load(Ordering::Relaxed) >= 1,
        "the second board hit the cache"
    );

    drop(redis);
    let errors_before = metrics.errors.load(Ordering::Relaxed);
    for _ in 0..3 {
        let answer = task_board(&mesh, &manager).await;
        // Redis is not a source, so nothing more is missing than without it (Accounting
        // does not run in this test: prices are missing all along).
        assert_eq!(answer.missing, [board_pb::Part::Prices as i32]);
        let task = &answer.tasks[0];
        assert_eq!(task.assignee_name, full_name(&task.assignee_username));
    }
    assert!(
        metrics.errors.load(Ordering::Relaxed) > errors_before,
        "the outage is counted"
    );

    // /metrics says so too.
    let (status, headers, body) =
        http_get(&format!("http://{}/metrics", mesh.gateway().addr)).await;
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("gateway_cache_errors_total"),
        "{status} {headers:?} {text}"
    );

    // Redis back: caching resumes.
    let _redis = PrivateRedis::start(port);
    let hits_before = metrics.hits.load(Ordering::Relaxed);
    popug_testkit::eventually(Duration::from_secs(15), "cache hits again", || async {
        task_board(&mesh, &manager).await;
        (metrics.hits.load(Ordering::Relaxed) > hits_before).then_some(())
    })
    .await;
}
