//! SDK errors turned into [`StoreError`]s with a meaning.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::ports::StoreError;

/// Maps any DynamoDB SDK error by its error code, so every operation shares one mapping.
pub(crate) fn store_error<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let message = match &error {
        SdkError::TimeoutError(_) => format!(
            "{operation}: no answer within the timeout ({} or {})",
            crate::adapters::aws::OPERATION_TIMEOUT_ENV,
            crate::adapters::aws::ATTEMPT_TIMEOUT_ENV
        ),
        _ => format!("{operation}: {}", DisplayErrorContext(&error)),
    };
    match &error {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ConditionalCheckFailedException" | "TransactionConflictException") => StoreError::Conflict(message),
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException",
            ) => StoreError::Throttled(message),
            Some("ResourceNotFoundException") => StoreError::NotFound(message),
            Some("InternalServerError" | "ServiceUnavailable") => StoreError::Unavailable(message),
            _ => StoreError::Other(message),
        },
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(message)
        }
        _ => StoreError::Other(message),
    }
}
