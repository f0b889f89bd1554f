//! The `connection-handler` Lambda bootstrap: `$connect`, `$disconnect`, `$default`.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use wsledger::adapters::dynamodb::{self, DynamoDbStore};
use wsledger::handler::{AcknowledgingVoice, ConnectionHandler, EchoText};
use wsledger::lambda::{self, connection_handler};
use wsledger::metrics::Metrics;
use wsledger::settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let config = settings::handler_config()?;
    let store = DynamoDbStore::new(dynamodb::client(None, settings::aws_policy()).await, settings::table_names());
    lambda::warm_up(&store).await;
    let metrics = lambda::MetricsOut::from_env(Arc::new(Metrics::new()));
    let store = Arc::new(store);
    let handler = ConnectionHandler::new(store.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config)
        .with_views(store)
        .with_metrics(metrics.metrics().clone());
    let (handler, metrics) = (&handler, &metrics);
    lambda_runtime::run(service_fn(move |event| metrics.after(connection_handler::handle(handler, event)))).await
}
