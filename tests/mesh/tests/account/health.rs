//! What Account says about itself: health SERVING for both its services, and reflection
//! listing exactly the services it serves (plus health).

use bytes::Bytes;
use popug_mesh::Mesh;
use popug_mesh::call::RawCodec;
use prost::Message;

#[tokio::test]
async fn health_reports_serving_for_both_services() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    let mesh = Mesh::builder().start().await;
    let mut health = HealthClient::new(mesh.account.clone());
    for service in [
        "popug.account.v1.AuthService",
        "popug.account.v1.AccountService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
}

/// `grpc.reflection.v1.ServerReflectionRequest` with `list_services` set (the same
/// message in v1alpha); the other requests are left out.
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionRequest {
    #[prost(string, optional, tag = "7")]
    list_services: Option<String>,
}

/// `ServerReflectionResponse`, only its `list_services_response`.
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionResponse {
    #[prost(message, optional, tag = "6")]
    list_services_response: Option<ListServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

/// The service names reflection at `path` lists, sorted.
async fn listed(mesh: &Mesh, path: &'static str) -> Vec<String> {
    let mut grpc = tonic::client::Grpc::new(mesh.account.clone());
    grpc.ready().await.unwrap();
    let request = ReflectionRequest {
        list_services: Some(String::new()),
    };
    let requests = tokio_stream::iter([Bytes::from(request.encode_to_vec())]);
    let mut responses = grpc
        .streaming(
            tonic::Request::new(requests),
            http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let mut names: Vec<String> = ReflectionResponse::decode(response)
        .unwrap()
        .list_services_response
        .unwrap_or_else(|| panic!("{path} answered no service list"))
        .service
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn reflection_lists_exactly_accounts_services_and_health() {
    let mesh = Mesh::builder().start().await;
    for path in [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        assert_eq!(
            listed(&mesh, path).await,
            [
                "grpc.health.v1.Health",
                "popug.account.v1.AccountService",
                "popug.account.v1.AuthService",
            ],
            "{path}"
        );
    }
}
