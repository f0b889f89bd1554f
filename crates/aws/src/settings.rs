//! The process environment, read in one place. Entry points (the Lambda bootstraps,
//! the CLI, `serve`) call these once at start and hand the values to the services
//! and adapters, which never read the environment themselves. Each value's own
//! type parses it from a lookup (`from_lookup`), so the parsing is tested without
//! touching the process environment.

use crate::adapters::aws::{AwsPolicy, TrustRoots};
use crate::adapters::dynamodb::TableNames;
use crate::auth::AuthConfig;
use crate::handler::HandlerConfig;

pub use crate::setting::number;

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

/// `PRESENCE`, `PRESENCE_GRACE_SECS`, `PRESENCE_WEBHOOK_URL`, `PRESENCE_WEBHOOK_SECRET`,
/// `PRESENCE_EVENT_BUS`.
pub fn presence_settings() -> Result<crate::presence::PresenceSettings, String> {
    crate::presence::PresenceSettings::from_lookup(lookup)
}

/// The roots that verify the presence webhook in a Lambda bootstrap: Mozilla's,
/// compiled in (the webhook may be on any host), unless `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` names a store to use.
pub fn lambda_webhook_roots() -> TrustRoots {
    match lambda_trust_roots() {
        TrustRoots::Amazon => TrustRoots::Mozilla,
        roots => roots,
    }
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

/// The root certificates of the Lambda bootstraps' AWS clients: Amazon's, unless
/// `SSL_CERT_FILE` or `SSL_CERT_DIR` names a store to use (a private CA, an egress
/// proxy), or an endpoint override (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`,
/// `AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI`, `WEBSOCKET_API_ENDPOINT`) names an
/// HTTPS host outside AWS (a custom domain with an imported certificate).
pub fn lambda_trust_roots() -> TrustRoots {
    let named = |name: &str| lookup(name).is_some_and(|value| !value.trim().is_empty());
    if named("SSL_CERT_FILE") || named("SSL_CERT_DIR") {
        return TrustRoots::System;
    }
    let overrides = [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        crate::adapters::apigw::ENDPOINT_ENV,
        "WEBSOCKET_API_ENDPOINT",
    ];
    let foreign = overrides.iter().filter_map(|name| lookup(name)).any(|url| !https_to_aws_or_plain_http(&url));
    if foreign { TrustRoots::System } else { TrustRoots::Amazon }
}

/// The roots that verify `url` in a Lambda bootstrap: Amazon's for an AWS host
/// (Cognito's JWKS), the platform's for any other.
pub fn lambda_trust_roots_for(url: &str) -> TrustRoots {
    match lambda_trust_roots() {
        TrustRoots::Amazon if https_to_aws_or_plain_http(url) => TrustRoots::Amazon,
        _ => TrustRoots::System,
    }
}

/// `http://` anything (no certificate is checked), or `https://` to an AWS host.
fn https_to_aws_or_plain_http(url: &str) -> bool {
    let url = url.trim();
    if url.starts_with("http://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("https://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = host.split(':').next().unwrap_or_default();
    TrustRoots::is_aws_host(host)
}

/// [`aws_policy`] with [`lambda_trust_roots`]: the Lambda bootstraps' AWS clients.
pub fn lambda_aws_policy() -> AwsPolicy {
    AwsPolicy { roots: lambda_trust_roots(), ..aws_policy() }
}

/// The Management API endpoint: `AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI` (the AWS
/// SDK's own convention) when set, else `fallback` (`WEBSOCKET_API_ENDPOINT`, which
/// the template sets, or a flag).
pub fn management_endpoint(fallback: Option<&str>) -> Option<String> {
    lookup(crate::adapters::apigw::ENDPOINT_ENV)
        .filter(|value| !value.is_empty())
        .or_else(|| fallback.map(str::to_owned))
}

/// The DynamoDB endpoint, by the AWS SDK's own rule: `explicit` (a flag) when
/// given, else `AWS_ENDPOINT_URL_DYNAMODB`, else `AWS_ENDPOINT_URL`; `None` is AWS's.
/// The one rule for every entry point (the bootstraps' SDK client applies the same
/// variables itself; the Streams client, another service to the SDK, is pointed at
/// this explicitly).
pub fn dynamodb_endpoint(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_owned)
        .or_else(|| lookup("AWS_ENDPOINT_URL_DYNAMODB"))
        .or_else(|| lookup("AWS_ENDPOINT_URL"))
        .filter(|value| !value.trim().is_empty())
}

/// `WEBSOCKET_API_ENDPOINT`.
pub fn websocket_api_endpoint() -> Option<String> {
    lookup("WEBSOCKET_API_ENDPOINT").filter(|value| !value.is_empty())
}

/// `AWS_REGION` (else `AWS_DEFAULT_REGION`).
pub fn region() -> Option<String> {
    lookup("AWS_REGION").or_else(|| lookup("AWS_DEFAULT_REGION")).filter(|value| !value.is_empty())
}

/// An AWS credential variable of this process (`AWS_ACCESS_KEY_ID`, ...), passed on
/// to the functions `serve --lambda` runs.
pub fn aws_credential(name: &str) -> Option<String> {
    lookup(name).filter(|value| !value.is_empty())
}

/// Where `scripts/package` leaves the bootstraps: `$CARGO_TARGET_DIR/lambda`, else
/// `target/lambda`.
pub fn default_artifacts_dir() -> std::path::PathBuf {
    let target = lookup("CARGO_TARGET_DIR").filter(|value| !value.is_empty()).unwrap_or_else(|| "target".into());
    std::path::PathBuf::from(target).join("lambda")
}

#[cfg(test)]
mod tests {
    use super::https_to_aws_or_plain_http;

    #[test]
    fn amazons_roots_verify_only_aws_hosts() {
        assert!(https_to_aws_or_plain_http("https://cognito-idp.us-east-1.amazonaws.com/pool/.well-known/jwks.json"));
        assert!(https_to_aws_or_plain_http("https://abc.execute-api.eu-west-1.amazonaws.com:443/prod"));
        assert!(https_to_aws_or_plain_http("http://127.0.0.1:8000"), "no certificate to verify");
        assert!(!https_to_aws_or_plain_http("https://ws.example.com/prod"));
        assert!(!https_to_aws_or_plain_http("https://user@evil.test/x.amazonaws.com"));
        assert!(!https_to_aws_or_plain_http("ftp://x.amazonaws.com"));
    }
}
