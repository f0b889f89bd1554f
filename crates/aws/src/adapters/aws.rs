//! One timeout and retry policy for every AWS client wsledger builds (DynamoDB,
//! DynamoDB Streams, the Management API), set here and nowhere else.
//!
//! Every call is bounded: connecting, each attempt, and the whole operation with
//! its retries. The defaults fit inside API Gateway's 29 s integration timeout with
//! room for an answer: a stalled endpoint costs a request at most
//! `operation_timeout`, after which the handler answers `unavailable`, the projector
//! reports the batch item as failed and the CLI prints one line.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

/// The timeouts and retries of every AWS call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwsPolicy {
    /// Opening a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// One attempt of an operation, from sending to the whole response.
    pub attempt_timeout: Duration,
    /// An operation with all its attempts and backoffs.
    pub operation_timeout: Duration,
    /// Attempts per operation (1: no retries). Throttling and transient errors are
    /// retried with exponential backoff and jitter (the SDK's standard mode).
    pub max_attempts: u32,
    /// Which root certificates TLS connections trust.
    pub roots: TrustRoots,
}

pub use crate::trust_roots::TrustRoots;

impl Default for AwsPolicy {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(4),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 3,
            roots: TrustRoots::System,
        }
    }
}

/// The environment variables that override the policy.
pub const CONNECT_TIMEOUT_ENV: &str = "AWS_CONNECT_TIMEOUT_MS";
pub const ATTEMPT_TIMEOUT_ENV: &str = "AWS_ATTEMPT_TIMEOUT_MS";
pub const OPERATION_TIMEOUT_ENV: &str = "AWS_OPERATION_TIMEOUT_MS";
/// The AWS SDKs' own name for it.
pub const MAX_ATTEMPTS_ENV: &str = "AWS_MAX_ATTEMPTS";

impl AwsPolicy {
    /// The defaults, overridden by `AWS_CONNECT_TIMEOUT_MS`, `AWS_ATTEMPT_TIMEOUT_MS`,
    /// `AWS_OPERATION_TIMEOUT_MS` and `AWS_MAX_ATTEMPTS` as `lookup` finds them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            match crate::setting::number::<u64>(&lookup, name)? {
                Some(0) => Err(format!("{name}=0: it must be above 0")),
                other => Ok(other),
            }
        };
        let mut policy = Self::default();
        if let Some(millis) = number(CONNECT_TIMEOUT_ENV)? {
            policy.connect_timeout = Duration::from_millis(millis);
        }
        if let Some(millis) = number(ATTEMPT_TIMEOUT_ENV)? {
            policy.attempt_timeout = Duration::from_millis(millis);
        }
        if let Some(millis) = number(OPERATION_TIMEOUT_ENV)? {
            policy.operation_timeout = Duration::from_millis(millis);
        }
        if let Some(attempts) = number(MAX_ATTEMPTS_ENV)? {
            policy.max_attempts = u32::try_from(attempts).map_err(|_| format!("{MAX_ATTEMPTS_ENV} is too large"))?;
        }
        Ok(policy)
    }

    fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }

    fn retry_config(&self) -> RetryConfig {
        RetryConfig::standard().with_max_attempts(self.max_attempts.max(1))
    }
}

/// The SDK configuration every client of wsledger is built from: the standard AWS
/// chain (environment, profile, role) with `policy`. With an
/// explicit endpoint (DynamoDB Local, the emulator), the region comes from the
/// environment or profile, else `us-east-1`, and the instance metadata service is
/// never asked (it is not there off AWS, and asking costs seconds and a warning).
pub async fn sdk_config(endpoint_url: Option<&str>, policy: AwsPolicy) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(policy.timeout_config())
        .retry_config(policy.retry_config());
    if let Some(endpoint_url) = endpoint_url {
        let region = RegionProviderChain::first_try(aws_config::environment::EnvironmentVariableRegionProvider::new())
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else("us-east-1");
        loader = loader.endpoint_url(endpoint_url).region(region);
    }
    if policy.roots == TrustRoots::Amazon {
        loader = loader.http_client(amazon_https_client());
    }
    loader.load().await
}

/// The SDK's own HTTPS client (hyper 1, rustls on aws-lc), trusting Amazon's roots only.
fn amazon_https_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let mut trust = TrustStore::empty().with_native_roots(false);
    for pem in TrustRoots::amazon_pem() {
        trust.add_pem_certificate(pem);
    }
    let context = TlsContext::builder().with_trust_store(trust).build().expect("a trust store of valid PEM");
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

/// What an SDK call's failure means, in one short line naming the operation: the
/// service's error code and message, or which step failed. The SDK error itself
/// goes beside it as the source (see [`crate::ports::Cause`]).
pub fn sdk_error_message<E, R>(operation: &str, error: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::SdkError;
    match error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("an error without a code");
            match service.err().message() {
                Some(message) => format!("{operation}: {code}: {message}"),
                None => format!("{operation}: {code}"),
            }
        }
        SdkError::TimeoutError(_) => {
            format!("{operation}: no answer within the timeout ({OPERATION_TIMEOUT_ENV} or {ATTEMPT_TIMEOUT_ENV})")
        }
        SdkError::DispatchFailure(_) => format!("{operation}: the request could not be sent"),
        SdkError::ResponseError(_) => format!("{operation}: the response could not be read"),
        _ => format!("{operation}: the request could not be built"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn policy(pairs: &[(&str, &str)]) -> Result<AwsPolicy, String> {
        let environment: HashMap<String, String> =
            pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        AwsPolicy::from_lookup(|name| environment.get(name).cloned())
    }

    #[test]
    fn amazons_roots_are_the_five_of_amazon_trust_services_in_valid_pem() {
        let der: Vec<&[u8]> = TrustRoots::amazon_der().collect();
        assert_eq!(der.len(), 5, "Amazon Root CA 1 to 4 and Starfield Services Root CA G2");
        for (pem, der) in TrustRoots::amazon_pem().zip(&der) {
            let body: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
            use base64::Engine;
            assert_eq!(base64::engine::general_purpose::STANDARD.decode(body).unwrap(), *der);
        }
        assert!(TrustRoots::is_aws_host("dynamodb.eu-west-1.amazonaws.com"));
        assert!(TrustRoots::is_aws_host("abc123.execute-api.us-east-1.amazonaws.com."));
        assert!(!TrustRoots::is_aws_host("ws.example.com"));
        assert!(!TrustRoots::is_aws_host("amazonaws.com.example.com"));
    }

    /// The SDK parses the trust store when it builds a connector (and panics on a
    /// root it cannot parse): a call to a closed port gets that far.
    #[tokio::test]
    async fn the_sdk_builds_its_tls_connector_from_amazons_roots() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let policy = AwsPolicy { roots: TrustRoots::Amazon, max_attempts: 1, ..AwsPolicy::default() };
        let config = aws_sdk_dynamodb::config::Builder::from(
            &sdk_config(Some(&format!("https://127.0.0.1:{port}")), policy).await,
        )
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("a", "b", None, None, "test"))
        .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let error = client.list_tables().send().await.expect_err("nothing listens there");
        assert!(matches!(error, aws_sdk_dynamodb::error::SdkError::DispatchFailure(_)), "{error:?}");
    }

    #[test]
    fn the_policy_reads_its_overrides_and_refuses_nonsense() {
        assert_eq!(policy(&[]), Ok(AwsPolicy::default()));
        let custom = policy(&[(OPERATION_TIMEOUT_ENV, "1500"), (MAX_ATTEMPTS_ENV, "1")]).unwrap();
        assert_eq!(custom.operation_timeout, Duration::from_millis(1_500));
        assert_eq!(custom.max_attempts, 1);
        assert!(policy(&[(ATTEMPT_TIMEOUT_ENV, "0")]).is_err());
        assert!(policy(&[(CONNECT_TIMEOUT_ENV, "soon")]).unwrap_err().contains(CONNECT_TIMEOUT_ENV));
    }

    #[test]
    fn the_defaults_fit_inside_api_gateways_integration_timeout() {
        let policy = AwsPolicy::default();
        assert!(policy.operation_timeout < Duration::from_secs(29));
        assert!(policy.attempt_timeout <= policy.operation_timeout);
    }
}
