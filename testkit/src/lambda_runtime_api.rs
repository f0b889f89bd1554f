//! A Lambda Runtime API on loopback, so the real Lambda bootstraps can be driven
//! by tests exactly as Lambda drives them: `GET /runtime/invocation/next`, then
//! `POST /runtime/invocation/{id}/response` (or `/error`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::{Notify, oneshot};

/// An API Gateway WebSocket event from a fixture (`tests/fixtures/apigw`), for
/// `connection_id`, connected at `connected_at` and sent at `at` (epoch
/// milliseconds), with a fresh request id and, for `$default`, `body`.
pub fn websocket_event(fixture: &str, connection_id: &str, connected_at: i64, at: i64, body: Option<&str>) -> Value {
    let mut event: Value = serde_json::from_str(fixture).unwrap();
    event["requestContext"]["connectionId"] = serde_json::json!(connection_id);
    event["requestContext"]["connectedAt"] = serde_json::json!(connected_at);
    event["requestContext"]["requestTimeEpoch"] = serde_json::json!(at);
    event["requestContext"]["requestId"] = serde_json::json!(ulid::Ulid::generate().to_string());
    if let Some(body) = body {
        event["body"] = serde_json::json!(body);
    }
    event
}

/// What the function answered to one invocation.
#[derive(Debug)]
pub enum Outcome {
    Response(Value),
    Error(Value),
}

struct Shared {
    /// How long each invocation may run (Lambda's `Lambda-Runtime-Deadline-Ms`).
    timeout_ms: AtomicI64,
    queue: Mutex<VecDeque<(String, Value)>>,
    ready: Notify,
    /// Set once the function has asked for its first invocation (its init is over).
    polling: tokio::sync::watch::Sender<bool>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
}

pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    next_id: Mutex<u64>,
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    shared.polling.send_replace(true);
    loop {
        let notified = shared.ready.notified();
        if let Some((request_id, event)) = shared.queue.lock().unwrap().pop_front() {
            let mut headers = HeaderMap::new();
            let deadline = chrono::Utc::now().timestamp_millis() + shared.timeout_ms.load(Ordering::Relaxed);
            headers.insert("Lambda-Runtime-Aws-Request-Id", HeaderValue::from_str(&request_id).unwrap());
            headers.insert("Lambda-Runtime-Deadline-Ms", HeaderValue::from_str(&deadline.to_string()).unwrap());
            headers.insert(
                "Lambda-Runtime-Invoked-Function-Arn",
                HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:wsledger-test"),
            );
            headers.insert(
                "Lambda-Runtime-Trace-Id",
                HeaderValue::from_static("Root=1-00000000-000000000000000000000000"),
            );
            return (StatusCode::OK, headers, event.to_string());
        }
        notified.await;
    }
}

fn finish(shared: &Shared, request_id: &str, outcome: Outcome) -> StatusCode {
    match shared.pending.lock().unwrap().remove(request_id) {
        Some(sender) => {
            let _ = sender.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(shared): State<Arc<Shared>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    finish(&shared, &request_id, Outcome::Response(value))
}

async fn error(State(shared): State<Arc<Shared>>, Path(request_id): Path<String>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    finish(&shared, &request_id, Outcome::Error(value))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *shared.init_error.lock().unwrap() = Some(String::from_utf8_lossy(&body).into_owned());
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            timeout_ms: AtomicI64::new(30_000),
            queue: Mutex::default(),
            ready: Notify::new(),
            polling: tokio::sync::watch::channel(false).0,
            pending: Mutex::default(),
            init_error: Mutex::default(),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { address, shared, next_id: Mutex::new(0) }
    }

    /// Waits until the function has finished its init and asks for work.
    pub async fn initialized(&self) {
        let mut polling = self.shared.polling.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), polling.wait_for(|polling| *polling)).await;
        assert!(waited.is_ok(), "no init within 30 s; init error: {:?}", self.shared.init_error.lock().unwrap());
    }

    /// The function's timeout from now on (30 s unless set).
    pub fn set_timeout(&self, timeout: Duration) {
        self.shared.timeout_ms.store(timeout.as_millis() as i64, Ordering::Relaxed);
    }

    /// Starts a Lambda bootstrap against this Runtime API, with `env` added.
    pub fn spawn(&self, binary: &str, env: &[(&str, String)]) -> Child {
        self.command(binary, env).spawn().expect("the Lambda bootstrap starts")
    }

    /// Like [`RuntimeApi::spawn`], with the function's standard output piped to the test.
    pub fn spawn_piped(&self, binary: &str, env: &[(&str, String)]) -> Child {
        self.command(binary, env).stdout(std::process::Stdio::piped()).spawn().expect("the Lambda bootstrap starts")
    }

    fn command(&self, binary: &str, env: &[(&str, String)]) -> Command {
        let mut command = Command::new(binary);
        // Only what Lambda sets (and the test adds): nothing of this machine's
        // environment (proxy or certificate settings, AWS profiles) leaks in.
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin")
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .env("AWS_LAMBDA_RUNTIME_API", self.address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", "wsledger-test")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/wsledger-test")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "2025/11/24/[$LATEST]test")
            .env("RUST_LOG", "error")
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Invokes the function with `event` and waits for its answer.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let request_id = {
            let mut next_id = self.next_id.lock().unwrap();
            *next_id += 1;
            format!("00000000-0000-4000-8000-{:012}", *next_id)
        };
        let (sender, receiver) = oneshot::channel();
        self.shared.pending.lock().unwrap().insert(request_id.clone(), sender);
        self.shared.queue.lock().unwrap().push_back((request_id, event));
        self.shared.ready.notify_waiters();
        self.shared.ready.notify_one();
        match tokio::time::timeout(Duration::from_secs(30), receiver).await {
            Ok(Ok(outcome)) => outcome,
            _ => panic!("no answer within 30 s; init error: {:?}", self.shared.init_error.lock().unwrap()),
        }
    }
}
