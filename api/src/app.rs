//! `Application::build(config) → port() → run_until_stopped()`: the server with its
//! background processors, as `ocart serve` runs it and as tests start it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ocart_domain::token::Capability;
use ocart_domain::Clock;
use ocart_processors::supervisor::{factory, Supervisor};
use ocart_projections::CommandMeta;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::config::Config;
use crate::core::{Core, PROCESSORS_LEASE};
use crate::error::ApiError;
use crate::json::MAX_BODY;
use crate::ratelimit::{Bucket, RateLimiter};
use crate::routes;
use crate::state::AppState;

/// One Prometheus recorder per process (tests start many apps in one process).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("buckets")
                .build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    /// The admin token created on first start, if this start created one.
    pub admin_token: Option<String>,
}

impl Application {
    /// Opens the store (migrating it), creates the first admin token if there is none, and
    /// binds the listener. Nothing runs until `run_until_stopped`.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let core = Core::open(config.clone(), clock).await?;
        // Refuse a bad email/SMS configuration at start, not at the first send.
        core.dispatcher()?;
        crate::cors::configured_origins(&config)?;
        let admin_token = first_admin_token(&core).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
        let port = listener.local_addr()?.port();
        let limiter = Arc::new(RateLimiter::new(&config.rate_limit));
        let state = AppState {
            core,
            limiter,
            metrics: metrics_handle(),
            nats_enabled: config.nats_url.is_some(),
        };
        Ok(Self {
            listener,
            port,
            state,
            admin_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn core(&self) -> Arc<Core> {
        self.state.core.clone()
    }

    /// Serves until `shutdown` resolves: then stops accepting, finishes in-flight requests,
    /// and lets the processors checkpoint before returning.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let processors = if self.state.core.config.processors.enabled {
            Some(tokio::spawn(run_processors(
                self.state.core.clone(),
                stop_rx.clone(),
            )))
        } else {
            None
        };
        let router = router(self.state.clone());
        let serve = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown);
        let result = serve.await;
        let _ = stop_tx.send(true);
        if let Some(handle) = processors {
            let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
        }
        result.map_err(Into::into)
    }
}

/// Creates an admin token with every capability if the store has none (only the instance that
/// holds the processors lease does, so two first starts do not both create one).
async fn first_admin_token(core: &Arc<Core>) -> anyhow::Result<Option<String>> {
    if core.has_tokens().await? {
        return Ok(None);
    }
    let holder = format!("first-start:{}", Uuid::now_v7());
    let Some(lease) = ocart_processors::try_acquire(&core.db, PROCESSORS_LEASE, &holder).await?
    else {
        return Ok(None);
    };
    let token = if core.has_tokens().await? {
        None
    } else {
        let meta = CommandMeta::system("first-start", None, core.clock.now());
        core.seed_default_sequence(&meta).await?;
        let created = core
            .create_token("admin (first start)", Capability::ALL.to_vec(), &meta)
            .await?;
        Some(created)
    };
    // The token works as soon as it is printed, whether or not processors run here.
    let projected = match &token {
        Some(created) => core.project_to(created.position).await,
        None => Ok(()),
    };
    lease.release().await;
    projected?;
    Ok(token.map(|created| created.secret))
}

/// Runs projectors, the sweeper and (with NATS) the relay while this instance holds the lease.
async fn run_processors(core: Arc<Core>, stop: watch::Receiver<bool>) {
    let holder = format!("serve:{}", Uuid::now_v7());
    let Some(lease) = ocart_processors::wait_acquire(
        &core.db,
        PROCESSORS_LEASE,
        &holder,
        stop.clone(),
        Duration::from_secs(2),
    )
    .await
    else {
        return;
    };
    tracing::info!(%holder, "holding the processors lease");
    // If the lease is lost (connection dropped, another holder took it), stop our processors.
    let (inner_stop_tx, inner_stop) = watch::channel(false);
    let poll = Duration::from_millis(core.config.processors.poll_interval_ms);
    let mut supervisor = Supervisor::new(core.processors.clone(), inner_stop.clone());
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::PROJECTIONS,
        factory(move || {
            let core = c.clone();
            async move {
                let group = ocart_projections::ProjectionGroup::new(
                    core.log.clone(),
                    core.runners().await?,
                    core.config.processors.batch_size,
                );
                Ok(ocart_processors::Projections::new(group, poll))
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::SWEEPER,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(
                    ocart_processors::Sweeper::new(core.log.clone(), core.clock.clone())
                        .with_poll(poll),
                )
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::ERASER,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(
                    ocart_processors::Eraser::new(core.log.clone(), core.vault.clone())
                        .with_poll(poll),
                )
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::RETENTION,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::Retention::new(
                    core.log.clone(),
                    core.vault.clone(),
                    core.clock.clone(),
                ))
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::abtests::ASSIGNMENT_RETENTION,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::abtests::AssignmentRetention::new(
                    core.log.clone(),
                    core.clock.clone(),
                ))
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::abtests::CONVERSIONS,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::abtests::AbTestConversions::new(
                    core.log.clone(),
                    core.clock.clone(),
                    core.projector_names(),
                )
                .with_poll(poll))
            }
        }),
    );
    let c = core.clone();
    let conclude_every = Duration::from_millis(core.config.processors.conclude_interval_ms);
    supervisor.spawn(
        ocart_processors::abtests::CONCLUDER,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::abtests::AbTestConcluder::new(
                    core.log.clone(),
                    core.clock.clone(),
                )
                .with_interval(conclude_every))
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::recovery::OPENER,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::recovery::RecoveryOpener::new(
                    core.log.clone(),
                    core.clock.clone(),
                    core.projector_names(),
                )
                .with_poll(poll))
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::recovery::FOLLOWUPS,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::recovery::RecoveryFollowUps::new(
                    core.log.clone(),
                    core.clock.clone(),
                    core.projector_names(),
                )
                .with_poll(poll))
            }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::recovery::DISPATCHER,
        factory(move || {
            let core = c.clone();
            async move { Ok(core.dispatcher()?.with_poll(poll)) }
        }),
    );
    let c = core.clone();
    supervisor.spawn(
        ocart_processors::upsell::UPSELL_CHARGER,
        factory(move || {
            let core = c.clone();
            async move {
                Ok(ocart_processors::upsell::UpsellCharger::new(
                    core.log.clone(),
                    core.gateways.clone(),
                    core.woo.clone(),
                    core.clock.clone(),
                    ocart_processors::upsell::ChargerConfig {
                        public_url: core.config.recovery.public_url.clone(),
                    },
                )
                .with_acceptances(core.acceptances.clone())
                .with_poll(poll))
            }
        }),
    );
    if let Some(url) = core.config.nats_url.clone() {
        let log = core.log.clone();
        supervisor.spawn(
            ocart_processors::RELAY_CHECKPOINT,
            factory(move || {
                let (log, url) = (log.clone(), url.clone());
                async move { Ok(ocart_processors::connect(log, &url).await?.with_poll(poll)) }
            }),
        );
    }
    let mut outer = stop.clone();
    tokio::select! {
        _ = outer.wait_for(|s| *s) => {}
        _ = lease.lost() => tracing::warn!("lost the processors lease; stopping processors"),
    }
    let _ = inner_stop_tx.send(true);
    supervisor.join().await;
    lease.release().await;
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("route {}", uri.path()))
}

/// Counts requests by route, method and status, with latency.
async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("ocart_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!("ocart_http_request_duration_seconds", "route" => route, "method" => method).record(elapsed);
    response
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let core = state.core.clone();
    // CORS for the shopper routes only (crate::cors), outside every other layer but the
    // request id, so rejections and timeouts of those routes carry it too.
    let cors = crate::cors::Cors::new(core.clone());
    RateLimiter::spawn_maintenance(&state.limiter);
    let public = routes::capture::router().layer(middleware::from_fn_with_state(
        (state.clone(), Bucket::Capture),
        crate::ratelimit::per_ip,
    ));
    // Restore and the pixel per IP, each its own budget; unsubscribe per link (in the handler).
    let links = routes::links::router(&state);
    let timeout = Duration::from_secs(core.config.http.request_timeout_secs);
    // The routers document what they route: the OpenAPI document is made from them here.
    let (router, routed) = utoipa_axum::router::OpenApiRouter::new()
        .merge(public)
        .merge(links)
        .merge(routes::api_router())
        .split_for_parts();
    let document = routes::system::Document(Arc::new(crate::openapi::document(routed)));
    let router = router.fallback(not_found).layer(axum::Extension(document));
    // Every body up to MAX_BODY; the order signals allow more (routes::orders).
    crate::json::with_body_limit(router, MAX_BODY)
        .layer(middleware::from_fn(track))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        // axum's own rejections (405, 413, 415, …) and timeouts as problem documents too.
        .layer(middleware::from_fn(crate::extract::problem_documents))
        .layer(middleware::from_fn_with_state(cors, crate::cors::layer))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
