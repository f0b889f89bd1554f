//! The smallest `lambda_runtime` function: it answers every event with `{}`. The
//! `lambda_init` bench starts it beside the packaged bootstraps as the floor of
//! what a Rust bootstrap costs to start; `scripts/package` builds it the same way
//! (cargo-lambda, the `lambda` profile).

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async { Ok::<_, Error>(json!({})) })).await
}
