//! The `authorizer` Lambda bootstrap: verifies the Cognito JWT of a `$connect`.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use wsledger::auth::JwtVerifier;
use wsledger::lambda::{self, authorizer};
use wsledger::metrics::Metrics;
use wsledger::settings;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let metrics = lambda::MetricsOut::from_env(Arc::new(Metrics::new()));
    let verifier = JwtVerifier::new(settings::auth_config()?).with_metrics(metrics.metrics().clone());
    if let Err(error) = verifier.warm_up().await {
        tracing::warn!(%error, "loading the signing keys during init failed; trying again after a back-off");
    }
    let (verifier, metrics) = (&verifier, &metrics);
    lambda_runtime::run(service_fn(move |event| metrics.after(authorizer::handle(verifier, event)))).await
}
