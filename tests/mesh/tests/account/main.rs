//! Account's own integration tests, against a mesh that runs Account alone (real
//! PostgreSQL and NATS, its own database and stream prefix per test):
//!
//! - [`auth`] — login, the access token's claims and the JWKS, refresh rotation, logout
//! - [`keys`] — signing-key rotation and retirement, forged and missing tokens
//! - [`accounts`] — CRUD by permission, profiles, bad input, paging
//! - [`events`] — one account event per change, nothing left in the outbox
//! - [`health`] — health and reflection list exactly Account's services

#![allow(clippy::unwrap_used)]

mod accounts;
mod auth;
mod events;
mod health;
mod keys;

use std::sync::Arc;
use std::time::Duration;

use pb::auth_service_client::AuthServiceClient;
use popug_auth::{HttpJwks, Verifier, VerifierConfig};
use popug_mesh::{Mesh, with_token};
use popug_proto::popug::account::v1 as pb;
use tonic::transport::Channel;

/// Account alone, with a worker `username` the admin created.
async fn with_worker(username: &str) -> (Mesh, pb::Account) {
    let mesh = Mesh::builder().start().await;
    let worker = mesh
        .create(&mesh.admin, username, pb::Role::Worker)
        .await
        .unwrap();
    (mesh, worker)
}

/// An update of account `id` that changes its name only.
fn set_name(id: &str, name: &str) -> pb::UpdateAccountRequest {
    pb::UpdateAccountRequest {
        id: id.into(),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// An update of account `id` that changes its role only.
fn set_role(id: &str, role: pb::Role) -> pb::UpdateAccountRequest {
    pb::UpdateAccountRequest {
        id: id.into(),
        role: Some(role as i32),
        ..Default::default()
    }
}

/// Account's RPCs as the tests call them, directly at Account.
trait AccountCalls {
    fn auth(&self) -> AuthServiceClient<Channel>;
    /// Trades `refresh_token` for a new pair.
    async fn refresh(&self, refresh_token: String) -> Result<pb::TokenPair, tonic::Status>;
    /// Creates `username` (password `<username>-password`) with `token`'s rights.
    async fn create(
        &self,
        token: &str,
        username: &str,
        role: pb::Role,
    ) -> Result<pb::Account, tonic::Status>;
    async fn who_am_i(&self, token: &str) -> Result<pb::Account, tonic::Status>;
    async fn get(&self, token: &str, id: &str) -> Result<pb::Account, tonic::Status>;
    /// A verifier of the mesh's issuer and audience against Account's HTTP JWKS.
    fn verifier(&self) -> Verifier;
    /// The same for another audience.
    fn verifier_for(&self, audience: &str) -> Verifier;
}

impl AccountCalls for Mesh {
    fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.account.clone())
    }

    async fn refresh(&self, refresh_token: String) -> Result<pb::TokenPair, tonic::Status> {
        let response = self
            .auth()
            .refresh(pb::RefreshRequest { refresh_token })
            .await?;
        Ok(response.into_inner().tokens.unwrap())
    }

    async fn create(
        &self,
        token: &str,
        username: &str,
        role: pb::Role,
    ) -> Result<pb::Account, tonic::Status> {
        let request = pb::CreateAccountRequest {
            username: username.into(),
            name: "Test".into(),
            surname: "Popug".into(),
            email: format!("{username}@test.example"),
            role: role as i32,
            password: format!("{username}-password"),
            extra_permissions: vec![],
        };
        Ok(self
            .accounts_client()
            .create_account(with_token(token, request))
            .await?
            .into_inner()
            .account
            .unwrap())
    }

    async fn who_am_i(&self, token: &str) -> Result<pb::Account, tonic::Status> {
        Ok(self
            .accounts_client()
            .who_am_i(with_token(token, pb::WhoAmIRequest {}))
            .await?
            .into_inner()
            .account
            .unwrap())
    }

    async fn get(&self, token: &str, id: &str) -> Result<pb::Account, tonic::Status> {
        let request = pb::GetAccountRequest { id: id.into() };
        let response = self
            .accounts_client()
            .get_account(with_token(token, request))
            .await?;
        Ok(response.into_inner().account.unwrap())
    }

    fn verifier(&self) -> Verifier {
        self.verifier_for(popug_mesh::AUDIENCE)
    }

    fn verifier_for(&self, audience: &str) -> Verifier {
        let mut config = VerifierConfig::new(popug_mesh::ISSUER, audience);
        config.refetch_interval = Duration::ZERO;
        let source = HttpJwks::new(&self.jwks_url).unwrap();
        Verifier::new(config, Arc::new(source))
    }
}
