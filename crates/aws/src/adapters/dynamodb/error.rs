//! SDK errors turned into [`StoreError`]s with a meaning. The SDK error is kept as
//! the error's source.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

use crate::ports::{Cause, StoreError};

/// Maps any DynamoDB SDK error by its error code, so every operation shares one mapping.
pub(crate) fn store_error<E, R>(operation: &str, error: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let message = crate::adapters::aws::sdk_error_message(operation, &error);
    let unreachable =
        matches!(error, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_));
    let code = error.code().map(str::to_owned);
    let cause = Cause::caused_by(message, error);
    match code.as_deref() {
        // A cancelled transaction (the outbox's) is, for our transactions, a condition that failed.
        Some("ConditionalCheckFailedException" | "TransactionConflictException" | "TransactionCanceledException") => {
            StoreError::Conflict(cause)
        }
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "LimitExceededException",
        ) => StoreError::Throttled(cause),
        Some("ResourceNotFoundException") => StoreError::NotFound(cause),
        Some("InternalServerError" | "ServiceUnavailable") => StoreError::Unavailable(cause),
        _ if unreachable => StoreError::Unavailable(cause),
        _ => StoreError::Other(cause),
    }
}
