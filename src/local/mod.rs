//! `wsledger serve`: a local emulator of an API Gateway WebSocket API, running the
//! handler, the projector and the sweep in-process on an embedded store (or on
//! DynamoDB through the stream poller).
//!
//! Faithful where it matters: connection ids in API Gateway's format, the real peer
//! address and user agent, the authorizer context on every route, `$connect` before
//! the upgrade, 32 KB frames and 128 KB messages (1009), 10 minute idle and 2 hour
//! limits (1001), and the `@connections` Management API with real `GoneException`s.

pub mod dashboard;
pub mod feed;
pub mod gateway;
pub mod integration;
pub mod lambda;
pub mod lock;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::adapters::dynamodb::DynamoDbStore;
use crate::adapters::dynamodb::stream::StreamPoller;
use crate::adapters::sinks::presence_sinks;
use crate::adapters::sqlite::SqliteStore;
use crate::auth::JwtVerifier;
use crate::domain::Timestamp;
use crate::handler::{AcknowledgingVoice, ConnectionHandler, EchoText, HandlerConfig};
use crate::metrics::Metrics;
use crate::ports::{EventStore, LeaseStore, OutboxStore, PresenceStore, ViewStore};
use crate::presence::{Presence, PresenceSettings, check_due};
use crate::sweep::{SweepConfig, SweepPorts, sweep};
use gateway::registry::Registry;
use gateway::{apigw_event, exposure, http, management, socket};

/// API Gateway's limits, configurable for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub max_duration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            idle_timeout: Duration::from_secs(600),
            max_duration: Duration::from_secs(7_200),
        }
    }
}

/// How `$connect` learns the user.
#[derive(Clone)]
pub enum AuthMode {
    /// `?userId=` in the URL, as the classic client sends it. For development only.
    Dev,
    /// The authorizer's JWT verification on `?token=` (or `Authorization`).
    Jwt(Arc<JwtVerifier>),
}

/// Where the emulator keeps the ledger.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite(SqliteStore),
    DynamoDb { store: DynamoDbStore, streams: aws_sdk_dynamodbstreams::Client },
}

#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub auth: AuthMode,
    pub limits: Limits,
    pub stage: String,
    pub handler: HandlerConfig,
    pub sweep: SweepConfig,
    pub sweep_interval: Duration,
    /// Serve the dashboard on `GET /` and `/api/...`.
    pub dashboard: bool,
    /// When set, the dashboard answers only requests carrying it (`?token=` or a bearer token).
    pub dashboard_token: Option<String>,
    /// When set, `@connections` answers only requests carrying it (`?token=`, a
    /// bearer token, or as the access key id of a SigV4 signature).
    pub management_token: Option<String>,
    /// With a management token: other keys `@connections` accepts in a verified
    /// SigV4 signature (the functions' own credentials under `--lambda`).
    pub function_credentials: Vec<exposure::SigningKey>,
    /// Host names besides loopback ones and the listen address that the HTTP API
    /// answers for (see [`exposure::host_allowed`]).
    pub allowed_hosts: Vec<String>,
    /// A frame to a client that has not left within this closes the connection.
    pub write_timeout: Duration,
    /// Request headers must arrive within this (also the keep-alive idle timeout).
    pub header_read_timeout: Duration,
    /// Open sockets (HTTP and WebSocket) at most; the next handshake gets 503.
    pub max_connections: usize,
    /// With `Backend::DynamoDb`: where the stream poller keeps its shard positions
    /// between runs (none: every run reads the stream from its start).
    pub stream_checkpoint: Option<std::path::PathBuf>,
    /// `serve --lambda`: routes and the `$connect` authorizer run the template's
    /// functions as Lambda runs them, instead of the handler in-process.
    pub lambda: Option<Arc<lambda::routes::LambdaRoutes>>,
    /// Presence: on or off, the grace period, the sinks (`--presence-*`).
    pub presence: PresenceSettings,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthMode::Dev,
            limits: Limits::default(),
            stage: "local".into(),
            handler: HandlerConfig::default(),
            sweep: SweepConfig::default(),
            sweep_interval: Duration::from_secs(60),
            dashboard: true,
            dashboard_token: None,
            management_token: None,
            function_credentials: Vec::new(),
            allowed_hosts: Vec::new(),
            write_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            stream_checkpoint: None,
            lambda: None,
            presence: PresenceSettings::default(),
        }
    }
}

/// Resolves once `stop` says true.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What every request of the emulator shares.
pub(crate) struct AppState {
    /// How the routes reach their code (chosen once, at start).
    pub integration: Arc<dyn integration::Integration>,
    pub events: Arc<dyn EventStore>,
    pub views: Arc<dyn ViewStore>,
    /// Where presence is read (`None`: `--presence off`).
    pub presence: Option<Arc<dyn PresenceStore>>,
    pub dashboard: Option<Arc<dashboard::Dashboard>>,
    pub registry: Arc<Registry>,
    pub config: ServeConfig,
    /// The API every connection's events name (domain, stage, id).
    pub api: Arc<apigw_event::Api>,
    pub shutdown: watch::Receiver<bool>,
    pub active: AtomicUsize,
    pub drained: Notify,
    /// Every counter of this emulator (handler, projector, sweep, HTTP), at `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// Why the emulator did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another `serve` holds the embedded store's file.
    #[error("{0}")]
    StoreInUse(String),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    /// A presence sink could not be set up.
    #[error("{0}")]
    Presence(String),
}

/// A running emulator.
pub struct Server {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    /// Told after the connections have drained: the projector flushes and stops.
    flush: watch::Sender<bool>,
    projector: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<AppState>,
    http_stats: Arc<http::HttpStats>,
    _lock: Option<lock::ServeLock>,
}

/// How long connections get to close (each close frame takes at most a second) at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long HTTP responses get to finish at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(2);
/// How long the projector gets to flush at shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_millis(1_500);

/// Raises this process's open-file limit from its soft to its hard limit (each
/// connection is a descriptor); returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct passed; nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1_024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The default `--max-connections` for a file-descriptor limit: all of it but a
/// reserve for the store, the HTTP API and the process itself.
pub fn default_max_connections(fd_limit: u64) -> usize {
    fd_limit.saturating_sub(128).max(64).min(usize::MAX as u64) as usize
}

impl Server {
    /// Binds and starts serving; returns once it listens. With the embedded store,
    /// takes its file's lock first (one `serve` per file).
    pub async fn start(config: ServeConfig, backend: Backend) -> Result<Server, StartError> {
        let lock = match &backend {
            Backend::Sqlite(store) => Some(lock::ServeLock::acquire(store.path()).map_err(StartError::StoreInUse)?),
            Backend::DynamoDb { .. } => None,
        };
        let listen_error = |source| StartError::Listen { address: config.listen, source };
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let (stop, shutdown) = watch::channel(false);
        let (flush, flushing) = watch::channel(false);
        let Stores { events, views, leases, presence: presence_store, outbox } = stores_of(&backend);
        let registry = Arc::new(Registry::default());
        // With --lambda, the functions' metrics (their EMF output) count into the same registry.
        let metrics =
            config.lambda.as_ref().map_or_else(|| Arc::new(Metrics::new()), |lambda| lambda.metrics().clone());
        let handler =
            ConnectionHandler::new(events.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config.handler)
                .with_views(views.clone())
                .with_leases(leases.clone())
                .with_recovery(outbox.clone(), registry.clone())
                .with_metrics(metrics.clone());
        let dashboard = config.dashboard.then(|| Arc::new(dashboard::Dashboard::new(config.dashboard_token.clone())));
        let projected_views = projected_views(&views, dashboard.as_ref());
        let stream_function = config.lambda.as_ref().and_then(|lambda| lambda.stream_function());
        // Under --lambda the template's stream function keeps presence (with its own settings).
        let presence = match config.presence.enabled && stream_function.is_none() {
            true => Some(presence_of(&config.presence, &presence_store, dashboard.as_ref(), &metrics).await?),
            false => None,
        };
        let state = Arc::new(AppState {
            integration: match &config.lambda {
                Some(routes) => Arc::new(integration::Functions(routes.clone())),
                None => Arc::new(integration::InProcess(handler)),
            },
            events: events.clone(),
            views: views.clone(),
            presence: config.presence.enabled.then_some(presence_store),
            dashboard,
            registry: registry.clone(),
            api: Arc::new(apigw_event::Api {
                domain_name: local_addr.to_string(),
                stage: config.stage.clone(),
                api_id: "wsledger-local".into(),
            }),
            config: config.clone(),
            shutdown: shutdown.clone(),
            active: AtomicUsize::new(0),
            drained: Notify::new(),
            metrics: metrics.clone(),
        });
        let http_stats = Arc::new(http::HttpStats::new(metrics.clone()));
        let mut tasks = vec![
            spawn_http(listener, &state, http_stats.clone(), shutdown.clone()),
            spawn_sweep(
                SweepStores { events, views: views.clone(), leases, outbox },
                registry.clone(),
                &config,
                metrics.clone(),
                shutdown,
            ),
        ];
        let stream_function = stream_function.map(|function| lambda::routes::LocalStreamFunction {
            function,
            views: views.clone(),
            dashboard: state.dashboard.clone(),
        });
        tasks.extend(presence.clone().map(|presence| spawn_presence_check(presence, state.shutdown.clone())));
        let projector = spawn_projector(
            backend,
            Projection { views: projected_views, presence, metrics },
            config.stream_checkpoint.clone(),
            stream_function,
            flushing,
        );
        Ok(Server { local_addr, registry, stop, flush, projector, tasks, state, http_stats, _lock: lock })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many WebSocket connections are open.
    pub fn open_connections(&self) -> usize {
        self.registry.len()
    }

    /// How many sockets were refused (over `max_connections`, or accept failures).
    pub fn refused_connections(&self) -> u64 {
        self.http_stats.refused.load(Ordering::Relaxed)
    }

    /// Every counter of this emulator (what `GET /metrics` shows).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.state.metrics
    }

    /// Closes every connection (recording `$disconnect`), stops accepting, ends
    /// every HTTP response, flushes pending projections. Bounded: returns within
    /// about five seconds whatever the clients do.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        while self.state.active.load(Ordering::SeqCst) > 0 {
            let drained = self.state.drained.notified();
            if self.state.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!(
                    open = self.state.active.load(Ordering::SeqCst),
                    "connections still closing after {DRAIN_TIMEOUT:?}; stopping anyway"
                );
                break;
            }
        }
        let _ = self.flush.send(true);
        let mut projector = self.projector;
        if tokio::time::timeout(FLUSH_TIMEOUT, &mut projector).await.is_err() {
            tracing::warn!(
                "projections not flushed within {FLUSH_TIMEOUT:?}; the next start projects the rest from its checkpoint"
            );
            stop_task(projector).await;
        }
        for mut task in self.tasks {
            if tokio::time::timeout(HTTP_GRACE, &mut task).await.is_err() {
                stop_task(task).await;
            }
        }
    }
}

/// Aborts `task` and waits (briefly) until it is gone, so it is not polled again
/// while the runtime shuts down: its store calls would then fail one by one with
/// "cancelled" and log errors for work that is only postponed (a checkpoint keeps it).
async fn stop_task(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = tokio::time::timeout(Duration::from_millis(200), task).await;
}

fn spawn_http(
    listener: tokio::net::TcpListener,
    state: &Arc<AppState>,
    stats: Arc<http::HttpStats>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let config = &state.config;
    let rules = exposure::ExposureRules::of(config);
    let management = management::routes()
        .route_layer(axum::middleware::from_fn_with_state(rules.clone(), exposure::require_management_token));
    let api = management
        .merge(dashboard::routes())
        .route("/metrics", get(gateway::prometheus::metrics))
        .route_layer(axum::middleware::from_fn_with_state(rules, exposure::require_known_host));
    let app = Router::new()
        .route("/", get(socket::entry))
        .route("/{stage}", get(socket::entry))
        .merge(api)
        .with_state(state.clone());
    let limits = http::HttpLimits {
        header_read_timeout: config.header_read_timeout,
        max_connections: config.max_connections,
        shutdown_grace: HTTP_GRACE,
    };
    tokio::spawn(http::serve(listener, app, limits, stats, shutdown))
}

/// The views the projector writes through: with the dashboard on, a decorator that
/// shows it every view as it changes.
fn projected_views(views: &Arc<dyn ViewStore>, dashboard: Option<&Arc<dashboard::Dashboard>>) -> Arc<dyn ViewStore> {
    match dashboard {
        Some(dashboard) => Arc::new(dashboard::NotifyingViews { inner: views.clone(), dashboard: dashboard.clone() }),
        None => views.clone(),
    }
}

/// The stores of a backend, each behind its port.
struct Stores {
    events: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    leases: Arc<dyn LeaseStore>,
    presence: Arc<dyn PresenceStore>,
    outbox: Arc<dyn OutboxStore>,
}

fn stores_of(backend: &Backend) -> Stores {
    fn of<S>(store: &S) -> Stores
    where
        S: EventStore + ViewStore + LeaseStore + PresenceStore + OutboxStore + Clone + 'static,
    {
        Stores {
            events: Arc::new(store.clone()),
            views: Arc::new(store.clone()),
            leases: Arc::new(store.clone()),
            presence: Arc::new(store.clone()),
            outbox: Arc::new(store.clone()),
        }
    }
    match backend {
        Backend::Sqlite(store) => of(store),
        Backend::DynamoDb { store, .. } => of(store),
    }
}

/// Presence in-process: the dashboard's stream and the configured sinks.
async fn presence_of(
    settings: &PresenceSettings,
    store: &Arc<dyn PresenceStore>,
    dashboard: Option<&Arc<dashboard::Dashboard>>,
    metrics: &Arc<Metrics>,
) -> Result<Presence, StartError> {
    let mut presence = Presence::new(store.clone(), metrics.clone());
    presence.grace = settings.grace;
    if let Some(dashboard) = dashboard {
        presence.sinks.push(Arc::new(dashboard::PresenceFeed(dashboard.clone())));
    }
    let policy = crate::settings::aws_policy();
    let sinks = presence_sinks(settings, crate::trust_roots::TrustRoots::System, policy).await;
    presence.sinks.extend(sinks.map_err(StartError::Presence)?);
    Ok(presence)
}

/// How often `serve` looks for offlines whose grace ended, ghosts and deliveries to retry.
const PRESENCE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

fn spawn_presence_check(presence: Presence, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PRESENCE_CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checks = async {
            loop {
                ticks.tick().await;
                if let Err(error) = check_due(&presence, Timestamp::now()).await {
                    tracing::warn!(error = %crate::error_chain::chain(&error), "the presence check failed; trying again");
                }
            }
        };
        tokio::select! {
            _ = checks => {}
            _ = stopped(shutdown) => {}
        }
    })
}

/// What the in-process projector writes through: the views (the dashboard's
/// decorator), presence, the counters.
pub(crate) struct Projection {
    pub views: Arc<dyn ViewStore>,
    pub presence: Option<Presence>,
    pub metrics: Arc<Metrics>,
}

fn spawn_projector(
    backend: Backend,
    projection: Projection,
    stream_checkpoint: Option<std::path::PathBuf>,
    stream_function: Option<lambda::routes::LocalStreamFunction>,
    flushing: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let Projection { views, presence, metrics } = projection;
    match backend {
        Backend::Sqlite(store) => {
            tokio::spawn(feed::run_sqlite_projector(store, Projection { views, presence, metrics }, flushing))
        }
        Backend::DynamoDb { store, streams } => {
            let mut poller = StreamPoller::new(store.client().clone(), streams, store.tables().events.clone());
            if let Some(checkpoint) = stream_checkpoint {
                poller = poller.with_checkpoint(checkpoint);
            }
            if let Some(function) = stream_function {
                // serve --lambda: the template's stream function gets the batches, as
                // Lambda's event source mapping gives them.
                let poller = poller.with_batch_size(function.function.trigger.batch_size);
                // An idle stream is read again after the trigger's batching window
                // (Lambda waits up to that long to fill a batch), at least every 100 ms.
                let idle = function.function.trigger.batching_window.max(Duration::from_millis(100));
                let function = Arc::new(function);
                return tokio::spawn(async move {
                    poller
                        .run(
                            |records| {
                                let function = function.clone();
                                async move { function.project(&records).await }
                            },
                            idle,
                            stopped(flushing),
                        )
                        .await;
                });
            }
            let ledger = store.clone();
            tokio::spawn(async move {
                poller
                    .run(
                        |records| {
                            let (views, metrics, ledger) = (views.clone(), metrics.clone(), ledger.clone());
                            let presence = presence.clone();
                            async move {
                                let presence = presence.as_ref();
                                crate::lambda::projector::stream_batch(
                                    views.as_ref(),
                                    &ledger,
                                    &records,
                                    presence,
                                    &metrics,
                                )
                                .await
                            }
                        },
                        Duration::from_millis(500),
                        stopped(flushing),
                    )
                    .await;
            })
        }
    }
}

/// The stores the in-process sweep works on.
struct SweepStores {
    events: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    leases: Arc<dyn LeaseStore>,
    /// Its expired messages are removed with each sweep (DynamoDB's by TTL).
    outbox: Arc<dyn OutboxStore>,
}

fn spawn_sweep(
    stores: SweepStores,
    registry: Arc<Registry>,
    config: &ServeConfig,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (sweep_config, mut interval) = (config.sweep, config.sweep_interval);
    let mut scheduled = None;
    if let Some(lambda) = &config.lambda {
        let (pools, every) = lambda.scheduled_functions(interval);
        if !pools.is_empty() {
            (scheduled, interval) = (Some(pools), every);
        }
    }
    tokio::spawn(async move {
        let stop = stopped(shutdown);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut stop => return,
            }
            if let Some(scheduled) = &scheduled {
                // serve --lambda: the template's scheduled functions sweep, as EventBridge invokes them.
                for (pool, event) in scheduled {
                    let invoked = pool.invoke(event.clone());
                    tokio::select! {
                        result = invoked => if let Err(error) = result {
                            tracing::warn!(%error, "the scheduled function failed");
                        },
                        _ = &mut stop => return,
                    }
                }
                continue;
            }
            let ports = SweepPorts {
                views: stores.views.as_ref(),
                events: stores.events.as_ref(),
                gateway: registry.as_ref(),
                leases: Some(stores.leases.as_ref()),
            };
            let swept = sweep(ports, Timestamp::now(), sweep_config);
            tokio::select! {
                result = swept => match result {
                    Ok(report) => report.count(&metrics),
                    Err(error) => tracing::warn!(error = %crate::error_chain::chain(&error), "the sweep failed"),
                },
                _ = &mut stop => return,
            }
            match stores.outbox.expire(Timestamp::now()).await {
                Ok(expired) => metrics.add(crate::metrics::names::MESSAGES_EXPIRED, expired as u64),
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain::chain(&error), "removing expired messages failed")
                }
            }
        }
    })
}
