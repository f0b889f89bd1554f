//! The `authorizer` Lambda bootstrap: verifies the Cognito JWT of a `$connect`.

use lambda_runtime::{Error, service_fn};
use wsledger::auth::{AuthConfig, JwtVerifier};
use wsledger::lambda::{self, authorizer};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda::init_tracing();
    let verifier = JwtVerifier::new(AuthConfig::from_env()?);
    if let Err(error) = verifier.warm_up().await {
        tracing::warn!(%error, "loading the signing keys during init failed; retrying on the first request");
    }
    let verifier = &verifier;
    lambda_runtime::run(service_fn(move |event| authorizer::handle(verifier, event))).await
}
