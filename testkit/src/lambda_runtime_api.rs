//! A Lambda Runtime API on loopback, so the real Lambda bootstraps can be driven
//! by tests exactly as Lambda drives them: `GET /runtime/invocation/next`, then
//! `POST /runtime/invocation/{id}/response` (or `/error`). It is `serve --lambda`'s
//! own (`wsledger::local::lambda::runtime_api`), with the process started by the test.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use wsledger::local::lambda::runtime_api::{RuntimeApiServer, RuntimeOutcome, lambda_command};

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

/// One bootstrap process driven as Lambda drives it, through `serve`'s own Runtime
/// API (`wsledger::local::lambda::runtime_api`): the test starts the process, then invokes.
pub struct RuntimeApi {
    server: RuntimeApiServer,
    timeout_ms: AtomicI64,
}

impl RuntimeApi {
    pub async fn start() -> Self {
        let server = RuntimeApiServer::start("wsledger-test").await.expect("a loopback port for the Runtime API");
        Self { server, timeout_ms: AtomicI64::new(30_000) }
    }

    /// Waits until the function has finished its init and asks for work.
    pub async fn initialized(&self) {
        let waited = tokio::time::timeout(Duration::from_secs(30), self.server.initialized()).await;
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the function failed its init: {error}"),
            Err(_) => panic!("no init within 30 s"),
        }
    }

    /// The function's timeout from now on (30 s unless set).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms.store(timeout.as_millis() as i64, Ordering::Relaxed);
    }

    /// Starts a Lambda bootstrap against this Runtime API, with `env` added.
    pub fn spawn(&self, binary: &str, env: &[(&str, String)]) -> Child {
        self.admitted(self.command(binary, env).spawn().expect("the Lambda bootstrap starts"))
    }

    /// Like [`RuntimeApi::spawn`], with the function's standard output piped to the test.
    pub fn spawn_piped(&self, binary: &str, env: &[(&str, String)]) -> Child {
        self.admitted(
            self.command(binary, env)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("the Lambda bootstrap starts"),
        )
    }

    /// Lets `child` (and only it) use this Runtime API.
    fn admitted(&self, child: Child) -> Child {
        self.server.admit(child.id().expect("the bootstrap is running"));
        child
    }

    /// Where the process finds the Runtime API (`AWS_LAMBDA_RUNTIME_API`).
    pub fn address(&self) -> std::net::SocketAddr {
        self.server.address()
    }

    fn command(&self, binary: &str, env: &[(&str, String)]) -> Command {
        let mut command = lambda_command(std::path::Path::new(binary), self.server.address(), "wsledger-test", 256);
        command.env("RUST_LOG", "error");
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }

    /// Invokes the function with `event` and waits for its answer.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let timeout = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed).max(0) as u64);
        // The test waits at least 30 s, whatever the function's deadline says.
        match self.server.invoke(event, timeout, timeout.max(Duration::from_secs(30))).await {
            RuntimeOutcome::Response(value) => Outcome::Response(value),
            RuntimeOutcome::Error(value) => Outcome::Error(value),
            other => panic!("no answer ({other:?}); init error: {:?}", self.server.init_error()),
        }
    }
}
