//! Counting DynamoDB requests by operation, for tests and benchmarks ("no Scan",
//! "writes per message").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

/// An SDK interceptor that counts requests by operation name (`PutItem`, `Query`, ...),
/// read from the `X-Amz-Target` header of DynamoDB's JSON protocol. Retries count.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many requests of `operation` were sent.
    pub fn count(&self, operation: &str) -> u64 {
        self.counts().get(operation).copied().unwrap_or(0)
    }

    /// All counts so far.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts().clone()
    }

    pub fn reset(&self) {
        self.counts().clear();
    }

    /// The counts; a panic elsewhere cannot leave a map of counters invalid.
    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        crate::sync::lock(&self.counts)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        *self.counts().entry(operation).or_default() += 1;
        Ok(())
    }
}
