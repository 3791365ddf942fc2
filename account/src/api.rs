//! The gRPC surface: parse the request, call [`Accounts`], map the answer. Thin on
//! purpose: who may call each RPC is decided before it (the policies in `proto/`), the
//! rules live in `service.rs`.

use std::sync::Arc;

use pb::account_service_server::AccountService;
use pb::auth_service_server::AuthService;
use popug_auth::{Permission, caller};
use popug_errors::input::id as parse_id;
use popug_grpc::timestamp;
use popug_idempotency::Key;
use popug_proto::popug::account::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::role_to_proto;
use crate::error::Error;
use crate::service::{Accounts, CreateAccount};
use crate::store::accounts::AccountRow;

/// The API view; `reveal_email` only for the account itself and admins.
fn account(row: &AccountRow, reveal_email: bool) -> pb::Account {
    pb::Account {
        id: row.id.to_string(),
        username: row.username.clone(),
        name: row.name.clone(),
        surname: row.surname.clone(),
        email: if reveal_email {
            row.email.clone()
        } else {
            String::new()
        },
        role: role_to_proto(row.role),
        permissions: row.permissions(),
        active: row.active,
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
        version: row.version,
    }
}

/// What anyone signed in may see.
fn profile(row: &AccountRow) -> pb::Profile {
    pb::Profile {
        id: row.id.to_string(),
        username: row.username.clone(),
        name: row.name.clone(),
        surname: row.surname.clone(),
        role: role_to_proto(row.role),
        active: row.active,
    }
}

/// Both gRPC services over one [`Accounts`].
#[derive(Clone)]
pub struct Api(pub Arc<Accounts>);

#[tonic::async_trait]
impl AuthService for Api {
    #[tracing::instrument(skip_all, fields(username = %request.get_ref().username))]
    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let r = request.into_inner();
        let (tokens, row) = self.0.login(&r.username, &r.password).await?;
        Ok(Response::new(pb::LoginResponse {
            tokens: Some(tokens),
            account: Some(account(&row, true)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let tokens = self.0.refresh(&request.get_ref().refresh_token).await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.0.logout(&request.get_ref().refresh_token).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn logout_everywhere(
        &self,
        request: Request<pb::LogoutEverywhereRequest>,
    ) -> Result<Response<pb::LogoutEverywhereResponse>, Status> {
        let caller = caller(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        self.0.logout_everywhere(caller, id).await?;
        Ok(Response::new(pb::LogoutEverywhereResponse {}))
    }

    async fn get_jwks(
        &self,
        _: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        Ok(Response::new(pb::GetJwksResponse {
            jwks_json: self.0.keys.jwks_json(),
        }))
    }
}

#[tonic::async_trait]
impl AccountService for Api {
    #[tracing::instrument(skip_all, fields(username = %request.get_ref().username))]
    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let new = CreateAccount::parse(request.get_ref())?;
        let key = Key::of(&request, caller(&request)?.id, "CreateAccount")?;
        let row = self.0.create(&new, key.as_ref()).await?;
        Ok(Response::new(pb::CreateAccountResponse {
            account: Some(account(&row, true)),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = caller(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let row = self.0.get(id).await?;
        let reveal = caller.id == id || caller.has(Permission::AccountsManage);
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account(&row, reveal)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let r = request.get_ref();
        let role = match r.role {
            0 => None,
            other => Some(crate::domain::parse_role(other)?),
        };
        let (rows, next_page_token) = self.0.list(r.page_size, &r.page_token, role).await?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: rows.iter().map(|row| account(row, true)).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn update_account(
        &self,
        request: Request<pb::UpdateAccountRequest>,
    ) -> Result<Response<pb::UpdateAccountResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.0.update(caller, request.get_ref()).await?;
        Ok(Response::new(pb::UpdateAccountResponse {
            account: Some(account(&row, true)),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let caller = caller(&request)?;
        let id = parse_id("id", &request.get_ref().id)?;
        let row = self.0.deactivate(caller, id).await?;
        Ok(Response::new(pb::DeleteAccountResponse {
            account: Some(account(&row, true)),
        }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn list_profiles(
        &self,
        request: Request<pb::ListProfilesRequest>,
    ) -> Result<Response<pb::ListProfilesResponse>, Status> {
        let ids = &request.get_ref().ids;
        if ids.is_empty() || ids.len() > 500 {
            return Err(Error::invalid("ids", "must hold 1 to 500 account ids").into());
        }
        let ids = ids
            .iter()
            .map(|id| parse_id("ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = self.0.profiles(&ids).await?;
        Ok(Response::new(pb::ListProfilesResponse {
            profiles: rows.iter().map(profile).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        let row = self.0.get(caller.id).await?;
        Ok(Response::new(pb::WhoAmIResponse {
            account: Some(account(&row, true)),
        }))
    }
}
