//! The gRPC surface: parse the request, call [`Tasks`], map the answer. Thin on purpose:
//! who may call each RPC is decided before it (the policy in `proto/`), the rules live in
//! `service.rs`.

use std::sync::Arc;

use pb::task_service_server::TaskService;
use popug_auth::caller;
use popug_proto::popug::tasks::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{self, NewTask};
use crate::error::Error;
use crate::service::{ListFilter, Tasks};
use crate::store::TaskRow;
use popug_errors::input;
use popug_idempotency::Key;

fn task(row: &TaskRow) -> pb::Task {
    let status = match row.status {
        domain::Status::Open => pb::TaskStatus::Open,
        domain::Status::Done => pb::TaskStatus::Done,
    };
    pb::Task {
        id: row.id.to_string(),
        public_id: row.public_id.to_string(),
        title: row.title.clone(),
        jira_id: row.jira_id.clone(),
        description: row.description.clone(),
        assignee_id: row.assignee_id.to_string(),
        status: status as i32,
        sequence: row.sequence,
        created_at: Some(popug_grpc::timestamp(row.created_at)),
        completed_at: row.completed_at.map(popug_grpc::timestamp),
    }
}

/// The task service over one [`Tasks`].
#[derive(Clone)]
pub struct Api(pub Arc<Tasks>);

#[tonic::async_trait]
impl TaskService for Api {
    #[tracing::instrument(skip_all)]
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let r = request.get_ref();
        let new = NewTask::parse(&r.title, &r.jira_id, &r.description)?;
        let key = Key::of(&request, caller(&request)?.id, "CreateTask")?;
        let row = self.0.create(&new, key.as_ref()).await?;
        Ok(Response::new(pb::CreateTaskResponse {
            task: Some(task(&row)),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let caller = caller(&request)?;
        let id = input::id("id", &request.get_ref().id)?;
        let row = self.0.get(caller, id).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(task(&row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let limit = input::page_size(r.page_size)?;
        let after = input::page_token(&r.page_token)?.unwrap_or(0);
        let status = match pb::TaskStatus::try_from(r.status) {
            Ok(pb::TaskStatus::Unspecified) => None,
            Ok(pb::TaskStatus::Open) => Some(domain::Status::Open),
            Ok(pb::TaskStatus::Done) => Some(domain::Status::Done),
            Err(_) => return Err(Error::invalid("status", "unknown status").into()),
        };
        let assignee = if r.assignee_id.is_empty() {
            None
        } else {
            Some(input::id("assignee_id", &r.assignee_id)?)
        };
        let (rows, next_page_token) = self
            .0
            .list(caller, ListFilter { status, assignee }, after, limit)
            .await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: rows.iter().map(task).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = caller(&request)?;
        let id = input::id("id", &request.get_ref().id)?;
        let row = self.0.complete(caller, id).await?;
        Ok(Response::new(pb::CompleteTaskResponse {
            task: Some(task(&row)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reassign_open_tasks(
        &self,
        _: Request<pb::ReassignOpenTasksRequest>,
    ) -> Result<Response<pb::ReassignOpenTasksResponse>, Status> {
        let done = self.0.reassign().await?;
        Ok(Response::new(pb::ReassignOpenTasksResponse {
            reassigned: done.count,
            reassign_id: done.reassign_id.to_string(),
        }))
    }
}
