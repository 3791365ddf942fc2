//! The gRPC surface: parse the request, call [`Accounting`], map the answer. Thin on
//! purpose: who may call each RPC is decided before it (the policies in `proto/`), the
//! rules live in `service.rs`.

use std::sync::Arc;

use analytics_pb::analytics_service_server::AnalyticsService;
use pb::accounting_service_server::AccountingService;
use pb::price_service_server::PriceService;
use popug_auth::caller;
use popug_errors::input;
use popug_grpc::timestamp;
use popug_proto::popug::accounting::v1 as pb;
use popug_proto::popug::analytics::v1 as analytics_pb;
use tonic::{Request, Response, Status};

use crate::domain::{self, MailStatus, Period, format_day};
use crate::error::Error;
use crate::events::entry_kind;
use crate::service::{Accounting, Earnings, MAX_RANGE_DAYS};
use crate::store::ledger::EntryRow;
use crate::store::mails::PayoutRow;

/// Most task ids one GetTaskPrices may ask for.
const MAX_PRICE_IDS: usize = 500;

/// The three services over one [`Accounting`].
#[derive(Clone)]
pub struct Api(pub Arc<Accounting>);

fn entry(row: &EntryRow) -> pb::Entry {
    pb::Entry {
        id: row.id.to_string(),
        user_id: row.user_id.to_string(),
        kind: entry_kind(row.kind) as i32,
        amount_cents: row.amount.get(),
        task_id: row.task_id.map(|t| t.to_string()).unwrap_or_default(),
        jira_id: row.jira_id.clone(),
        title: row.title.clone(),
        description: row.description.clone(),
        billing_day: format_day(row.billing_day),
        created_at: Some(timestamp(row.created_at)),
    }
}

fn payout(row: &PayoutRow) -> pb::Payout {
    let status = match row.status {
        MailStatus::New => pb::MailStatus::New,
        MailStatus::Sending => pb::MailStatus::Sending,
        MailStatus::Sent => pb::MailStatus::Sent,
        MailStatus::Failed => pb::MailStatus::Failed,
    };
    pb::Payout {
        id: row.entry_id.to_string(),
        user_id: row.user_id.to_string(),
        amount_cents: row.amount.get(),
        billing_day: format_day(row.billing_day),
        mail_status: status as i32,
        mail_attempts: row.attempts,
        created_at: Some(timestamp(row.created_at)),
        sent_at: row.sent_at.map(timestamp),
    }
}

fn earnings(e: &Earnings) -> pb::DayEarnings {
    // The API shows fees collected and rewards paid, both as positive amounts.
    pb::DayEarnings {
        billing_day: format_day(e.day),
        earnings_cents: e.management().get(),
        fees_cents: e.fees.magnitude().get(),
        rewards_cents: e.rewards.magnitude().get(),
    }
}

#[tonic::async_trait]
impl AccountingService for Api {
    #[tracing::instrument(skip_all)]
    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let user = self
            .0
            .subject(caller(&request)?, &request.get_ref().user_id)
            .await?;
        let (balance, day) = self.0.balance(user).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            user_id: user.to_string(),
            balance_cents: balance.get(),
            billing_day: format_day(day),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = request.get_ref();
        let user = self.0.subject(caller(&request)?, &r.user_id).await?;
        let day = domain::parse_day("billing_day", &r.billing_day)?;
        let limit = input::page_size(r.page_size)?;
        let after = input::page_token(&r.page_token)?;
        let (rows, next_page_token) = self.0.entries(user, day, after, limit).await?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: rows.iter().map(entry).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_management_earnings(
        &self,
        request: Request<pb::GetManagementEarningsRequest>,
    ) -> Result<Response<pb::GetManagementEarningsResponse>, Status> {
        let r = request.get_ref();
        let today = self.0.current_day().await?;
        let (from, to) = domain::parse_range(&r.from_day, &r.to_day, today, MAX_RANGE_DAYS)?;
        let days = self.0.earnings(from, to).await?;
        let now = self.0.earnings(today, today).await?;
        Ok(Response::new(pb::GetManagementEarningsResponse {
            today: now.first().map(earnings),
            days: days.iter().map(earnings).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_payouts(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Result<Response<pb::ListPayoutsResponse>, Status> {
        let r = request.get_ref();
        let user = self.0.subject(caller(&request)?, &r.user_id).await?;
        let limit = input::page_size(r.page_size)?;
        let before = input::page_token(&r.page_token)?;
        let (rows, next_page_token) = self.0.payouts(user, before, limit).await?;
        Ok(Response::new(pb::ListPayoutsResponse {
            payouts: rows.iter().map(payout).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn close_day(
        &self,
        request: Request<pb::CloseDayRequest>,
    ) -> Result<Response<pb::CloseDayResponse>, Status> {
        let day = domain::parse_day("billing_day", &request.get_ref().billing_day)?;
        let closed = self.0.close_day(day).await?;
        Ok(Response::new(pb::CloseDayResponse {
            billing_day: format_day(closed.day),
            closed_now: closed.closed_now,
            payouts: closed.payouts,
            paid_cents: closed.paid.get(),
        }))
    }
}

#[tonic::async_trait]
impl AnalyticsService for Api {
    #[tracing::instrument(skip_all)]
    async fn get_dashboard(
        &self,
        _: Request<analytics_pb::GetDashboardRequest>,
    ) -> Result<Response<analytics_pb::GetDashboardResponse>, Status> {
        let (today, negative) = self.0.dashboard().await?;
        Ok(Response::new(analytics_pb::GetDashboardResponse {
            billing_day: format_day(today.day),
            management_earnings_cents: today.management().get(),
            negative_balance_popugs: negative,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_most_expensive_task(
        &self,
        request: Request<analytics_pb::GetMostExpensiveTaskRequest>,
    ) -> Result<Response<analytics_pb::GetMostExpensiveTaskResponse>, Status> {
        let r = request.get_ref();
        let anchor = match domain::parse_day("day", &r.day)? {
            Some(day) => day,
            None => self.0.current_day().await?,
        };
        let period = match analytics_pb::Period::try_from(r.period) {
            Ok(analytics_pb::Period::Day) => Period::Day(anchor),
            Ok(analytics_pb::Period::Week) => Period::Week(anchor),
            Ok(analytics_pb::Period::Month) => Period::Month(anchor),
            Ok(analytics_pb::Period::Custom) => {
                let from = domain::parse_day("from_day", &r.from_day)?
                    .ok_or_else(|| Error::invalid("from_day", "is required for a custom period"))?;
                let to = domain::parse_day("to_day", &r.to_day)?
                    .ok_or_else(|| Error::invalid("to_day", "is required for a custom period"))?;
                domain::check_span(from, to, MAX_RANGE_DAYS)?;
                Period::Custom(from, to)
            }
            Ok(analytics_pb::Period::Unspecified) | Err(_) => {
                return Err(Error::invalid("period", "must be DAY, WEEK, MONTH or CUSTOM").into());
            }
        };
        let (from, to) = period.range();
        let found = self.0.most_expensive(period).await?;
        Ok(Response::new(analytics_pb::GetMostExpensiveTaskResponse {
            from_day: format_day(from),
            to_day: format_day(to),
            task: found.map(|e| analytics_pb::ExpensiveTask {
                task_id: e.task_id.map(|t| t.to_string()).unwrap_or_default(),
                jira_id: e.jira_id,
                title: e.title,
                description: e.description,
                reward_cents: e.amount.get(),
                completed_day: format_day(e.billing_day),
                assignee_id: e.user_id.to_string(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl PriceService for Api {
    #[tracing::instrument(skip_all, fields(count = request.get_ref().task_ids.len()))]
    async fn get_task_prices(
        &self,
        request: Request<pb::GetTaskPricesRequest>,
    ) -> Result<Response<pb::GetTaskPricesResponse>, Status> {
        let raw = &request.get_ref().task_ids;
        if raw.is_empty() || raw.len() > MAX_PRICE_IDS {
            return Err(Error::invalid("task_ids", "must hold 1 to 500 task ids").into());
        }
        let ids = raw
            .iter()
            .map(|id| input::id("task_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let prices = self.0.prices(&ids).await?;
        Ok(Response::new(pb::GetTaskPricesResponse {
            prices: prices
                .into_iter()
                .map(|(id, p)| pb::TaskPrice {
                    task_id: id.to_string(),
                    assign_fee_cents: p.fee.get(),
                    reward_cents: p.reward.get(),
                })
                .collect(),
        }))
    }
}
