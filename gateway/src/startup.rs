//! Wiring: [`Application`] reads the policies, prepares the upstream channels and binds
//! the one public port; running it serves gRPC, grpc-web and the web UI, watches the
//! upstreams' health and runs the cache invalidation until shutdown. Also the gateway's
//! own command, `policy-table`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use popug_auth::{Authenticator, HttpJwks, PolicyTable, Verifier, VerifierConfig};
use popug_service::{Config, Service, Shutdown, Workers};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::server::HealthReporter;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use popug_proto::popug::gateway::v1::board_service_server::BoardServiceServer;

use crate::board::Board;
use crate::cache::Cache;
use crate::config::Settings;
use crate::proxy::{Proxy, ProxyState, Upstream};
use crate::ratelimit::RateLimiter;

/// A built, bound, not yet running gateway.
pub struct Application {
    settings: Settings,
    listener: TcpListener,
    proxy: Arc<ProxyState>,
    cache: Arc<Cache>,
}

fn channel(url: &str, settings: &Settings) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}

impl Application {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.settings.listen_addr)
    }

    /// The cache, for tests and metrics.
    pub fn cache(&self) -> Arc<Cache> {
        self.cache.clone()
    }
}

impl Service for Application {
    const NAME: &'static str = "gateway";
    const COMMANDS: &'static [&'static str] = &["policy-table"];
    type Settings = Settings;

    async fn command(_: Settings, args: &[&str]) -> Option<anyhow::Result<()>> {
        match args {
            ["policy-table"] => Some(
                PolicyTable::popug()
                    .map(|table| print!("{}", table.markdown()))
                    .map_err(Into::into),
            ),
            _ => None,
        }
    }

    async fn build(settings: Settings) -> anyhow::Result<Application> {
        settings.validate()?;
        let policies = PolicyTable::popug()?;
        let jwks = HttpJwks::new(&settings.tokens.jwks_url).map_err(anyhow::Error::msg)?;
        let verifier = Verifier::new(
            VerifierConfig::new(&settings.tokens.issuer, &settings.tokens.audience),
            Arc::new(jwks),
        );
        let upstreams = vec![
            Upstream {
                name: "account",
                packages: &["popug.account.v1"],
                channel: channel(&settings.account_url, &settings)?,
            },
            Upstream {
                name: "taskkeeper",
                packages: &["popug.tasks.v1"],
                channel: channel(&settings.taskkeeper_url, &settings)?,
            },
            Upstream {
                name: "accounting",
                packages: &["popug.accounting.v1", "popug.analytics.v1"],
                channel: channel(&settings.accounting_url, &settings)?,
            },
        ];
        let proxy = Arc::new(ProxyState {
            policies,
            auth: Arc::new(Authenticator::new(Arc::new(verifier))),
            limiter: RateLimiter::new(settings.rate_limit_per_sec, settings.rate_limit_burst),
            upstreams,
            default_timeout: settings.default_timeout,
            max_message_bytes: settings.max_message_bytes,
        });
        let cache = Arc::new(Cache::new(
            settings.redis_url.as_deref(),
            &settings.cache_prefix,
            settings.cache_ttl,
        ));
        let listener = TcpListener::bind(settings.listen_addr).await?;
        Ok(Application {
            settings,
            listener,
            proxy,
            cache,
        })
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls.
    async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut workers = Workers::new(shutdown);
        let proxy = self.proxy.clone();
        workers.spawn("upstream-health", |stop| {
            watch_upstreams(proxy, health.clone(), stop)
        });
        let (bus, cache) = (self.settings.bus.clone(), self.cache.clone());
        workers.spawn(crate::invalidate::CONSUMER, |stop| {
            crate::invalidate::run(bus, cache, stop)
        });

        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(popug_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(popug_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        // Reflection lists the public services only, not the gateway's internals.
        for service in self.proxy.policies.services() {
            reflection = reflection.with_service_name(service);
            reflection_alpha = reflection_alpha.with_service_name(service);
        }
        reflection = reflection.with_service_name("grpc.health.v1.Health");
        reflection_alpha = reflection_alpha.with_service_name("grpc.health.v1.Health");

        let board = Board {
            state: self.proxy.clone(),
            cache: self.cache.clone(),
        };
        let local = Routes::new(health_service)
            .add_service(BoardServiceServer::new(board))
            .add_service(reflection.build_v1()?)
            .add_service(reflection_alpha.build_v1alpha()?);
        let web = crate::web::fallback(
            self.settings.web_dir.clone(),
            Proxy(self.proxy.clone()),
            self.cache.clone(),
        );
        let router = local.into_axum_router().fallback_service(web);

        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::mirror_request())
            .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                http::HeaderName::from_static("x-grpc-web"),
                http::HeaderName::from_static("x-user-agent"),
                http::HeaderName::from_static("grpc-timeout"),
                http::HeaderName::from_static("connect-protocol-version"),
                // Creates a client may retry (TaskKeeper and Account keep the key).
                http::HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                http::HeaderName::from_static("grpc-status"),
                http::HeaderName::from_static("grpc-message"),
                http::HeaderName::from_static("grpc-status-details-bin"),
                http::HeaderName::from_static("x-popug-refused-by"),
            ])
            .max_age(Duration::from_secs(600));

        tracing::info!(addr = %self.local_addr(), "gateway serving gRPC, grpc-web and the web UI");
        let result = tonic::transport::Server::builder()
            // grpc-web and the web UI arrive over HTTP/1.1.
            .accept_http1(true)
            .tcp_nodelay(true)
            .max_frame_size(Some(64 * 1024))
            // Outermost: one span per call, parented on the caller's trace context.
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(request_span)
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            // Browsers ask first (preflight) and must see grpc-status in the answer.
            .layer(cors)
            // grpc-web becomes plain gRPC before routing, and back on the way out; plain
            // HTTP (the UI, /metrics) passes by.
            .layer(crate::web::WebSplitLayer)
            .add_routes(Routes::from(router))
            .serve_with_incoming_shutdown(
                // Set per accepted socket: the builder's tcp_nodelay only applies to listeners
                // tonic binds itself. Without it, a response written in two pieces waits for
                // the peer's delayed ACK (~40 ms).
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                workers.stopped(),
            )
            .await;
        workers.join().await;
        Ok(result?)
    }
}

fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("gateway", rpc = %request.uri().path(), otel.kind = "server");
    popug_telemetry::extract_headers(&span, request.headers());
    span
}

/// Reports, per public service, what its upstream's own health check says: the gateway's
/// health answers for the whole mesh. The gateway itself ("") is SERVING while it runs.
async fn watch_upstreams(
    proxy: Arc<ProxyState>,
    health: HealthReporter,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    health.set_service_status("", ServingStatus::Serving).await;
    let services: Vec<String> = proxy.policies.services().map(str::to_owned).collect();
    loop {
        for service in &services {
            let upstream = proxy.upstreams.iter().find(|u| {
                u.packages
                    .iter()
                    .any(|p| service.starts_with(&format!("{p}.")))
            });
            let status = match upstream {
                Some(u) => check(u.channel.clone(), service).await,
                None => ServingStatus::Unknown,
            };
            health.set_service_status(service, status).await;
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn check(channel: Channel, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel);
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(1), client.check(request)).await {
        Ok(Ok(response)) => match response.into_inner().status {
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            _ => ServingStatus::Unknown,
        },
        _ => ServingStatus::NotServing,
    }
}
