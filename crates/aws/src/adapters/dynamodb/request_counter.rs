//! Counting DynamoDB requests by operation, and the bytes of their answers, for
//! tests and benchmarks ("no Scan", "writes per message", "bytes read per batch").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

/// An SDK interceptor that counts requests by operation name (`PutItem`, `Query`, ...),
/// read from the `X-Amz-Target` header of DynamoDB's JSON protocol, and the bytes of
/// their answers' bodies (`Content-Length`). Retries count.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    requests: BTreeMap<String, u64>,
    bytes: BTreeMap<String, u64>,
}

/// The operation a request or its answer belongs to is kept in the config bag
/// between the two hooks.
#[derive(Debug, Clone)]
struct Operation(String);

impl aws_smithy_types::config_bag::Storable for Operation {
    type Storer = aws_smithy_types::config_bag::StoreReplace<Self>;
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many requests of `operation` were sent.
    pub fn count(&self, operation: &str) -> u64 {
        self.counts().requests.get(operation).copied().unwrap_or(0)
    }

    /// All request counts so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts().requests.clone()
    }

    /// The bytes of the answers' bodies so far, by operation.
    pub fn bytes(&self) -> BTreeMap<String, u64> {
        self.counts().bytes.clone()
    }

    pub fn reset(&self) {
        let mut counts = self.counts();
        counts.requests.clear();
        counts.bytes.clear();
    }

    /// The counts; a panic elsewhere cannot leave a map of counters invalid.
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
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
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        *self.counts().requests.entry(operation.clone()).or_default() += 1;
        cfg.interceptor_state().store_put(Operation(operation));
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        let length = response
            .headers()
            .get("content-length")
            .and_then(|value| value.parse::<u64>().ok())
            .or_else(|| response.body().bytes().map(|body| body.len() as u64))
            .unwrap_or(0);
        let operation = cfg.load::<Operation>().map_or_else(|| "unknown".to_owned(), |operation| operation.0.clone());
        *self.counts().bytes.entry(operation).or_default() += length;
        Ok(())
    }
}
