//! `popug.accounting.v1.PriceService`: the prices of tasks, for anyone signed in. Prices
//! are the same for every user and never change once set, so they are safe to show and
//! to cache (the gateway does).

use pb::price_service_server::PriceService;
use popug_auth::caller;
use popug_proto::popug::accounting::v1 as pb;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::error::Error;

/// Most task ids one request may ask for.
const MAX_IDS: usize = 500;

/// Serves task prices from the `tasks` table.
#[derive(Clone)]
pub struct Prices(pub PgPool);

#[tonic::async_trait]
impl PriceService for Prices {
    #[tracing::instrument(skip_all, fields(count = request.get_ref().task_ids.len()))]
    async fn get_task_prices(
        &self,
        request: Request<pb::GetTaskPricesRequest>,
    ) -> Result<Response<pb::GetTaskPricesResponse>, Status> {
        caller(&request)?;
        let raw = &request.get_ref().task_ids;
        if raw.is_empty() || raw.len() > MAX_IDS {
            return Err(Error::invalid("task_ids", "must hold 1 to 500 task ids").into());
        }
        let ids = raw
            .iter()
            .map(|id| Uuid::parse_str(id).map_err(|_| Error::invalid("task_ids", "must be UUIDs")))
            .collect::<Result<Vec<_>, _>>()?;
        let rows: Vec<(Uuid, i64, i64)> =
            sqlx::query_as("SELECT id, fee_cents, reward_cents FROM tasks WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&self.0)
                .await
                .map_err(Error::from)?;
        let prices = rows
            .into_iter()
            .map(|(id, fee, reward)| pb::TaskPrice {
                task_id: id.to_string(),
                assign_fee_cents: fee,
                reward_cents: reward,
            })
            .collect();
        Ok(Response::new(pb::GetTaskPricesResponse { prices }))
    }
}
