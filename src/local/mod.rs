//! `wsledger serve`: a local emulator of an API Gateway WebSocket API, running the
//! handler, the projector and the sweep in-process on an embedded store (or on
//! DynamoDB through the stream poller).
//!
//! Faithful where it matters: connection ids in API Gateway's format, the real peer
//! address and user agent, the authorizer context on every route, `$connect` before
//! the upgrade, 32 KB frames and 128 KB messages (1009), 10 minute idle and 2 hour
//! limits (1001), and the `@connections` Management API with real `GoneException`s.

pub mod apigw_event;
pub mod dashboard;
pub mod feed;
mod management;
pub mod registry;
mod socket;

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
use crate::adapters::sqlite::SqliteStore;
use crate::auth::JwtVerifier;
use crate::domain::Timestamp;
use crate::handler::{AcknowledgingVoice, ConnectionHandler, EchoText, HandlerConfig};
use crate::ports::{EventStore, ViewStore};
use crate::sweep::{SweepConfig, sweep};
use apigw_event::RouteSelection;
use registry::Registry;

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
    pub route_selection: Option<RouteSelection>,
    pub limits: Limits,
    pub stage: String,
    pub handler: HandlerConfig,
    pub sweep: SweepConfig,
    pub sweep_interval: Duration,
    /// Serve the dashboard on `GET /` and `/api/...`.
    pub dashboard: bool,
    /// When set, the dashboard answers only requests carrying it (`?token=` or a bearer token).
    pub dashboard_token: Option<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: AuthMode::Dev,
            route_selection: None,
            limits: Limits::default(),
            stage: "local".into(),
            handler: HandlerConfig::default(),
            sweep: SweepConfig::default(),
            sweep_interval: Duration::from_secs(60),
            dashboard: true,
            dashboard_token: None,
        }
    }
}

/// Resolves once `stop` says true.
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What every request of the emulator shares.
pub(crate) struct AppState {
    pub handler: ConnectionHandler,
    pub events: Arc<dyn EventStore>,
    pub views: Arc<dyn ViewStore>,
    pub dashboard: Option<Arc<dashboard::Dashboard>>,
    pub registry: Arc<Registry>,
    pub config: ServeConfig,
    pub domain_name: String,
    pub shutdown: watch::Receiver<bool>,
    pub active: AtomicUsize,
    pub drained: Notify,
}

/// A running emulator.
pub struct Server {
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<AppState>,
}

impl Server {
    /// Binds and starts serving; returns once it listens.
    pub async fn start(config: ServeConfig, backend: Backend) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let (events, views): (Arc<dyn EventStore>, Arc<dyn ViewStore>) = match &backend {
            Backend::Sqlite(store) => (Arc::new(store.clone()), Arc::new(store.clone())),
            Backend::DynamoDb { store, .. } => (Arc::new(store.clone()), Arc::new(store.clone())),
        };
        let handler =
            ConnectionHandler::new(events.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config.handler);
        let registry = Arc::new(Registry::default());
        let dashboard = config.dashboard.then(|| Arc::new(dashboard::Dashboard::new(config.dashboard_token.clone())));
        // The projector writes through this, so the dashboard sees every view as it changes.
        let projected_views: Arc<dyn ViewStore> = match &dashboard {
            Some(dashboard) => {
                Arc::new(dashboard::NotifyingViews { inner: views.clone(), dashboard: dashboard.clone() })
            }
            None => views.clone(),
        };
        let state = Arc::new(AppState {
            handler,
            events: events.clone(),
            views: views.clone(),
            dashboard,
            registry: registry.clone(),
            domain_name: local_addr.to_string(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            active: AtomicUsize::new(0),
            drained: Notify::new(),
        });
        let app = Router::new()
            .route("/", get(socket::entry))
            .route("/{stage}", get(socket::entry))
            .merge(management::routes())
            .merge(dashboard::routes())
            .with_state(state.clone());

        let mut tasks = Vec::new();
        let http_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let serve = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(stopped(http_shutdown));
            if let Err(error) = serve.await {
                tracing::error!(%error, "the HTTP server failed");
            }
        }));
        tasks.push(match backend {
            Backend::Sqlite(store) => {
                tokio::spawn(feed::run_sqlite_projector(store, projected_views.clone(), shutdown.clone()))
            }
            Backend::DynamoDb { store, streams } => {
                let poller = StreamPoller::new(store.client().clone(), streams, store.tables().events.clone());
                let stop = shutdown.clone();
                let views = projected_views.clone();
                tokio::spawn(async move {
                    poller
                        .run(
                            |records| {
                                let views = views.clone();
                                async move { crate::lambda::projector::stream_batch(views.as_ref(), &records).await }
                            },
                            Duration::from_millis(500),
                            stopped(stop),
                        )
                        .await;
                })
            }
        });
        let (sweep_events, sweep_views, sweep_registry) = (events.clone(), views.clone(), registry.clone());
        let (sweep_config, interval) = (config.sweep, config.sweep_interval);
        let sweep_stop = stopped(shutdown.clone());
        tasks.push(tokio::spawn(async move {
            tokio::pin!(sweep_stop);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = &mut sweep_stop => return,
                }
                let result = sweep(
                    sweep_views.as_ref(),
                    sweep_events.as_ref(),
                    sweep_registry.as_ref(),
                    Timestamp::now(),
                    sweep_config,
                )
                .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "the sweep failed");
                }
            }
        }));
        Ok(Server { local_addr, registry, stop, tasks, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many WebSocket connections are open.
    pub fn open_connections(&self) -> usize {
        self.registry.len()
    }

    /// Closes every connection (recording `$disconnect`), stops accepting, flushes
    /// pending projections, and returns when all of it is done.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.state.active.load(Ordering::SeqCst) > 0 {
            let drained = self.state.drained.notified();
            if self.state.active.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                tracing::warn!("connections still open after 10 s; stopping anyway");
                break;
            }
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
