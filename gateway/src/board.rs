//! `popug.gateway.v1.BoardService`: answers composed from several services at once.
//!
//! Each call runs under the caller's deadline (capped like any proxied call). The core
//! of an answer (the tasks of a board) must arrive; enrichments (names, prices, balance,
//! audit log) are fetched in parallel, from the cache first, each with what is left of
//! the deadline — whatever is down or late is left out and named in `missing`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use popug_proto::popug::account::v1 as account_pb;
use popug_proto::popug::accounting::v1 as accounting_pb;
use popug_proto::popug::gateway::v1 as pb;
use popug_proto::popug::tasks::v1 as tasks_pb;
use prost::Message;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::cache::Cache;
use crate::proxy::{ProxyState, deadline};

/// Time kept back from the deadline to assemble and send the answer.
const ASSEMBLY_MARGIN: Duration = Duration::from_millis(20);

/// The composing service.
#[derive(Clone)]
pub struct Board {
    pub state: Arc<ProxyState>,
    pub cache: Arc<Cache>,
}

/// What one composed call carries to the services it asks.
struct Call {
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    deadline: Instant,
}

impl Call {
    /// A request to an upstream with the caller's token, the trace context and what is
    /// left of the deadline.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        metadata.insert("authorization", self.authorization.clone());
        // The composed call's span is the parent of every upstream call it makes.
        for (key, value) in popug_telemetry::inject(&tracing::Span::current()) {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                value.parse(),
            ) {
                metadata.insert(key, value);
            }
        }
        request.set_timeout(self.remaining());
        request
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The call a composed answer cannot do without, within the deadline: its refusals
    /// pass through; running out of time is DEADLINE_EXCEEDED (tonic reports its own
    /// timeout as CANCELLED "Timeout expired").
    async fn core<T>(&self, fetch: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        match tokio::time::timeout(self.remaining(), fetch).await {
            Err(_) => Err(Status::deadline_exceeded("the deadline passed")),
            Ok(Err(status))
                if status.code() == Code::Cancelled && status.message().starts_with("Timeout") =>
            {
                Err(Status::deadline_exceeded("the deadline passed"))
            }
            Ok(result) => result,
        }
    }

    /// Runs an enrichment within the deadline (less the assembly margin); `None` (counted
    /// in `gateway_composition_parts_missing_total{part=what}`) when it failed or was late.
    async fn enrich<T>(
        &self,
        what: &'static str,
        fetch: impl Future<Output = Result<T, Status>>,
    ) -> Option<T> {
        let budget = self.remaining().saturating_sub(ASSEMBLY_MARGIN);
        let part = match tokio::time::timeout(budget, fetch).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(status)) => {
                tracing::warn!(what, code = ?status.code(), message = status.message(), "enrichment failed");
                None
            }
            Err(_) => {
                tracing::warn!(what, "enrichment late for the deadline");
                None
            }
        };
        if part.is_none() {
            metrics::counter!(popug_metrics::names::GATEWAY_PARTS_MISSING, "part" => what)
                .increment(1);
        }
        part
    }
}

impl Board {
    async fn begin<T>(&self, method: &str, request: &Request<T>) -> Result<Call, Status> {
        let headers = request.metadata().clone().into_headers();
        let path = format!("/popug.gateway.v1.BoardService/{method}");
        self.state
            .admit(&path, &headers, request.remote_addr())
            .await?;
        let authorization = request
            .metadata()
            .get("authorization")
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing access token"))?;
        let timeout = deadline(&headers, self.state.default_timeout);
        Ok(Call {
            authorization,
            deadline: Instant::now() + timeout,
        })
    }

    fn channel(&self, upstream: &str) -> Result<Channel, Status> {
        self.state
            .upstream(upstream)
            .map(crate::proxy::Upstream::channel)
            .ok_or_else(|| Status::internal("upstream missing from configuration"))
    }

    /// Public profiles of `ids`, from the cache first, the rest from Account (then cached).
    async fn profiles(
        &self,
        call: &Call,
        ids: Vec<String>,
    ) -> Result<HashMap<String, account_pb::Profile>, Status> {
        let cached = self.cache_get::<account_pb::Profile>("profile", &ids).await;
        let mut found: HashMap<String, account_pb::Profile> = cached;
        let missing: Vec<String> = ids
            .into_iter()
            .filter(|id| !found.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let mut client = account_pb::account_service_client::AccountServiceClient::new(
                self.channel("account")?,
            );
            let fetched = client
                .list_profiles(call.request(account_pb::ListProfilesRequest { ids: missing }))
                .await?
                .into_inner()
                .profiles;
            self.cache_put("profile", fetched.iter().map(|p| (p.id.clone(), p)))
                .await;
            found.extend(fetched.into_iter().map(|p| (p.id.clone(), p)));
        }
        Ok(found)
    }

    /// Prices of `task_ids`, from the cache first, the rest from Accounting (then cached).
    async fn prices(
        &self,
        call: &Call,
        task_ids: Vec<String>,
    ) -> Result<HashMap<String, accounting_pb::TaskPrice>, Status> {
        let mut found = self
            .cache_get::<accounting_pb::TaskPrice>("price", &task_ids)
            .await;
        let missing: Vec<String> = task_ids
            .into_iter()
            .filter(|id| !found.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let mut client = accounting_pb::price_service_client::PriceServiceClient::new(
                self.channel("accounting")?,
            );
            let fetched = client
                .get_task_prices(
                    call.request(accounting_pb::GetTaskPricesRequest { task_ids: missing }),
                )
                .await?
                .into_inner()
                .prices;
            self.cache_put("price", fetched.iter().map(|p| (p.task_id.clone(), p)))
                .await;
            found.extend(fetched.into_iter().map(|p| (p.task_id.clone(), p)));
        }
        Ok(found)
    }

    async fn cache_get<M: Message + Default>(
        &self,
        kind: &str,
        ids: &[String],
    ) -> HashMap<String, M> {
        let keys: Vec<String> = ids.iter().map(|id| self.cache.key(kind, id)).collect();
        let values = self.cache.get_many(&keys).await;
        ids.iter()
            .zip(values)
            .filter_map(|(id, value)| Some((id.clone(), M::decode(value?.as_slice()).ok()?)))
            .collect()
    }

    async fn cache_put<'a, M: Message + 'a>(
        &self,
        kind: &str,
        items: impl Iterator<Item = (String, &'a M)>,
    ) {
        let items = items
            .map(|(id, m)| (self.cache.key(kind, &id), m.encode_to_vec()))
            .collect();
        self.cache.put_many(items).await;
    }
}

fn unique(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.filter(|id| seen.insert(id.clone())).collect()
}

#[tonic::async_trait]
impl pb::board_service_server::BoardService for Board {
    #[tracing::instrument(skip_all)]
    async fn get_task_board(
        &self,
        request: Request<pb::GetTaskBoardRequest>,
    ) -> Result<Response<pb::GetTaskBoardResponse>, Status> {
        let call = self.begin("GetTaskBoard", &request).await?;
        let r = request.into_inner();
        let mut tasks_client =
            tasks_pb::task_service_client::TaskServiceClient::new(self.channel("taskkeeper")?);
        // The core: TaskKeeper decides what the caller may see; its refusals pass through.
        let listed = call
            .core(
                tasks_client.list_tasks(call.request(tasks_pb::ListTasksRequest {
                    page_size: r.page_size,
                    page_token: r.page_token,
                    status: r.status,
                    assignee_id: r.assignee_id,
                })),
            )
            .await?
            .into_inner();

        let assignees = unique(listed.tasks.iter().map(|t| t.assignee_id.clone()));
        let task_ids: Vec<String> = listed.tasks.iter().map(|t| t.id.clone()).collect();
        let (names, prices) = if listed.tasks.is_empty() {
            (Some(HashMap::new()), Some(HashMap::new()))
        } else {
            tokio::join!(
                call.enrich("names", self.profiles(&call, assignees)),
                call.enrich("prices", self.prices(&call, task_ids)),
            )
        };
        let mut missing = Vec::new();
        if names.is_none() {
            missing.push(pb::Part::Names as i32);
        }
        if prices.is_none() {
            missing.push(pb::Part::Prices as i32);
        }
        let tasks = listed
            .tasks
            .into_iter()
            .map(|task| {
                let profile = names.as_ref().and_then(|n| n.get(&task.assignee_id));
                let price = prices.as_ref().and_then(|p| p.get(&task.id));
                pb::BoardTask {
                    assignee_name: profile
                        .map(|p| format!("{} {}", p.name, p.surname))
                        .unwrap_or_default(),
                    assignee_username: profile.map(|p| p.username.clone()).unwrap_or_default(),
                    priced: price.is_some(),
                    assign_fee_cents: price.map_or(0, |p| p.assign_fee_cents),
                    reward_cents: price.map_or(0, |p| p.reward_cents),
                    task: Some(task),
                }
            })
            .collect();
        Ok(Response::new(pb::GetTaskBoardResponse {
            tasks,
            next_page_token: listed.next_page_token,
            missing,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_my_overview(
        &self,
        request: Request<pb::GetMyOverviewRequest>,
    ) -> Result<Response<pb::GetMyOverviewResponse>, Status> {
        let call = self.begin("GetMyOverview", &request).await?;
        let mut tasks =
            tasks_pb::task_service_client::TaskServiceClient::new(self.channel("taskkeeper")?);
        let accounting = accounting_pb::accounting_service_client::AccountingServiceClient::new(
            self.channel("accounting")?,
        );
        let (mut balance_client, mut entries_client) = (accounting.clone(), accounting);
        // Empty ids mean "the caller" to both services.
        let (open, balance, entries) = tokio::join!(
            call.enrich("tasks", async {
                tasks
                    .list_tasks(call.request(tasks_pb::ListTasksRequest {
                        page_size: 100,
                        status: tasks_pb::TaskStatus::Open as i32,
                        ..Default::default()
                    }))
                    .await
                    .map(|r| r.into_inner().tasks)
            }),
            call.enrich("balance", async {
                balance_client
                    .get_balance(call.request(accounting_pb::GetBalanceRequest::default()))
                    .await
                    .map(Response::into_inner)
            }),
            call.enrich("entries", async {
                entries_client
                    .list_entries(call.request(accounting_pb::ListEntriesRequest {
                        page_size: 100,
                        ..Default::default()
                    }))
                    .await
                    .map(|r| r.into_inner().entries)
            }),
        );
        let mut missing = Vec::new();
        for (absent, part) in [
            (open.is_none(), pb::Part::Tasks),
            (balance.is_none(), pb::Part::Balance),
            (entries.is_none(), pb::Part::Entries),
        ] {
            if absent {
                missing.push(part as i32);
            }
        }
        let balance = balance.unwrap_or_default();
        Ok(Response::new(pb::GetMyOverviewResponse {
            open_tasks: open.unwrap_or_default(),
            balance_cents: balance.balance_cents,
            billing_day: balance.billing_day,
            today_entries: entries.unwrap_or_default(),
            missing,
        }))
    }
}
