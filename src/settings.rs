//! The process environment, read in one place. Entry points (the Lambda bootstraps,
//! the CLI, `serve`) call these once at start and hand the values to the services
//! and adapters, which never read the environment themselves. Each value's own
//! type parses it from a lookup (`from_lookup`), so the parsing is tested without
//! touching the process environment.

use crate::adapters::aws::AwsPolicy;
use crate::adapters::dynamodb::TableNames;
use crate::auth::AuthConfig;
use crate::handler::HandlerConfig;

/// A whole number of 0 or more from `lookup(name)`: `None` when unset or blank, an
/// error naming the variable when it is not a number. Every setting parses its
/// numbers with this.
pub fn number<T: std::str::FromStr>(lookup: impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<T>, String> {
    match lookup(name) {
        Some(value) if !value.trim().is_empty() => value
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{name}={value:?} is not a whole number of 0 or more")),
        _ => Ok(None),
    }
}

/// A variable of the process environment (`None` when unset).
pub fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `ACTIVITY_INTERVAL_SECS`, `RETENTION_DAYS` and the policies.
pub fn handler_config() -> Result<HandlerConfig, String> {
    HandlerConfig::from_lookup(lookup)
}

/// `USER_POOL_ID`, `USER_POOL_CLIENT_ID`, `JWKS_URL`, `JWKS_FILE`.
pub fn auth_config() -> Result<AuthConfig, String> {
    AuthConfig::from_lookup(lookup)
}

/// `EVENTS_TABLE_NAME`, `CONNECTIONS_TABLE_NAME`.
pub fn table_names() -> TableNames {
    TableNames::from_lookup(lookup)
}

/// `AWS_*_TIMEOUT_MS` and `AWS_MAX_ATTEMPTS`; an invalid value is reported and the
/// default kept.
pub fn aws_policy() -> AwsPolicy {
    AwsPolicy::from_lookup(lookup).unwrap_or_else(|error| {
        tracing::warn!(%error, "ignoring an invalid AWS timeout setting");
        AwsPolicy::default()
    })
}

/// The Management API endpoint: `AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI` (the AWS
/// SDK's own convention) when set, else `fallback` (`WEBSOCKET_API_ENDPOINT`, which
/// the template sets, or a flag).
pub fn management_endpoint(fallback: Option<&str>) -> Option<String> {
    lookup(crate::adapters::apigw::ENDPOINT_ENV)
        .filter(|value| !value.is_empty())
        .or_else(|| fallback.map(str::to_owned))
}

/// `WEBSOCKET_API_ENDPOINT`.
pub fn websocket_api_endpoint() -> Option<String> {
    lookup("WEBSOCKET_API_ENDPOINT").filter(|value| !value.is_empty())
}

/// `AWS_ENDPOINT_URL_DYNAMODB` (the SDK reads it for DynamoDB; the Streams client,
/// another service to the SDK, is pointed at it explicitly).
pub fn dynamodb_endpoint() -> Option<String> {
    lookup("AWS_ENDPOINT_URL_DYNAMODB").filter(|value| !value.is_empty())
}
