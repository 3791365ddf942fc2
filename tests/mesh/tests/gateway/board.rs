//! The gateway's own composed views: the task board (tasks with assignee names from
//! Account and prices from Accounting) and one's overview, and how both degrade, rather
//! than fail, when Accounting goes away.

use std::time::Duration;

use popug_mesh::with_token;
use popug_proto::popug::gateway::v1 as board_pb;

use crate::{Staff, board, cached_mesh, create_task, full_name, task_board};

#[tokio::test]
async fn the_board_composes_names_and_prices_and_degrades_without_accounting() {
    let mut mesh = cached_mesh().accounting().start().await;
    let staff = Staff::sign_in(&mesh).await;
    // Only the worker and the accountant can be assigned; the manager sees the board.
    let worker = staff.worker.token.clone();
    let manager = staff.manager.token.clone();
    for title in ["One", "Two", "Three"] {
        create_task(&mesh, &worker, title).await;
    }
    let complete =
        popug_testkit::eventually(Duration::from_secs(10), "every task priced", || async {
            let answer = task_board(&mesh, &manager).await;
            (answer.tasks.len() == 3 && answer.tasks.iter().all(|t| t.priced)).then_some(answer)
        })
        .await;
    assert!(complete.missing.is_empty(), "{:?}", complete.missing);
    for entry in &complete.tasks {
        assert_eq!(entry.assignee_name, full_name(&entry.assignee_username));
        assert!(["worker", "accountant"].contains(&entry.assignee_username.as_str()));
        assert!(
            (1000..=2000).contains(&entry.assign_fee_cents) && entry.assign_fee_cents % 100 == 0
        );
        assert!((2000..=4000).contains(&entry.reward_cents) && entry.reward_cents % 100 == 0);
    }

    // My overview: my open tasks, my balance (minus the fees of my tasks), today's log.
    let mine: Vec<_> = complete
        .tasks
        .iter()
        .filter(|t| t.assignee_username == "worker")
        .collect();
    let fees: i64 = mine.iter().map(|t| t.assign_fee_cents).sum();
    let overview =
        popug_testkit::eventually(Duration::from_secs(10), "the ledger caught up", || async {
            let answer = board(&mesh)
                .get_my_overview(with_token(&worker, board_pb::GetMyOverviewRequest {}))
                .await
                .unwrap()
                .into_inner();
            (answer.balance_cents == -fees && answer.today_entries.len() == mine.len())
                .then_some(answer)
        })
        .await;
    assert!(overview.missing.is_empty());
    assert_eq!(overview.open_tasks.len(), mine.len());

    // Accounting goes away: names still come, prices of new tasks do not, the overview
    // says what is missing — and every answer still arrives.
    mesh.stop("accounting");
    create_task(&mesh, &worker, "Four").await;
    let degraded = popug_testkit::eventually(
        Duration::from_secs(15),
        "prices reported missing",
        || async {
            let answer = task_board(&mesh, &manager).await;
            (answer.missing == [board_pb::Part::Prices as i32]).then_some(answer)
        },
    )
    .await;
    assert_eq!(degraded.tasks.len(), 4);
    assert!(
        degraded
            .tasks
            .iter()
            .all(|t| t.assignee_name == full_name(&t.assignee_username)),
        "names still there"
    );
    let overview = board(&mesh)
        .get_my_overview(with_token(&worker, board_pb::GetMyOverviewRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        overview.missing,
        [
            board_pb::Part::Balance as i32,
            board_pb::Part::Entries as i32
        ]
    );
    assert!(!overview.open_tasks.is_empty() || mine.is_empty());
}
