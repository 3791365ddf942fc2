//! What the services say about themselves: health SERVING for both of Account's services,
//! and each service's reflection listing exactly the services it serves (plus health),
//! with the proto comments (`grpcurl describe` shows them).

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

/// `grpc.reflection.v1.ServerReflectionRequest` with `file_containing_symbol` or
/// `list_services` set (the same message in v1alpha); the other requests are left out.
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionRequest {
    #[prost(string, optional, tag = "4")]
    file_containing_symbol: Option<String>,
    #[prost(string, optional, tag = "7")]
    list_services: Option<String>,
}

/// `ServerReflectionResponse`, only its `file_descriptor_response` and
/// `list_services_response`.
#[derive(Clone, PartialEq, prost::Message)]
struct ReflectionResponse {
    #[prost(message, optional, tag = "4")]
    file_descriptor_response: Option<FileDescriptorResponse>,
    #[prost(message, optional, tag = "6")]
    list_services_response: Option<ListServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file_descriptor_proto: Vec<Vec<u8>>,
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

/// One reflection request to `channel` at `path`; its answer.
async fn reflect(
    channel: &tonic::transport::Channel,
    path: &'static str,
    request: ReflectionRequest,
) -> ReflectionResponse {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
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
    ReflectionResponse::decode(response).unwrap()
}

/// The service names reflection at `path` lists, sorted.
async fn listed(channel: &tonic::transport::Channel, path: &'static str) -> Vec<String> {
    let request = ReflectionRequest {
        list_services: Some(String::new()),
        ..Default::default()
    };
    let mut names: Vec<String> = reflect(channel, path, request)
        .await
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
async fn reflection_lists_exactly_each_services_own_with_comments() {
    let mesh = Mesh::builder().taskkeeper().accounting().start().await;
    let served = [
        (
            mesh.account.clone(),
            vec![
                "popug.account.v1.AccountService",
                "popug.account.v1.AuthService",
            ],
        ),
        (
            mesh.taskkeeper().channel.clone(),
            vec!["popug.tasks.v1.TaskService"],
        ),
        (
            mesh.accounting().channel.clone(),
            vec![
                "popug.accounting.v1.AccountingService",
                "popug.accounting.v1.PriceService",
                "popug.analytics.v1.AnalyticsService",
            ],
        ),
    ];
    for (channel, own) in &served {
        let mut expected = vec!["grpc.health.v1.Health"];
        expected.extend(own);
        expected.sort();
        for path in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(listed(channel, path).await, expected, "{path}");
        }
    }

    // The descriptors carry the proto comments (they were bare fields).
    let request = ReflectionRequest {
        file_containing_symbol: Some("popug.account.v1.AccountService".into()),
        ..Default::default()
    };
    let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    let files = reflect(&mesh.account, path, request)
        .await
        .file_descriptor_response
        .unwrap()
        .file_descriptor_proto;
    let comments: Vec<String> = files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .filter(|file| file.name() == "popug/account/v1/account.proto")
        .flat_map(|file| file.source_code_info.unwrap_or_default().location)
        .filter_map(|location| location.leading_comments)
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("CreateAccount") || c.contains("account")),
        "no comments in account.proto's descriptor: {comments:?}"
    );
}
