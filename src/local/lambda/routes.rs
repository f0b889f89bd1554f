//! `serve --lambda`'s routes: every route of the template's WebSocket API invokes
//! its function's packaged bootstrap through [`runtime_api`](super::runtime_api), and
//! `$connect` goes through the template's authorizer, as API Gateway does it:
//!
//! - a `$connect` that lacks any identity source the authorizer lists is refused
//!   with 401 before the authorizer runs;
//! - the authorizer's Allow admits the connection with its `context.userId` (else
//!   its `principalId`); Deny is 403; a failed authorizer is 500;
//! - a route's answer (`statusCode`, `body`) goes back to the client only when the
//!   route has a route response; a failed or timed-out function sends the client
//!   `{"message": "Internal server error", "connectionId": ..., "requestId": ...}`,
//!   and a failed `$connect` refuses the handshake with 500.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use serde_json::{Value, json};

use super::runtime_api::{FunctionPool, FunctionSpec, LogTarget};
use super::template::{IdentitySource, LambdaApp, StreamTrigger};
use crate::domain::UserId;
use crate::handler::Response;
use crate::local::gateway::apigw_event::RouteSelection;
use crate::local::gateway::exposure::{SigningKey, host_ip, host_name, is_loopback_host};

/// How long an idle warm process lives.
pub const IDLE_STOP: Duration = Duration::from_secs(300);

/// The template's routes, each with the pool of its function.
pub struct LambdaRoutes {
    app: LambdaApp,
    pools: HashMap<String, Arc<FunctionPool>>,
    route_selection: Option<RouteSelection>,
    /// What the functions count (their EMF output), for `serve`'s `GET /metrics`.
    metrics: Arc<crate::metrics::Metrics>,
}

/// The function a table's stream feeds, with its trigger's settings.
pub struct StreamFunction {
    pub pool: Arc<FunctionPool>,
    pub trigger: StreamTrigger,
}

/// Why a `$connect` was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An identity source is missing (401, the authorizer did not run).
    MissingIdentity,
    /// The authorizer denied it (403).
    Denied,
    /// The authorizer failed (500).
    Failed,
}

/// Where a function's bootstrap is under `artifacts`: SAM's layout
/// (`DIR/{LogicalId}/bootstrap`, as `sam build` leaves `.aws-sam/build`) or
/// cargo-lambda's (`DIR/{binary}/bootstrap`, as `scripts/package` leaves it).
/// A folder name from the template (a logical id, `BuildProperties.Binary`) must be
/// one plain name: no `..`, no `/`, not absolute, so a template cannot point
/// `serve` at a program outside `artifacts`.
pub fn find_bootstrap(artifacts: &Path, logical_id: &str, binary: Option<&str>) -> Result<PathBuf, String> {
    for folder in std::iter::once(logical_id).chain(binary) {
        let mut components = Path::new(folder).components();
        let plain = matches!((components.next(), components.next()), (Some(std::path::Component::Normal(_)), None));
        if !plain || folder.contains('/') || folder.contains('\\') {
            return Err(format!(
                "{logical_id}: {folder:?} is not a plain folder name under --artifacts (no '..', '/' or absolute paths)"
            ));
        }
    }
    let candidates: Vec<PathBuf> =
        std::iter::once(logical_id).chain(binary).map(|folder| artifacts.join(folder).join("bootstrap")).collect();
    candidates.iter().find(|path| path.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
        format!(
            "no bootstrap for {logical_id}: tried {} (build with `scripts/package` or `sam build`, then pass --artifacts)",
            tried.join(", ")
        )
    })
}

impl LambdaRoutes {
    /// Pools for every function the template invokes
    /// ([`LambdaApp::invoked_functions`]), their bootstraps found under `artifacts`,
    /// each running at most `max_concurrency` invocations at once.
    pub fn start(app: LambdaApp, artifacts: &Path, logs: LogTarget, max_concurrency: usize) -> Result<Self, String> {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let mut pools = HashMap::new();
        for logical_id in app.invoked_functions() {
            let function =
                app.functions.get(logical_id).ok_or_else(|| format!("{logical_id} is not a function serve can run"))?;
            let bootstrap = find_bootstrap(artifacts, logical_id, function.binary.as_deref())?;
            let spec = FunctionSpec {
                name: logical_id.to_owned(),
                bootstrap,
                environment: function.environment.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
                timeout: function.timeout,
                memory_mb: function.memory_mb,
                idle_stop: IDLE_STOP,
                logs: logs.clone(),
                metrics: Some(metrics.clone()),
                max_concurrency,
            };
            pools.insert(logical_id.to_owned(), FunctionPool::new(spec));
        }
        let route_selection = match &app.route_selection {
            Some(expression) => {
                let keys = app.routes.keys().filter(|key| !key.starts_with('$')).cloned().collect();
                Some(RouteSelection::parse(expression, keys)?)
            }
            None => None,
        };
        Ok(Self { app, pools, route_selection, metrics })
    }

    /// The registry the functions' metrics are counted into; `serve` uses it as its own.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    pub fn app(&self) -> &LambdaApp {
        &self.app
    }

    /// The pool of a function, by logical id.
    pub fn pool(&self, logical_id: &str) -> Option<&Arc<FunctionPool>> {
        self.pools.get(logical_id)
    }

    /// The function the events table's stream feeds (the template's first DynamoDB
    /// stream trigger), if any.
    pub fn stream_function(&self) -> Option<StreamFunction> {
        let trigger = self.app.streams.first()?.clone();
        let pool = self.pools.get(&trigger.function)?.clone();
        Some(StreamFunction { pool, trigger })
    }

    /// The functions a schedule invokes, and how often: the shortest `rate(...)` of
    /// their schedules, else `fallback` (`cron(...)` is not emulated).
    pub fn scheduled_functions(&self, fallback: Duration) -> (Vec<(Arc<FunctionPool>, Value)>, Duration) {
        let region = &self.app.region;
        let pools = self
            .app
            .schedules
            .iter()
            .filter_map(|schedule| {
                let event = match schedule.input.as_deref().map(serde_json::from_str::<Value>) {
                    Some(Ok(input)) => input,
                    Some(Err(error)) => {
                        tracing::warn!(function = %schedule.function, %error, "a schedule's Input is not JSON; sending the scheduled event");
                        scheduled_event(region)
                    }
                    None => scheduled_event(region),
                };
                Some((self.pools.get(&schedule.function).cloned()?, event))
            })
            .collect();
        let interval = self.app.schedules.iter().filter_map(|schedule| schedule.interval()).min().unwrap_or(fallback);
        (pools, interval)
    }

    /// The template's route selection, over its routes.
    pub fn route_selection(&self) -> Option<&RouteSelection> {
        self.route_selection.as_ref()
    }

    /// The authorizer of `$connect`, when the template has one and `$connect` uses
    /// it (`AuthorizationType: CUSTOM`). Without it, `serve` learns the user as it
    /// does without `--lambda` (`--auth`).
    pub fn connect_authorizer(&self) -> Option<&super::template::Authorizer> {
        let authorized = self.app.routes.get("$connect").is_some_and(|route| route.authorized);
        self.app.authorizer.as_ref().filter(|_| authorized)
    }

    /// Runs the template's authorizer for a `$connect` (headers with lower-case
    /// names): the user it admits, or why not.
    pub async fn authorize(
        &self,
        headers: &HashMap<String, String>,
        query: &HashMap<String, String>,
        request_context: Value,
    ) -> Result<UserId, Refusal> {
        let Some(authorizer) = self.connect_authorizer() else { return Err(Refusal::Failed) };
        if !authorizer.identity_sources.iter().all(|source: &IdentitySource| source.present(query, headers)) {
            return Err(Refusal::MissingIdentity);
        }
        let pool = self.pools.get(&authorizer.function).ok_or(Refusal::Failed)?;
        let request = json!({
            "type": "REQUEST",
            "methodArn": format!("arn:aws:execute-api:local:000000000000:{}/$connect",
                request_context.get("apiId").and_then(Value::as_str).unwrap_or("local")),
            "headers": headers,
            "multiValueHeaders": headers.iter().map(|(key, value)| (key.clone(), json!([value]))).collect::<serde_json::Map<_, _>>(),
            "queryStringParameters": query,
            "multiValueQueryStringParameters": query.iter().map(|(key, value)| (key.clone(), json!([value]))).collect::<serde_json::Map<_, _>>(),
            "stageVariables": {},
            "requestContext": request_context,
        });
        let answer = match pool.invoke(request).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(%error, "the authorizer failed");
                return Err(Refusal::Failed);
            }
        };
        let allowed = answer["policyDocument"]["Statement"].as_array().is_some_and(|statements| {
            !statements.is_empty() && statements.iter().all(|statement| statement["Effect"].as_str() == Some("Allow"))
        });
        if !allowed {
            return Err(Refusal::Denied);
        }
        let user = answer["context"]["userId"].as_str().or_else(|| answer["principalId"].as_str());
        match user.map(UserId::parse) {
            Some(Ok(user_id)) => Ok(user_id),
            _ => {
                tracing::warn!("the authorizer allowed a connection without a usable userId or principalId");
                Err(Refusal::Failed)
            }
        }
    }

    /// Invokes the function of `event`'s route; the answer as the client sees it.
    pub async fn handle(&self, event: &ApiGatewayWebsocketProxyRequest) -> Response {
        let route_key = event.request_context.route_key.clone().unwrap_or_else(|| "$default".into());
        let route = self.app.routes.get(&route_key).or_else(|| self.app.routes.get("$default"));
        let message_route = !matches!(route_key.as_str(), "$connect" | "$disconnect");
        let Some(route) = route else {
            // API Gateway answers a message no route takes with this error.
            return Response { status: 403, body: message_route.then(|| error_body(event, "Forbidden")) };
        };
        let Some(pool) = self.pools.get(&route.function) else {
            return Response { status: 500, body: message_route.then(|| error_body(event, "Internal server error")) };
        };
        let payload = match serde_json::to_value(event) {
            Ok(payload) => payload,
            Err(_) => return Response { status: 500, body: None },
        };
        match pool.invoke(payload).await {
            Ok(answer) => {
                let status = match answer.get("statusCode") {
                    None | Some(Value::Null) => 200,
                    Some(status) => match status.as_u64().and_then(|status| u16::try_from(status).ok()) {
                        Some(status) if (100..=599).contains(&status) => status,
                        _ => {
                            tracing::warn!(route = %route_key, %status, "the route's function answered a statusCode outside 100-599: a function error");
                            return Response {
                                status: 500,
                                body: message_route.then(|| error_body(event, "Internal server error")),
                            };
                        }
                    },
                };
                let body = match answer.get("body") {
                    Some(Value::String(body)) => Some(body.clone()),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                };
                Response { status, body: body.filter(|_| route.route_response && message_route) }
            }
            Err(error) => {
                tracing::warn!(%error, route = %route_key, "the route's function failed");
                Response { status: 500, body: message_route.then(|| error_body(event, "Internal server error")) }
            }
        }
    }

    /// Stops every function's processes.
    pub async fn stop(&self) {
        for pool in self.pools.values() {
            pool.stop().await;
        }
    }
}

/// What API Gateway sends a client when a route fails.
fn error_body(event: &ApiGatewayWebsocketProxyRequest, message: &str) -> String {
    json!({
        "message": message,
        "connectionId": event.request_context.connection_id,
        "requestId": event.request_context.request_id,
    })
    .to_string()
}

/// The stream function as `serve` runs it: after each batch, the views it wrote are
/// read back for the dashboard's live stream (in-process projections tell the
/// dashboard as they write; a function's writes reach DynamoDB directly).
pub struct LocalStreamFunction {
    pub function: StreamFunction,
    pub views: Arc<dyn crate::ports::ViewStore>,
    pub dashboard: Option<Arc<crate::local::dashboard::Dashboard>>,
}

impl LocalStreamFunction {
    pub async fn project(
        &self,
        records: &[aws_lambda_events::dynamodb::EventRecord],
    ) -> aws_lambda_events::streams::DynamoDbEventResponse {
        let response = invoke_with_stream_batch(&self.function, records).await;
        if let Some(dashboard) = &self.dashboard {
            let mut changed: Vec<crate::domain::ConnectionId> = records
                .iter()
                .filter_map(|record| match crate::adapters::dynamodb::stream::decode_record(record).change {
                    crate::ports::Change::Appended(event) => Some(event.connection_id),
                    _ => None,
                })
                .collect();
            changed.sort();
            changed.dedup();
            for connection_id in changed {
                if let Ok(Some(view)) = self.views.read(&connection_id).await {
                    dashboard.observe(&view);
                }
            }
        }
        response
    }
}

/// Invokes `function` with a stream batch as Lambda's event source mapping does,
/// and answers as the poller needs: the function's `batchItemFailures` (with
/// `ReportBatchItemFailures`), or, when the invocation fails or the trigger does
/// not report item failures, the whole batch to retry from its first record.
pub async fn invoke_with_stream_batch(
    function: &StreamFunction,
    records: &[aws_lambda_events::dynamodb::EventRecord],
) -> aws_lambda_events::streams::DynamoDbEventResponse {
    let retry_all = || {
        let mut response = aws_lambda_events::streams::DynamoDbEventResponse::default();
        if let Some(first) = records.first().and_then(|record| record.change.sequence_number.clone()) {
            let mut failure = aws_lambda_events::streams::DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(first);
            response.batch_item_failures.push(failure);
        }
        response
    };
    match function.pool.invoke(json!({ "Records": records })).await {
        Ok(answer) if function.trigger.report_batch_item_failures => {
            serde_json::from_value(answer).unwrap_or_else(|error| {
                tracing::warn!(%error, "the stream function's answer is not a batch response; retrying the batch");
                retry_all()
            })
        }
        Ok(_) => aws_lambda_events::streams::DynamoDbEventResponse::default(),
        Err(error) => {
            tracing::warn!(%error, "the stream function failed; the batch is retried");
            retry_all()
        }
    }
}

/// What Lambda's environment gives every function, pointed at this machine: the
/// DynamoDB and Management API endpoints (unless the template or `--env-vars` name
/// their own), the region, and credentials of the functions' own, never `serve`'s:
/// `key_id` (serve's own key id: DynamoDB Local keeps a database per key id, so the
/// functions see serve's tables) with a secret made for this run. `@connections`
/// accepts requests signed with them (see `exposure::require_management_token`).
pub fn prepare_functions(app: &mut LambdaApp, dynamodb: &str, management: &str, key_id: String) -> SigningKey {
    let credentials = SigningKey {
        key_id,
        secret: format!("wsledger-function-{}", ulid::Ulid::generate().to_string().to_lowercase()),
    };
    let region = app.region.clone();
    for function in app.functions.values_mut() {
        let environment = &mut function.environment;
        environment.entry("AWS_ENDPOINT_URL_DYNAMODB".into()).or_insert_with(|| dynamodb.to_owned());
        environment.entry(crate::adapters::apigw::ENDPOINT_ENV.into()).or_insert_with(|| management.to_owned());
        environment.entry("AWS_REGION".into()).or_insert_with(|| region.clone());
        environment.insert("AWS_ACCESS_KEY_ID".into(), credentials.key_id.clone());
        environment.insert("AWS_SECRET_ACCESS_KEY".into(), credentials.secret.clone());
        environment.remove("AWS_SESSION_TOKEN");
    }
    credentials
}

/// A function whose template (or `--env-vars`) points an AWS SDK endpoint
/// (`AWS_ENDPOINT_URL*`) off this machine is refused at start: its requests would
/// leave with the functions' credentials.
pub fn refuse_remote_endpoints(app: &LambdaApp) -> Result<(), String> {
    for (logical_id, function) in &app.functions {
        for (name, value) in &function.environment {
            if name.starts_with("AWS_ENDPOINT_URL") && !is_local_url(value) {
                return Err(format!(
                    "{logical_id}: {name}={value} is not on this machine; serve --lambda runs functions against local \
                     endpoints only (pass --allow-remote-endpoints to allow it)"
                ));
            }
        }
    }
    Ok(())
}

/// Whether a URL's host is this machine: a loopback name or address, or the
/// unspecified address (`serve` listening everywhere).
fn is_local_url(url: &str) -> bool {
    let Some(rest) = url.split_once("://").map(|(_, rest)| rest) else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    is_loopback_host(host) || host_ip(host_name(host)).is_some_and(|ip| ip.is_unspecified())
}

/// The event a schedule (EventBridge) invokes a function with.
pub fn scheduled_event(region: &str) -> Value {
    json!({
        "version": "0",
        "id": ulid::Ulid::generate().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": crate::domain::Timestamp::now().to_rfc3339(),
        "region": region,
        "resources": [],
        "detail": {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machines_urls_are_local() {
        for url in [
            "http://127.0.0.1:8000",
            "http://localhost:8000/",
            "http://[::1]:8000",
            "http://0.0.0.0:8080/prod",
            "http://db.localhost",
        ] {
            assert!(is_local_url(url), "{url}");
        }
        for url in [
            "https://dynamodb.us-east-1.amazonaws.com",
            "http://10.0.0.7:8000",
            "http://127.0.0.1.evil.test",
            "http://user@evil.test",
            "not a url",
        ] {
            assert!(!is_local_url(url), "{url}");
        }
    }
}
