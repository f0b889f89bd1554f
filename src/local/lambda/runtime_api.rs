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
//! Every instance has a Runtime API of its own on a free loopback port, and that
//! API answers only the process started for it: a connection from any other
//! process is closed unanswered ([`super::peer`] checks which process holds the
//! peer socket), a request that carries a browser's headers (`Origin`,
//! `Sec-Fetch-*`) is refused, request ids are random, and one `next` at a time
//! may wait. So a process only ever sees its own invocations, and nothing else can
//! take or answer them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

/// The largest function response Lambda accepts (synchronous invocations).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

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
    /// At most this many invocations at once (processes at once); past it an
    /// invocation is throttled, as Lambda throttles past a function's concurrency.
    pub max_concurrency: usize,
}

/// The default of [`FunctionSpec::max_concurrency`] (`--lambda-max-concurrency`).
pub const DEFAULT_MAX_CONCURRENCY: usize = 10;

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
    /// The function already runs its maximum of invocations at once.
    #[error("{function}: throttled: {limit} invocations already running (--lambda-max-concurrency)")]
    Throttled { function: String, limit: usize },
}

type Outcome = Result<Value, Value>;

struct Invocation {
    request_id: String,
    event: Value,
    deadline_ms: i64,
    answer: oneshot::Sender<Outcome>,
}

/// The Runtime API of one process.
struct ProcessApi {
    invocations: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    /// Set while a `next` waits: a second one is refused.
    waiting: std::sync::atomic::AtomicBool,
    pending: std::sync::Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// Set once the process asks for its first invocation (its init is over).
    polling: watch::Sender<bool>,
    init_error: watch::Sender<Option<String>>,
    function_arn: String,
}

/// Clears [`ProcessApi::waiting`] when the `next` that set it ends, answered or dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn next(State(api): State<Arc<ProcessApi>>) -> impl IntoResponse {
    if api.waiting.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_err() {
        return (StatusCode::CONFLICT, HeaderMap::new(), "another `next` is already waiting".to_owned());
    }
    let _waiting = Waiting(&api.waiting);
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

fn finish(api: &ProcessApi, request_id: &str, outcome: Outcome) -> StatusCode {
    match lock(&api.pending).remove(request_id) {
        Some(answer) => {
            let _ = answer.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

/// A function's response: at most [`MAX_RESPONSE_BYTES`]; past it the invocation
/// fails at once with Lambda's error (it does not wait for the function's timeout).
async fn response(
    State(api): State<Arc<ProcessApi>>,
    Path(request_id): Path<String>,
    body: axum::body::Body,
) -> StatusCode {
    match axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await {
        Ok(body) => finish(&api, &request_id, Ok(body_value(&body))),
        Err(_) => {
            let error = serde_json::json!({
                "errorType": "Function.ResponseSizeTooLarge",
                "errorMessage": format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."),
            });
            finish(&api, &request_id, Err(error));
            StatusCode::PAYLOAD_TOO_LARGE
        }
    }
}

async fn invocation_error(
    State(api): State<Arc<ProcessApi>>,
    Path(request_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    finish(&api, &request_id, Err(body_value(&body)))
}

async fn init_error(State(api): State<Arc<ProcessApi>>, body: Bytes) -> StatusCode {
    api.init_error.send_replace(Some(body_value(&body).to_string()));
    StatusCode::ACCEPTED
}

/// The Runtime API of one process, on a free loopback port: `next` hands out the
/// invocations given to [`RuntimeApiServer::invoke`], `response` and `error` answer
/// them, `init/error` is remembered. `FunctionPool` runs one per process; tests
/// drive a single bootstrap with one.
pub struct RuntimeApiServer {
    address: SocketAddr,
    api: Arc<ProcessApi>,
    invocations: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
    /// The process this API answers (see [`RuntimeApiServer::admit`]).
    owner: watch::Sender<Option<u32>>,
}

/// How long a connection waits for [`RuntimeApiServer::admit`] (the process may
/// connect before its spawner has recorded its pid).
const ADMIT_WAIT: Duration = Duration::from_secs(5);

/// The listener of one process's Runtime API: connections from any other process
/// are closed as soon as they are accepted.
struct OwnedListener {
    inner: tokio::net::TcpListener,
    owner: watch::Receiver<Option<u32>>,
}

impl axum::serve::Listener for OwnedListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let local = self.inner.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "accepting a Runtime API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let owner = tokio::time::timeout(ADMIT_WAIT, self.owner.wait_for(Option::is_some)).await;
            let Some(pid) = owner.ok().and_then(Result::ok).and_then(|owner| *owner) else { continue };
            let admitted = tokio::task::spawn_blocking(move || super::peer::held_by(pid, peer, local)).await;
            if admitted.unwrap_or(false) {
                return (stream, peer);
            }
            tracing::warn!(%peer, pid, "a process other than the function's own reached its Runtime API: refused");
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Refuses any request that carries a browser's headers: a web page can send a
/// no-cors GET to a loopback port, a bootstrap never sends these.
async fn refuse_browsers(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let headers = request.headers();
    let from_browser =
        headers.contains_key("origin") || headers.keys().any(|name| name.as_str().starts_with("sec-fetch-"));
    if from_browser {
        return (StatusCode::FORBIDDEN, "the Runtime API does not answer browsers").into_response();
    }
    next.run(request).await
}

/// A request id Lambda's way (a UUID), random: nobody can guess the next one.
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
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
        let api = Arc::new(ProcessApi {
            invocations: tokio::sync::Mutex::new(receiver),
            waiting: std::sync::atomic::AtomicBool::new(false),
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
            .layer(axum::middleware::from_fn(refuse_browsers))
            // Lambda accepts responses up to 6 MB (`response` enforces it).
            .layer(axum::extract::DefaultBodyLimit::max(MAX_RESPONSE_BYTES))
            .with_state(api.clone());
        let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = inner.local_addr()?;
        let owner = watch::channel(None).0;
        let listener = OwnedListener { inner, owner: owner.subscribe() };
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { address, api, invocations, server, owner })
    }

    /// The process this Runtime API answers: only connections it holds are served.
    pub fn admit(&self, pid: u32) {
        self.owner.send_replace(Some(pid));
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
        let request_id = request_id();
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
    /// One permit per invocation that may run at once.
    concurrency: tokio::sync::Semaphore,
    idle: std::sync::Mutex<Vec<Instance>>,
    /// Init failures already reported (each is logged once).
    reported: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl FunctionPool {
    /// A pool with no process yet; processes start on demand. Stops idle processes
    /// in the background while the pool lives.
    pub fn new(spec: FunctionSpec) -> Arc<Self> {
        let concurrency = tokio::sync::Semaphore::new(spec.max_concurrency.max(1));
        let pool = Arc::new(Self {
            spec,
            concurrency,
            idle: std::sync::Mutex::default(),
            reported: std::sync::Mutex::default(),
        });
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
        let Ok(_running) = self.concurrency.try_acquire() else {
            let limit = self.spec.max_concurrency.max(1);
            tracing::warn!(function = %self.spec.name, limit, "invocation throttled");
            return Err(InvokeError::Throttled { function: self.spec.name.clone(), limit });
        };
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
        api.admit(pid);
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
            // 0600, and never through a symbolic link someone left in the folder.
            let opened = tokio::fs::OpenOptions::from(crate::private_files::options())
                .create(true)
                .append(true)
                .open(&path)
                .await;
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
