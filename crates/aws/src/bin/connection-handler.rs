//! The `connection-handler` Lambda bootstrap: `$connect`, `$disconnect`, `$default`.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use wsledger_aws::adapters::apigw::ManagementApiGateway;
use wsledger_aws::adapters::dynamodb::{self, DynamoDbStore};
use wsledger_aws::handler::{AcknowledgingVoice, ConnectionHandler, EchoText};
use wsledger_aws::lambda::{self, connection_handler};
use wsledger_aws::metrics::Metrics;
use wsledger_aws::ports::{EventStore, PageRequest};
use wsledger_aws::settings;

// One thread: Lambda gives a function one invocation at a time (and at most a vCPU
// or two), so worker threads add nothing but their start-up and a hand-off between
// threads on every request, a few milliseconds of every cold start (BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut init = lambda::InitPhases::start();
    lambda::init_tracing();
    init.mark("tracing");
    let config = settings::handler_config()?;
    let policy = settings::lambda_aws_policy();
    init.mark("settings");
    let store = DynamoDbStore::new(dynamodb::client(None, policy).await, settings::table_names());
    init.mark("sdk_config");
    lambda::warm_up(store.connection_history(&lambda::warm_up_probe(), PageRequest::first(1))).await;
    init.mark("warm_up");
    let metrics = lambda::MetricsOut::from_env(Arc::new(Metrics::new()));
    let store = Arc::new(store);
    let mut handler = ConnectionHandler::new(store.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config)
        .with_views(store.clone())
        .with_leases(store.clone())
        .with_metrics(metrics.metrics().clone());
    // Reconnect recovery replays through the Management API.
    let endpoint = settings::management_endpoint(settings::websocket_api_endpoint().as_deref());
    if let Some(endpoint) = endpoint.filter(|_| config.recovery_window > chrono::TimeDelta::zero()) {
        handler = handler.with_recovery(store, Arc::new(ManagementApiGateway::new(&endpoint, policy).await));
    }
    init.mark("recovery");
    let (handler, metrics) = (&handler, &metrics);
    init.done();
    lambda_runtime::run(service_fn(move |event| metrics.after(connection_handler::handle(handler, event)))).await
}
