//! Lambda entry points: converting Lambda events into application calls and back.
//! Each binary in `src/bin` builds its dependencies once and hands a function from
//! here to `lambda_runtime::run`.

pub mod authorizer;
pub mod connection_handler;
pub mod projector;

use tracing_subscriber::EnvFilter;

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

/// Opens the DynamoDB connection during init (TLS handshake, credentials), so the
/// first request does not pay for it. A cheap query the handler is allowed to make
/// anyway; a failure is logged, not fatal.
pub async fn warm_up(store: &crate::adapters::dynamodb::DynamoDbStore) {
    use crate::ports::{EventStore, PageRequest};
    let probe = crate::domain::ConnectionId::parse("wsledger-warm-up").expect("a valid id");
    if let Err(error) = store.connection_history(&probe, PageRequest::first(1)).await {
        tracing::warn!(%error, "warming up the DynamoDB connection failed");
    }
}
