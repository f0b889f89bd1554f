//! The `projector` Lambda bootstrap: stream batches into views, and the sweep.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use wsledger::adapters::apigw::{self, ManagementApiGateway};
use wsledger::adapters::dynamodb::{self, DynamoDbStore, TableNames};
use wsledger::handler::HandlerConfig;
use wsledger::lambda::{self, projector};
use wsledger::metrics::Metrics;
use wsledger::ports::ConnectionGateway;
use wsledger::sweep::SweepConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let retention_days = HandlerConfig::from_env()?.retention_days;
    let store = DynamoDbStore::new(dynamodb::client(None).await, TableNames::from_env());
    lambda::warm_up(&store).await;
    let endpoint = apigw::endpoint(std::env::var("WEBSOCKET_API_ENDPOINT").ok().as_deref());
    let gateway = match endpoint {
        Some(endpoint) => Some(ManagementApiGateway::new(&endpoint).await),
        None => None,
    };
    let metrics = lambda::MetricsOut::from_env(Arc::new(Metrics::new()));
    let projector = projector::Projector {
        events: &store,
        views: &store,
        gateway: gateway.as_ref().map(|gateway| gateway as &dyn ConnectionGateway),
        sweep: SweepConfig { retention_days, ..SweepConfig::default() },
        metrics: metrics.metrics(),
    };
    let (projector, metrics) = (&projector, &metrics);
    lambda_runtime::run(service_fn(move |event| async move {
        let answer = projector::handle(projector, event).await;
        metrics.flush();
        answer
    }))
    .await
}
