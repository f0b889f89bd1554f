//! Lambda entry points: converting Lambda events into application calls and back.
//! Each binary in `src/bin` builds its dependencies once and hands a function from
//! here to `lambda_runtime::run`.

pub mod authorizer;
pub mod connection_handler;
pub mod projector;

use std::io::Write;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;

use crate::adapters::emf::{self, EmfTarget};
use crate::metrics::Metrics;

/// A function's metrics on their way out: after each invocation, what changed is
/// written to standard output as CloudWatch Embedded Metric Format lines, which
/// CloudWatch Logs turns into metrics (no API call, no extra latency).
pub struct MetricsOut {
    metrics: Arc<Metrics>,
    target: EmfTarget,
}

impl MetricsOut {
    /// Namespace from `METRICS_NAMESPACE` (default `wsledger`), the `FunctionName`
    /// dimension from `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn from_env(metrics: Arc<Metrics>) -> Self {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.trim().is_empty());
        let target = EmfTarget {
            namespace: read("METRICS_NAMESPACE").unwrap_or_else(|| emf::DEFAULT_NAMESPACE.to_owned()),
            function_name: read("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "wsledger".to_owned()),
        };
        Self { metrics, target }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs one invocation's `answer`, then writes the metrics it changed.
    pub async fn after<T>(&self, answer: impl std::future::Future<Output = T>) -> T {
        let answer = answer.await;
        self.flush();
        answer
    }

    /// Writes what changed since the last flush.
    pub fn flush(&self) {
        let lines = emf::lines(&self.metrics.take(), &self.target, crate::domain::Timestamp::now().epoch_millis());
        if lines.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

/// How long before an invocation's deadline a function stops waiting on its
/// dependencies and answers by itself (`unavailable`, or a batch to retry), so the
/// caller gets an answer, not a timeout.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(1_000);

/// When an invocation with this deadline (epoch milliseconds, as the Runtime API
/// gives it) must have its answer ready: the deadline less [`DEADLINE_MARGIN`].
pub fn answer_by(deadline_epoch_millis: u64) -> tokio::time::Instant {
    let now = crate::domain::Timestamp::now().epoch_millis();
    let left = u64::try_from(i64::try_from(deadline_epoch_millis).unwrap_or(i64::MAX) - now).unwrap_or(0);
    tokio::time::Instant::now() + std::time::Duration::from_millis(left).saturating_sub(DEADLINE_MARGIN)
}

/// JSON logs for CloudWatch, level from `RUST_LOG` (default `info`). Lambda adds
/// the timestamp, so none is printed.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(false)
        .without_time()
        .with_target(false)
        .init();
}

/// The phases of a bootstrap's init, timed and logged in one line (`init done`,
/// field `phases`: `name=milliseconds ...`) when the bootstrap is about to ask for
/// its first invocation: where a cold start's time goes, beside Lambda's own
/// `Init Duration` (which also counts loading the binary, before `main`).
pub struct InitPhases {
    started: std::time::Instant,
    last: std::time::Instant,
    phases: Vec<(&'static str, std::time::Duration)>,
}

impl InitPhases {
    pub fn start() -> Self {
        let now = std::time::Instant::now();
        Self { started: now, last: now, phases: Vec::new() }
    }

    /// Ends the phase `name` (it began where the previous one ended).
    pub fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.phases.push((name, now - self.last));
        self.last = now;
    }

    /// Logs the phases.
    pub fn done(self) {
        let phases: Vec<String> =
            self.phases.iter().map(|(name, took)| format!("{name}={:.2}", took.as_secs_f64() * 1_000.0)).collect();
        let total_ms = self.started.elapsed().as_secs_f64() * 1_000.0;
        tracing::info!(phases = phases.join(" "), total_ms, "init done");
    }
}

/// How long init may spend warming up (Lambda allows 10 s of init).
pub const WARM_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The connection id warm-up requests ask about; no connection has it.
pub fn warm_up_probe() -> crate::domain::ConnectionId {
    crate::domain::ConnectionId::parse("wsledger-warm-up").expect("a valid id")
}

/// Opens the DynamoDB connection during init (TLS handshake, credentials), so the
/// first request does not pay for it: `request` is a cheap read about
/// [`warm_up_probe`] that the function's role allows anyway (the handler: a Query
/// of the events table; the projector: a GetItem of the views table, which DynamoDB
/// Local answers faster than a Query; in AWS either opens the connection the same
/// way). A failure or a stall (bounded by [`WARM_UP_TIMEOUT`])
/// is logged, not fatal.
pub async fn warm_up<T>(request: impl Future<Output = Result<T, crate::ports::StoreError>>) {
    match tokio::time::timeout(WARM_UP_TIMEOUT, request).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(error = %crate::error_chain::chain(&error), "warming up the DynamoDB connection failed")
        }
        Err(_) => tracing::warn!("warming up the DynamoDB connection took over {WARM_UP_TIMEOUT:?}; going on"),
    }
}
