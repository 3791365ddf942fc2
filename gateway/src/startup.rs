//! Wiring: [`Application`] reads the policies, prepares the upstream channels and binds
//! the one public port; running it serves gRPC, grpc-web and the web UI, watches the
//! upstreams' health, runs the cache invalidation and follows the accounts' versions
//! (revoked tokens) until shutdown. Also the gateway's own command, `policy-table`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use popug_auth::{AccountVersions, Authenticator, HttpJwks, PolicyTable, Verifier, VerifierConfig};
use popug_service::{Config, Service, Shutdown, Workers};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use popug_proto::popug::gateway::v1::board_service_server::BoardServiceServer;

use crate::board::Board;
use crate::cache::Cache;
use crate::config::Settings;
use crate::proxy::{Proxy, ProxyState, Upstream};
use crate::ratelimit::RateLimiter;
use crate::upstream::{Dialing, Endpoints};

/// A built, bound, not yet running gateway.
pub struct Application {
    settings: Settings,
    listener: TcpListener,
    proxy: Arc<ProxyState>,
    cache: Arc<Cache>,
    /// This replica's view of every account's version (revoked tokens).
    versions: Arc<AccountVersions>,
}

fn endpoints(
    name: &'static str,
    urls: &str,
    settings: &Settings,
) -> anyhow::Result<Arc<Endpoints>> {
    let dialing = Dialing {
        connect_timeout: settings.connect_timeout,
    };
    Endpoints::new(name, urls, dialing).map_err(anyhow::Error::msg)
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
    const CONSUMERS: &'static [&'static str] = &[crate::invalidate::CONSUMER];
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
                endpoints: endpoints("account", &settings.account_url, &settings)?,
            },
            Upstream {
                name: "taskkeeper",
                packages: &["popug.tasks.v1"],
                endpoints: endpoints("taskkeeper", &settings.taskkeeper_url, &settings)?,
            },
            Upstream {
                name: "accounting",
                packages: &["popug.accounting.v1", "popug.analytics.v1"],
                endpoints: endpoints("accounting", &settings.accounting_url, &settings)?,
            },
        ];
        crate::proxy::register_refusals();
        let versions = Arc::new(AccountVersions::new());
        let auth = Authenticator::new(Arc::new(verifier)).with_revocation(versions.clone());
        let proxy = Arc::new(ProxyState {
            policies,
            auth: Arc::new(auth),
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
            versions,
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
        // Revoked tokens: every account event, read by this replica itself (the cache
        // consumer above is shared by the replicas).
        let (bus, versions) = (self.settings.bus.clone(), self.versions.clone());
        workers.spawn("account-versions", |stop| {
            popug_service::versions::follow_bus(bus, versions, stop)
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
        let web = crate::web::fallback(self.settings.web_dir.clone(), Proxy(self.proxy.clone()));
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
        metrics::gauge!(popug_metrics::names::SERVING).set(1.0);
        let service = tower::ServiceBuilder::new()
            // Outermost: one span per call, parented on the caller's trace context.
            .layer(
                TraceLayer::new_for_grpc()
                    .make_span_with(request_span)
                    .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            )
            // Browsers ask first (preflight) and must see grpc-status in the answer.
            .layer(cors)
            .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
            // grpc-web becomes plain gRPC before routing, and back on the way out; plain
            // HTTP (the UI, /metrics) passes by.
            .layer(crate::web::WebSplitLayer)
            // grpc_server_* of every gRPC call (grpc-web ones too, as gRPC by now), the
            // gateway's refusals included.
            .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
            .layer(popug_grpc::metrics_layer())
            .service(Routes::from(router));
        crate::server::serve(
            self.listener,
            service,
            self.settings.limits.clone(),
            workers.stopped(),
        )
        .await;
        metrics::gauge!(popug_metrics::names::SERVING).set(0.0);
        workers.join().await;
        Ok(())
    }
}

fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!("gateway", rpc = %request.uri().path(), otel.kind = "server");
    popug_telemetry::extract_headers(&span, request.headers());
    span
}

/// Reports, per public service, what its upstream's endpoints' own health checks say
/// (SERVING while any endpoint serves it): the gateway's health answers for the whole
/// mesh. Probing restores ejected endpoints that serve again and ejects those that stop;
/// upstream names are resolved again on each round. The gateway itself ("") is SERVING
/// while it runs.
async fn watch_upstreams(
    proxy: Arc<ProxyState>,
    health: HealthReporter,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    health.set_service_status("", ServingStatus::Serving).await;
    let services: Vec<String> = proxy.policies.services().map(str::to_owned).collect();
    loop {
        for upstream in &proxy.upstreams {
            upstream.endpoints.resolve().await;
        }
        for service in &services {
            let upstream = proxy.upstreams.iter().find(|u| {
                u.packages
                    .iter()
                    .any(|p| service.starts_with(&format!("{p}.")))
            });
            let status = match upstream {
                Some(u) if u.endpoints.probe(service).await => ServingStatus::Serving,
                Some(_) => ServingStatus::NotServing,
                None => ServingStatus::Unknown,
            };
            health.set_service_status(service, status).await;
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
