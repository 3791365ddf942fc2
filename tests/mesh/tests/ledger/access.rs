//! Who may see which ledger, with which token, and what bad input answers.

use popug_mesh::call::{assert_field_error, code};
use popug_mesh::with_token;
use tonic::{Code, Request};

use super::*;

/// Every role against every RPC (REQUIREMENTS §2), missing tokens and bad input.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_per_role_and_bad_input() {
    let w = full_mesh().start().await;
    let worker = w.user("worker", account_pb::Role::Worker).await;
    let accountant = w.user("counter", account_pb::Role::Accountant).await;
    let manager = w.user("boss", account_pb::Role::Manager).await;
    let admin = w.admin.clone();
    let other = worker.id.to_string();

    let balance = |token: &str, user: &str| {
        let mut c = w.accounting_client();
        let req = with_token(
            token,
            pb::GetBalanceRequest {
                user_id: user.into(),
            },
        );
        async move { code(c.get_balance(req).await) }
    };
    let entries = |token: &str, user: &str| {
        let mut c = w.accounting_client();
        let req = with_token(
            token,
            pb::ListEntriesRequest {
                user_id: user.into(),
                ..Default::default()
            },
        );
        async move { code(c.list_entries(req).await) }
    };
    let payouts = |token: &str, user: &str| {
        let mut c = w.accounting_client();
        let req = with_token(
            token,
            pb::ListPayoutsRequest {
                user_id: user.into(),
                ..Default::default()
            },
        );
        async move { code(c.list_payouts(req).await) }
    };
    let earnings = |token: &str| {
        let mut c = w.accounting_client();
        let req = with_token(token, pb::GetManagementEarningsRequest::default());
        async move { code(c.get_management_earnings(req).await) }
    };
    let dashboard = |token: &str| {
        let mut c = w.analytics_client();
        let req = with_token(token, analytics_pb::GetDashboardRequest {});
        async move { code(c.get_dashboard(req).await) }
    };
    let expensive = |token: &str| {
        let mut c = w.analytics_client();
        let req = with_token(
            token,
            analytics_pb::GetMostExpensiveTaskRequest {
                period: analytics_pb::Period::Day as i32,
                ..Default::default()
            },
        );
        async move { code(c.get_most_expensive_task(req).await) }
    };
    let close_future = |token: &str| {
        let mut c = w.accounting_client();
        // A day far ahead: allowed callers get FAILED_PRECONDITION, nothing is closed.
        let req = with_token(
            token,
            pb::CloseDayRequest {
                billing_day: "2999-01-01".into(),
            },
        );
        async move { code(c.close_day(req).await) }
    };

    use Code::{FailedPrecondition as Fp, Ok as Yes, PermissionDenied as No};
    // (token, own, other's, earnings, analytics, close)
    let table = [
        (&worker.token, Yes, No, No, No, No),
        (&accountant.token, Yes, Yes, Yes, No, No),
        (&manager.token, Yes, No, No, No, No),
        (&admin, Yes, Yes, Yes, Yes, Fp),
    ];
    for (i, (token, own, others, earn, analytics, close)) in table.into_iter().enumerate() {
        assert_eq!(balance(token, "").await, own, "row {i} own balance");
        assert_eq!(entries(token, "").await, own, "row {i} own entries");
        assert_eq!(payouts(token, "").await, own, "row {i} own payouts");
        let other_expected = if i == 0 { Yes } else { others }; // the worker asks about themselves
        assert_eq!(
            balance(token, &other).await,
            other_expected,
            "row {i} other's balance"
        );
        assert_eq!(
            entries(token, &other).await,
            other_expected,
            "row {i} other's entries"
        );
        assert_eq!(
            payouts(token, &other).await,
            other_expected,
            "row {i} other's payouts"
        );
        assert_eq!(earnings(token).await, earn, "row {i} earnings");
        assert_eq!(dashboard(token).await, analytics, "row {i} dashboard");
        assert_eq!(expensive(token).await, analytics, "row {i} most expensive");
        assert_eq!(close_future(token).await, close, "row {i} close");
    }
    // The worker asking about the accountant is refused.
    assert_eq!(balance(&worker.token, &accountant.id.to_string()).await, No);

    // No token, a forged token.
    let status = w
        .accounting_client()
        .get_balance(Request::new(pb::GetBalanceRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(balance("not-a-token", "").await, Code::Unauthenticated);

    // Bad input names its field.
    assert_field_error(
        w.accounting_client()
            .get_balance(with_token(
                &admin,
                pb::GetBalanceRequest {
                    user_id: "x".into(),
                },
            ))
            .await,
        "user_id",
    );
    assert_field_error(
        w.accounting_client()
            .list_entries(with_token(
                &admin,
                pb::ListEntriesRequest {
                    billing_day: "03.03.2026".into(),
                    ..Default::default()
                },
            ))
            .await,
        "billing_day",
    );
    assert_field_error(
        w.accounting_client()
            .list_entries(with_token(
                &admin,
                pb::ListEntriesRequest {
                    page_size: 1000,
                    ..Default::default()
                },
            ))
            .await,
        "page_size",
    );
    assert_field_error(
        w.accounting_client()
            .get_management_earnings(with_token(
                &admin,
                pb::GetManagementEarningsRequest {
                    from_day: "2026-03-05".into(),
                    to_day: "2026-03-01".into(),
                },
            ))
            .await,
        "to_day",
    );
    assert_field_error(
        w.analytics_client()
            .get_most_expensive_task(with_token(
                &admin,
                analytics_pb::GetMostExpensiveTaskRequest::default(),
            ))
            .await,
        "period",
    );
    assert_field_error(
        w.analytics_client()
            .get_most_expensive_task(with_token(
                &admin,
                analytics_pb::GetMostExpensiveTaskRequest {
                    period: analytics_pb::Period::Custom as i32,
                    from_day: "2026-03-01".into(),
                    ..Default::default()
                },
            ))
            .await,
        "to_day",
    );
}
