//! The `projector` Lambda bootstrap: stream batches into views, and the sweep.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use wsledger_aws::adapters::apigw::ManagementApiGateway;
use wsledger_aws::adapters::dynamodb::{self, DynamoDbStore};
use wsledger_aws::adapters::sinks::presence_sinks;
use wsledger_aws::lambda::{self, projector};
use wsledger_aws::metrics::Metrics;
use wsledger_aws::ports::{ConnectionGateway, ViewStore};
use wsledger_aws::presence::Presence;
use wsledger_aws::settings;
use wsledger_aws::sweep::SweepConfig;

// One thread: Lambda gives a function one invocation at a time (and at most a vCPU
// or two), so worker threads add nothing but their start-up and a hand-off between
// threads on every request, a few milliseconds of every cold start (BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut init = lambda::InitPhases::start();
    lambda::init_tracing();
    init.mark("tracing");
    let retention_days = settings::handler_config()?.retention_days;
    let policy = settings::lambda_aws_policy();
    init.mark("settings");
    let store = DynamoDbStore::new(dynamodb::client(None, policy).await, settings::table_names());
    init.mark("sdk_config");
    lambda::warm_up(store.get(&lambda::warm_up_probe())).await;
    init.mark("warm_up");
    let endpoint = settings::management_endpoint(settings::websocket_api_endpoint().as_deref());
    let gateway = match endpoint {
        Some(endpoint) => Some(ManagementApiGateway::new(&endpoint, policy).await),
        None => None,
    };
    init.mark("management_api");
    let counters = Arc::new(Metrics::new());
    let presence_settings = settings::presence_settings()?;
    let presence = match presence_settings.enabled {
        true => {
            let sinks = presence_sinks(&presence_settings, settings::lambda_webhook_roots(), policy).await?;
            let mut presence = Presence::new(Arc::new(store.clone()), counters.clone());
            presence.sinks = sinks;
            presence.grace = presence_settings.grace;
            Some(presence)
        }
        false => None,
    };
    init.mark("presence");
    let metrics = lambda::MetricsOut::from_env(counters);
    let projector = projector::Projector {
        events: &store,
        views: &store,
        gateway: gateway.as_ref().map(|gateway| gateway as &dyn ConnectionGateway),
        leases: Some(&store),
        sweep: SweepConfig { retention_days, ..SweepConfig::default() },
        presence,
        metrics: metrics.metrics(),
    };
    let (projector, metrics) = (&projector, &metrics);
    init.done();
    lambda_runtime::run(service_fn(move |event| metrics.after(projector::handle(projector, event)))).await
}
