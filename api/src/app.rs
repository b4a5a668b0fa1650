//! `Application::build(config) → port() → run_until_stopped()`: the server with its
//! background processors, as `ocart serve` runs it and as tests start it on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ocart_domain::token::Capability;
use ocart_domain::Clock;
use ocart_projections::CommandMeta;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use crate::config::Config;
use crate::core::{Core, PROCESSORS_LEASE};
use crate::error::ApiError;
use crate::json::MAX_BODY;
use crate::ratelimit::RateLimiter;
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
        let admin_token = first_admin_token(&core).await?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.bind))?;
        let port = listener.local_addr()?.port();
        let limiter = RateLimiter::new(
            config.rate_limit.public_requests,
            Duration::from_secs(config.rate_limit.window_secs),
            config.rate_limit.trusted_proxies.clone(),
        );
        let state = AppState {
            core,
            limiter: Arc::new(limiter),
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
        Some(created.secret)
    };
    if token.is_some() {
        for runner in core.runners().await? {
            runner.catch_up().await?;
        }
    }
    lease.release().await;
    Ok(token)
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
    let mut tasks = JoinSet::new();
    match core.runners().await {
        Ok(runners) => {
            let group = ocart_projections::ProjectionGroup::new(
                core.log.clone(),
                runners,
                core.config.processors.batch_size,
            );
            tasks.spawn(group.run(inner_stop.clone(), poll));
        }
        Err(err) => tracing::error!(error = %err, "cannot start projections"),
    }
    let sweeper = ocart_processors::Sweeper::new(core.log.clone(), core.clock.clone());
    tasks.spawn(sweeper.run(inner_stop.clone(), poll));
    let retention =
        ocart_processors::Retention::new(core.log.clone(), core.vault.clone(), core.clock.clone());
    tasks.spawn(retention.run(inner_stop.clone(), Duration::from_secs(60)));
    let opener =
        ocart_processors::recovery::RecoveryOpener::new(core.log.clone(), core.clock.clone());
    tasks.spawn(opener.run(inner_stop.clone(), poll));
    match core.dispatcher() {
        Ok(dispatcher) => {
            tasks.spawn(dispatcher.run(inner_stop.clone(), poll));
        }
        Err(err) => tracing::error!(error = %err, "cannot start the recovery dispatcher"),
    }
    if let Some(url) = core.config.nats_url.clone() {
        let log = core.log.clone();
        let relay_stop = inner_stop.clone();
        tasks.spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                if *relay_stop.borrow() {
                    return;
                }
                match ocart_processors::connect(log.clone(), &url).await {
                    Ok(relay) => return relay.run(relay_stop, poll).await,
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot reach NATS; the relay retries");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }
    let mut outer = stop.clone();
    tokio::select! {
        _ = outer.wait_for(|s| *s) => {}
        _ = lease.lost() => tracing::warn!("lost the processors lease; stopping processors"),
    }
    let _ = inner_stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
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

/// The per-IP limit on public endpoints.
async fn rate_limited(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let ip = state.limiter.client_ip(peer, req.headers());
    match state.limiter.check(ip) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => ApiError::RateLimited(retry_after).into_response(),
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let core = state.core.clone();
    // CORS for the store origins in `general.allowed_origins`, read from the settings cache.
    let origins = Arc::new(std::sync::RwLock::new(Vec::<String>::new()));
    let refresh = origins.clone();
    let refresh_core = core.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(settings) = refresh_core.settings().await {
                *refresh.write().expect("origins") = settings.general.allowed_origins;
            }
            if Arc::strong_count(&refresh) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| {
                origins
                    .read()
                    .expect("origins")
                    .iter()
                    .any(|allowed| allowed == o)
            })
        }))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([axum::http::header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600));
    let public = routes::capture::router()
        .layer(middleware::from_fn_with_state(state.clone(), rate_limited))
        .layer(cors);
    let links =
        routes::links::router().layer(middleware::from_fn_with_state(state.clone(), rate_limited));
    let timeout = Duration::from_secs(core.config.http.request_timeout_secs);
    Router::new()
        .merge(public)
        .merge(links)
        .merge(routes::api_router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY + 1))
        .layer(middleware::from_fn(track))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
