//! The `authorizer` Lambda bootstrap: verifies the Cognito JWT of a `$connect`.

use std::sync::Arc;

use lambda_runtime::{Error, service_fn};
use wsledger_aws::adapters::aws::TrustRoots;
use wsledger_aws::auth::{JwksSource, JwtVerifier};
use wsledger_aws::lambda::{self, authorizer};
use wsledger_aws::metrics::Metrics;
use wsledger_aws::settings;

// One thread: Lambda gives a function one invocation at a time (and at most a vCPU
// or two), so worker threads add nothing but their start-up and a hand-off between
// threads on every request, a few milliseconds of every cold start (BENCHMARKS.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let mut init = lambda::InitPhases::start();
    lambda::init_tracing();
    init.mark("tracing");
    let metrics = lambda::MetricsOut::from_env(Arc::new(Metrics::new()));
    let config = settings::auth_config()?;
    let roots = match &config.jwks {
        JwksSource::Url(url) => settings::lambda_trust_roots_for(url),
        JwksSource::File(_) => TrustRoots::System,
    };
    let verifier = JwtVerifier::new(config).with_trust_roots(roots).with_metrics(metrics.metrics().clone());
    init.mark("settings");
    if let Err(error) = verifier.warm_up().await {
        tracing::warn!(%error, "loading the signing keys during init failed; trying again after a back-off");
    }
    init.mark("jwks");
    let (verifier, metrics) = (&verifier, &metrics);
    init.done();
    lambda_runtime::run(service_fn(move |event| metrics.after(authorizer::handle(verifier, event)))).await
}
