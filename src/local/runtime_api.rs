//! Lambda functions run as Lambda runs them: each function is a `provided.al2023`
//! bootstrap (any language) speaking the Lambda Runtime API, which this module
//! serves. The first piece of `serve --lambda`.
//!
//! A [`FunctionPool`] keeps one process per concurrent invocation: an invocation
//! takes a warm idle process, or starts one (a cold start: the process's init runs
//! until its first `GET /runtime/invocation/next`, within [`INIT_TIMEOUT`]). A
//! process that overruns the function's timeout is killed and the invocation fails
//! with [`InvokeError::Timeout`], as in Lambda; a process idle for the pool's idle
//! period is stopped. `/runtime/init/error` and `/runtime/invocation/{id}/error`
//! are answered as Lambda answers them. Each process's output goes to the terminal
//! prefixed with the function's name, or to `DIR/{name}.log`.
//!
//! Every instance has a Runtime API of its own on a free loopback port, so a
//! process can only ever see its own invocations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use crate::sync::lock;

/// How long a process's init may take before its invocation fails (Lambda's limit).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a function's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error, each line prefixed with `[name]`.
    Terminal,
    /// `DIR/{name}.log`, appended.
    Dir(PathBuf),
}

/// One function, as the template describes it.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`, the log prefix).
    pub name: String,
    pub bootstrap: PathBuf,
    /// The function's environment; nothing of `serve`'s own environment is passed.
    pub environment: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// A warm process idle this long is stopped.
    pub idle_stop: Duration,
    pub logs: LogTarget,
    /// When set, the function's metrics (EMF lines on its standard output) are
    /// counted here too.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The process could not be started.
    #[error("{function}: the bootstrap could not start: {detail}")]
    Start { function: String, detail: String },
    /// The process failed its init (`/runtime/init/error`, an exit, or no first
    /// `next` within [`INIT_TIMEOUT`]).
    #[error("{function}: init failed: {detail}")]
    Init { function: String, detail: String },
    /// The function answered with `/runtime/invocation/{id}/error`.
    #[error("{function}: the invocation failed: {error}")]
    Function { function: String, error: Value },
    /// The function overran its timeout; its process was killed.
    #[error("{function}: timed out after {timeout:?}; the process was stopped")]
    Timeout { function: String, timeout: Duration },
    /// The process exited during the invocation.
    #[error("{function}: the process exited during the invocation: {detail}")]
    Crashed { function: String, detail: String },
}

type Outcome = Result<Value, Value>;

struct Invocation {
    request_id: String,
    event: Value,
    deadline_ms: i64,
    answer: oneshot::Sender<Outcome>,
}

/// The Runtime API of one process.
struct Api {
    invocations: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: std::sync::Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// Set once the process asks for its first invocation (its init is over).
    polling: watch::Sender<bool>,
    init_error: watch::Sender<Option<String>>,
    function_arn: String,
}

async fn next(State(api): State<Arc<Api>>) -> impl IntoResponse {
    api.polling.send_replace(true);
    let Some(invocation) = api.invocations.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let mut headers = HeaderMap::new();
    let header = |value: &str| HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""));
    headers.insert("Lambda-Runtime-Aws-Request-Id", header(&invocation.request_id));
    headers.insert("Lambda-Runtime-Deadline-Ms", header(&invocation.deadline_ms.to_string()));
    headers.insert("Lambda-Runtime-Invoked-Function-Arn", header(&api.function_arn));
    // X-Ray's shape: Root=1-{8 hex: seconds}-{24 hex}, here the request id's last 24 hex digits.
    let id = invocation.request_id.replace('-', "");
    let trace = format!("Root=1-{:08x}-{}", invocation.deadline_ms / 1000, &id[id.len().saturating_sub(24)..]);
    headers.insert("Lambda-Runtime-Trace-Id", header(&trace));
    lock(&api.pending).insert(invocation.request_id, invocation.answer);
    (StatusCode::OK, headers, invocation.event.to_string())
}

fn body_value(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn finish(api: &Api, request_id: &str, outcome: Outcome) -> StatusCode {
    match lock(&api.pending).remove(request_id) {
        Some(answer) => {
            let _ = answer.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(api): State<Arc<Api>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    finish(&api, &request_id, Ok(body_value(&body)))
}

async fn invocation_error(State(api): State<Arc<Api>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    finish(&api, &request_id, Err(body_value(&body)))
}

async fn init_error(State(api): State<Arc<Api>>, body: Bytes) -> StatusCode {
    api.init_error.send_replace(Some(body_value(&body).to_string()));
    StatusCode::ACCEPTED
}

/// The Runtime API of one process, on a free loopback port: `next` hands out the
/// invocations given to [`RuntimeApiServer::invoke`], `response` and `error` answer
/// them, `init/error` is remembered. `FunctionPool` runs one per process; tests
/// drive a single bootstrap with one.
pub struct RuntimeApiServer {
    address: SocketAddr,
    api: Arc<Api>,
    invocations: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
    next_request: AtomicU64,
}

/// How an invocation ended, as the Runtime API saw it.
#[derive(Debug)]
pub enum RuntimeOutcome {
    /// `POST /runtime/invocation/{id}/response`.
    Response(Value),
    /// `POST /runtime/invocation/{id}/error`.
    Error(Value),
    /// No answer within the timeout.
    TimedOut,
    /// The Runtime API stopped (the server was stopped).
    Closed,
}

impl RuntimeApiServer {
    /// Serves the Runtime API of one process of `function_name`.
    pub async fn start(function_name: &str) -> std::io::Result<Self> {
        let (invocations, receiver) = mpsc::channel(16);
        let api = Arc::new(Api {
            invocations: tokio::sync::Mutex::new(receiver),
            pending: std::sync::Mutex::default(),
            polling: watch::channel(false).0,
            init_error: watch::channel(None).0,
            function_arn: format!("arn:aws:lambda:us-east-1:000000000000:function:{function_name}"),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(invocation_error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { address, api, invocations, server, next_request: AtomicU64::new(0) })
    }

    /// Where the process finds it (`AWS_LAMBDA_RUNTIME_API`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Resolves when the process has asked for its first invocation (its init is
    /// over) or reported an init error (`Err` with it).
    pub async fn initialized(&self) -> Result<(), String> {
        let mut polling = self.api.polling.subscribe();
        let mut failed = self.api.init_error.subscribe();
        tokio::select! {
            _ = polling.wait_for(|polling| *polling) => Ok(()),
            failed = failed.wait_for(Option::is_some) => {
                Err(failed.map(|detail| detail.clone().unwrap_or_default()).unwrap_or_default())
            }
        }
    }

    /// The init error the process reported, if any.
    pub fn init_error(&self) -> Option<String> {
        self.api.init_error.borrow().clone()
    }

    /// Hands `event` to the process, its deadline `deadline` from now, and waits at
    /// most `wait` for the answer (Lambda: both the function's timeout).
    pub async fn invoke(&self, event: Value, deadline: Duration, wait: Duration) -> RuntimeOutcome {
        let sequence = self.next_request.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{:08x}-0000-4000-8000-{:012x}", self.address.port(), sequence);
        let (answer, answered) = oneshot::channel();
        let deadline_ms =
            crate::domain::Timestamp::now().epoch_millis() + i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
        if self.invocations.send(Invocation { request_id, event, deadline_ms, answer }).await.is_err() {
            return RuntimeOutcome::Closed;
        }
        match tokio::time::timeout(wait, answered).await {
            Ok(Ok(Ok(value))) => RuntimeOutcome::Response(value),
            Ok(Ok(Err(error))) => RuntimeOutcome::Error(error),
            Ok(Err(_)) => RuntimeOutcome::Closed,
            Err(_) => RuntimeOutcome::TimedOut,
        }
    }
}

impl Drop for RuntimeApiServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A bootstrap started as Lambda starts it: only Lambda's environment (the
/// `AWS_LAMBDA_*` variables, `PATH`, `LANG`, `TZ`), pointed at `api`; the caller
/// adds the function's own variables and the output pipes.
pub fn lambda_command(bootstrap: &std::path::Path, api: SocketAddr, function_name: &str, memory_mb: u32) -> Command {
    let mut command = Command::new(bootstrap);
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin")
        .env("LANG", "en_US.UTF-8")
        .env("TZ", ":UTC")
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", function_name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function_name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/[$LATEST]{}", api.port()))
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("LAMBDA_TASK_ROOT", bootstrap.parent().unwrap_or(std::path::Path::new(".")))
        .env("_HANDLER", "bootstrap")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// One process of a function, with its Runtime API.
struct Instance {
    pid: u32,
    api: RuntimeApiServer,
    child: Child,
    idle_since: Instant,
}

impl Instance {
    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

/// The processes of one function.
pub struct FunctionPool {
    spec: FunctionSpec,
    idle: std::sync::Mutex<Vec<Instance>>,
    /// Init failures already reported (each is logged once).
    reported: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FunctionPool {
    /// A pool with no process yet; processes start on demand. Stops idle processes
    /// in the background while the pool lives.
    pub fn new(spec: FunctionSpec) -> Arc<Self> {
        let pool = Arc::new(Self { spec, idle: std::sync::Mutex::default(), reported: std::sync::Mutex::default() });
        let weak = Arc::downgrade(&pool);
        let period = (pool.spec.idle_stop / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(pool) = weak.upgrade() else { return };
                pool.stop_idle().await;
            }
        });
        pool
    }

    /// How many warm processes wait for an invocation.
    pub fn idle_processes(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Runs one invocation of `event` and returns the function's answer.
    pub async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        let mut instance = match self.take_idle() {
            Some(instance) => instance,
            None => self.cold_start().await?,
        };
        let function = self.spec.name.clone();
        let outcome = tokio::select! {
            outcome = instance.api.invoke(event, self.spec.timeout, self.spec.timeout) => outcome,
            status = instance.child.wait() => {
                let detail = status.map_or_else(|error| error.to_string(), |status| status.to_string());
                instance.stop().await;
                return Err(InvokeError::Crashed { function, detail });
            }
        };
        match outcome {
            RuntimeOutcome::Response(answer) => {
                self.release(instance);
                Ok(answer)
            }
            RuntimeOutcome::Error(error) => {
                self.release(instance);
                Err(InvokeError::Function { function, error })
            }
            RuntimeOutcome::TimedOut => {
                tracing::warn!(%function, timeout = ?self.spec.timeout, "the function timed out; stopping its process");
                instance.stop().await;
                Err(InvokeError::Timeout { function, timeout: self.spec.timeout })
            }
            RuntimeOutcome::Closed => {
                instance.stop().await;
                Err(InvokeError::Crashed { function, detail: "its Runtime API closed".into() })
            }
        }
    }

    /// Stops every process.
    pub async fn stop(&self) {
        let instances: Vec<Instance> = lock(&self.idle).drain(..).collect();
        for instance in instances {
            instance.stop().await;
        }
    }

    fn take_idle(&self) -> Option<Instance> {
        lock(&self.idle).pop()
    }

    fn release(&self, mut instance: Instance) {
        instance.idle_since = Instant::now();
        lock(&self.idle).push(instance);
    }

    async fn stop_idle(&self) {
        let expired: Vec<Instance> = {
            let mut idle = lock(&self.idle);
            let (expired, kept) =
                idle.drain(..).partition(|instance: &Instance| instance.idle_since.elapsed() >= self.spec.idle_stop);
            *idle = kept;
            expired
        };
        for instance in expired {
            tracing::debug!(function = %self.spec.name, pid = instance.pid, "stopping an idle process");
            instance.stop().await;
        }
    }

    /// Starts a process and waits for the end of its init.
    async fn cold_start(&self) -> Result<Instance, InvokeError> {
        let name = &self.spec.name;
        let start_error = |detail: String| InvokeError::Start { function: name.clone(), detail };
        let api = RuntimeApiServer::start(name).await.map_err(|error| start_error(error.to_string()))?;
        let mut command = lambda_command(&self.spec.bootstrap, api.address(), name, self.spec.memory_mb);
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        for (key, value) in &self.spec.environment {
            command.env(key, value);
        }
        let mut child =
            command.spawn().map_err(|error| start_error(format!("{}: {error}", self.spec.bootstrap.display())))?;
        let pid = child.id().unwrap_or_default();
        for output in [child.stdout.take().map(Output::Out), child.stderr.take().map(Output::Err)].into_iter().flatten()
        {
            tokio::spawn(forward(output, name.clone(), self.spec.logs.clone(), self.spec.metrics.clone()));
        }
        let detail = tokio::select! {
            initialized = api.initialized() => initialized.err(),
            status = child.wait() => Some(format!("the process exited during init ({})", status.map_or_else(|error| error.to_string(), |status| status.to_string()))),
            _ = tokio::time::sleep(INIT_TIMEOUT) => Some(format!("no first `next` within {INIT_TIMEOUT:?}")),
        };
        let instance = Instance { pid, api, child, idle_since: Instant::now() };
        match detail {
            None => Ok(instance),
            Some(detail) => {
                instance.stop().await;
                if lock(&self.reported).insert(detail.clone()) {
                    tracing::error!(function = %name, %detail, "the function failed its init");
                }
                Err(InvokeError::Init { function: name.clone(), detail })
            }
        }
    }
}

enum Output {
    Out(tokio::process::ChildStdout),
    Err(tokio::process::ChildStderr),
}

/// Copies a process's output, line by line, to where the function's logs go, and
/// counts the metrics its standard output carries.
async fn forward(output: Output, name: String, target: LogTarget, metrics: Option<Arc<crate::metrics::Metrics>>) {
    let (reader, metrics): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, _) = match output {
        Output::Out(out) => (Box::new(out), metrics),
        Output::Err(err) => (Box::new(err), None),
    };
    let mut lines = tokio::io::BufReader::new(reader).lines();
    let mut file = match &target {
        LogTarget::Terminal => None,
        LogTarget::Dir(dir) => {
            let path = dir.join(format!("{name}.log"));
            let opened = tokio::fs::OpenOptions::new().create(true).append(true).open(&path).await;
            match opened {
                Ok(file) => Some(file),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot write the function's log; printing it");
                    None
                }
            }
        }
    };
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(metrics) = &metrics {
            crate::adapters::emf::ingest(&line, metrics);
        }
        match file.as_mut() {
            Some(file) => {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
            None => eprintln!("[{name}] {line}"),
        }
    }
}
