//! [`ConnectionGateway`] on API Gateway's Management API (`@connections`), through
//! `aws-sdk-apigatewaymanagement`. Only this module knows its SDK types.

use async_trait::async_trait;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::http::HttpResponse;
use aws_sdk_apigatewaymanagement::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;

use crate::domain::{ConnectionId, Timestamp};
use crate::ports::{Cause, ConnectionGateway, GatewayConnection, GatewayError};

/// The environment variable the AWS SDK reads for this service's endpoint.
pub const ENDPOINT_ENV: &str = "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI";

#[derive(Debug, Clone)]
pub struct ManagementApiGateway {
    client: Client,
}

impl ManagementApiGateway {
    /// A gateway on `endpoint`, with the standard AWS configuration and the one
    /// timeout and retry policy otherwise.
    pub async fn new(endpoint: &str, policy: crate::adapters::aws::AwsPolicy) -> Self {
        Self { client: Client::new(&crate::adapters::aws::sdk_config(Some(endpoint), policy).await) }
    }

    pub fn from_client(client: Client) -> Self {
        Self { client }
    }
}

fn gateway_error<E>(operation: &str, error: SdkError<E, HttpResponse>) -> GatewayError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // A 410 is "gone" even when the response carries no error code.
    let status = match &error {
        SdkError::ServiceError(service) => Some(service.raw().status().as_u16() == 410),
        _ => None,
    };
    let message = crate::adapters::aws::sdk_error_message(operation, &error);
    let code = error.code().map(str::to_owned);
    let cause = Cause::caused_by(message, error);
    match code.as_deref() {
        Some("GoneException") => GatewayError::Gone,
        Some("LimitExceededException" | "ThrottlingException") => GatewayError::Throttled(cause),
        Some("PayloadTooLargeException") => GatewayError::PayloadTooLarge(cause),
        _ if status == Some(true) => GatewayError::Gone,
        _ => GatewayError::Other(cause),
    }
}

fn timestamp(value: Option<&aws_sdk_apigatewaymanagement::primitives::DateTime>) -> Option<Timestamp> {
    value.and_then(|at| at.to_millis().ok()).map(Timestamp::from_epoch_millis)
}

#[async_trait]
impl ConnectionGateway for ManagementApiGateway {
    #[tracing::instrument(skip(self, data), fields(bytes = data.len()))]
    async fn post(&self, connection_id: &ConnectionId, data: &[u8]) -> Result<(), GatewayError> {
        self.client
            .post_to_connection()
            .connection_id(connection_id.as_str())
            .data(Blob::new(data))
            .send()
            .await
            .map(|_| ())
            .map_err(|error| gateway_error("PostToConnection", error))
    }

    async fn get(&self, connection_id: &ConnectionId) -> Result<GatewayConnection, GatewayError> {
        let output = self
            .client
            .get_connection()
            .connection_id(connection_id.as_str())
            .send()
            .await
            .map_err(|error| gateway_error("GetConnection", error))?;
        Ok(GatewayConnection {
            connected_at: timestamp(output.connected_at()),
            last_active_at: timestamp(output.last_active_at()),
            source_ip: output.identity().and_then(|identity| identity.source_ip()).map(str::to_owned),
            user_agent: output.identity().and_then(|identity| identity.user_agent()).map(str::to_owned),
        })
    }

    async fn delete(&self, connection_id: &ConnectionId) -> Result<(), GatewayError> {
        self.client
            .delete_connection()
            .connection_id(connection_id.as_str())
            .send()
            .await
            .map(|_| ())
            .map_err(|error| gateway_error("DeleteConnection", error))
    }
}
