//! Inputs the ledger cannot serve: days outside the documented range (2000-01-01 to
//! 2999-12-31), weeks at its edge, CUSTOM spans over a year, users Accounting has never
//! heard of. Each is a client error naming its field, never INTERNAL and never a panic.

use popug_mesh::call::assert_field_error;
use popug_mesh::with_token;
use tonic::Code;

use super::*;

fn expensive(period: analytics_pb::Period, day: &str) -> analytics_pb::GetMostExpensiveTaskRequest {
    analytics_pb::GetMostExpensiveTaskRequest {
        period: period as i32,
        day: day.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn days_outside_the_range_and_unknown_users_are_client_errors() {
    let w = ledger_mesh().await;
    let admin = w.admin.clone();

    // The week of 9999-12-31 once overflowed the date type (a panic); -5000-01-01 once
    // reached PostgreSQL ("date out of range", INTERNAL).
    for day in ["9999-12-31", "-5000-01-01", "1999-12-31", "3000-01-01"] {
        for period in [
            analytics_pb::Period::Day,
            analytics_pb::Period::Week,
            analytics_pb::Period::Month,
        ] {
            assert_field_error(
                w.analytics_client()
                    .get_most_expensive_task(with_token(&admin, expensive(period, day)))
                    .await,
                "day",
            );
        }
        assert_field_error(
            w.accounting_client()
                .list_entries(with_token(
                    &admin,
                    pb::ListEntriesRequest {
                        billing_day: day.into(),
                        ..Default::default()
                    },
                ))
                .await,
            "billing_day",
        );
        assert_field_error(
            w.accounting_client()
                .get_management_earnings(with_token(
                    &admin,
                    pb::GetManagementEarningsRequest {
                        from_day: day.into(),
                        to_day: "2026-03-01".into(),
                    },
                ))
                .await,
            "from_day",
        );
    }
    // The edges themselves are served: the last week of the range ends on its last day.
    for (period, day) in [
        (analytics_pb::Period::Week, "2999-12-31"),
        (analytics_pb::Period::Month, "2999-12-31"),
        (analytics_pb::Period::Week, "2000-01-01"),
        (analytics_pb::Period::Day, "2000-01-01"),
    ] {
        let answer = w
            .analytics_client()
            .get_most_expensive_task(with_token(&admin, expensive(period, day)))
            .await;
        assert!(answer.is_ok(), "{period:?} {day}: {answer:?}");
    }

    // CUSTOM spans are capped at 366 days, like earnings.
    let custom = |from: &str, to: &str| analytics_pb::GetMostExpensiveTaskRequest {
        period: analytics_pb::Period::Custom as i32,
        from_day: from.into(),
        to_day: to.into(),
        ..Default::default()
    };
    assert_field_error(
        w.analytics_client()
            .get_most_expensive_task(with_token(&admin, custom("2000-01-01", "2999-12-31")))
            .await,
        "to_day",
    );
    let year = w
        .analytics_client()
        .get_most_expensive_task(with_token(&admin, custom("2026-01-01", "2026-12-31")))
        .await;
    assert!(year.is_ok(), "{year:?}");

    // A user id Accounting has never heard of is NOT_FOUND (it was OK with 0); one's own
    // balance is 0 before the first entry, whoever one is.
    let stranger = Uuid::now_v7().to_string();
    let status = w
        .accounting_client()
        .get_balance(with_token(
            &admin,
            pb::GetBalanceRequest {
                user_id: stranger.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = w
        .accounting_client()
        .list_entries(with_token(
            &admin,
            pb::ListEntriesRequest {
                user_id: stranger,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let newcomer = w.user("newcomer", account_pb::Role::Worker).await;
    let own = w
        .accounting_client()
        .get_balance(with_token(
            &newcomer.token,
            pb::GetBalanceRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.balance_cents, 0);
    // Once Accounting has the user (from the account bus), others may ask about them.
    let id = newcomer.id.to_string();
    popug_testkit::eventually(popug_mesh::WAIT, "the newcomer known", || async {
        w.accounting_client()
            .get_balance(with_token(
                &admin,
                pb::GetBalanceRequest {
                    user_id: id.clone(),
                },
            ))
            .await
            .ok()
    })
    .await;
}
