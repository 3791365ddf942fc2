//! The gRPC surface: parse the request, call [`Tasks`], map the answer. Thin on purpose;
//! the rules live in `service.rs`.

use std::sync::Arc;

use pb::task_service_server::TaskService;
use popug_auth::{Permission, caller};
use popug_proto::popug::tasks::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{self, NewTask, parse_id};
use crate::error::Error;
use crate::service::{ListFilter, Tasks};

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
        caller(&request)?.require(Permission::TasksCreate)?;
        let r = request.get_ref();
        let new = NewTask::parse(&r.title, &r.jira_id, &r.description)?;
        let task = self.0.create(new).await?;
        Ok(Response::new(pb::CreateTaskResponse {
            task: Some(task.to_proto()),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let caller = caller(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let task = self.0.get(caller, id).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(task.to_proto()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let limit = domain::parse_page_size(r.page_size)?;
        let after = domain::parse_page_token(&r.page_token)?;
        let status = match pb::TaskStatus::try_from(r.status) {
            Ok(pb::TaskStatus::Unspecified) => None,
            Ok(pb::TaskStatus::Open) => Some(domain::Status::Open),
            Ok(pb::TaskStatus::Done) => Some(domain::Status::Done),
            Err(_) => return Err(Error::invalid("status", "unknown status").into()),
        };
        let assignee = if r.assignee_id.is_empty() {
            None
        } else {
            Some(parse_id("assignee_id", &r.assignee_id)?)
        };
        let (rows, next_page_token) = self
            .0
            .list(caller, ListFilter { status, assignee }, after, limit)
            .await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: rows.iter().map(|t| t.to_proto()).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = caller(&request)?;
        caller.require(Permission::TasksComplete)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let task = self.0.complete(caller, id).await?;
        Ok(Response::new(pb::CompleteTaskResponse {
            task: Some(task.to_proto()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn reassign_open_tasks(
        &self,
        request: Request<pb::ReassignOpenTasksRequest>,
    ) -> Result<Response<pb::ReassignOpenTasksResponse>, Status> {
        caller(&request)?.require(Permission::TasksReassign)?;
        let done = self.0.reassign().await?;
        Ok(Response::new(pb::ReassignOpenTasksResponse {
            reassigned: done.count,
            reassign_id: done.reassign_id.to_string(),
        }))
    }
}
