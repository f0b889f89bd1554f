//! [`OutboxStore`] on the outbox table (`migrations/dynamodb/outbox.json`): key
//! `userId` + `seq`. The head is the item at `seq` 0 (`lastSeq`, `resumed`,
//! `version`); a message is the item at its number, removed by TTL on `expiresAt`.
//! A message and its head are one `TransactWriteItems`: the head conditional on
//! its version, the message on not existing.

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::DynamoDbStore;
use super::error::store_error;
use super::items::{Item, take_version};
use crate::adapters::stored::{OutboxHeadItem, OutboxMessageItem, corrupt};
use crate::domain::UserId;
use crate::domain::recovery::{OutboxHead, OutboxMessage};
use crate::ports::{Cause, OutboxStore, StoreError};

fn encode<T: serde::Serialize>(item: &T, what: &str) -> Result<Item, StoreError> {
    serde_dynamo::to_item(item).map_err(|error| StoreError::Other(Cause::caused_by(format!("encoding {what}"), error)))
}

/// A cancelled transaction is a lost race (tried again) only when its items say
/// so: a condition that failed or a conflicting transaction. A throttled item is
/// throttling; any other reason (a message too large for an item, a validation
/// error) would fail again and is returned as it is.
fn transaction_error(error: SdkError<TransactWriteItemsError, HttpResponse>) -> StoreError {
    let codes: Vec<String> = match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
            .cancellation_reasons()
            .iter()
            .filter_map(|reason| reason.code().filter(|code| *code != "None").map(str::to_owned))
            .collect(),
        _ => return store_error("TransactWriteItems", error),
    };
    let message = crate::adapters::aws::sdk_error_message("TransactWriteItems", &error);
    match transaction_outcome(&codes) {
        TransactionOutcome::Conflict => store_error("TransactWriteItems", error),
        TransactionOutcome::Throttled => StoreError::Throttled(Cause::caused_by(message, error)),
        TransactionOutcome::Refused => {
            let message = format!("{message} (refused: {})", codes.join(", "));
            StoreError::Other(Cause::caused_by(message, error))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum TransactionOutcome {
    Conflict,
    Throttled,
    Refused,
}

/// What a cancelled transaction's reasons (their codes, `None` left out) mean.
fn transaction_outcome(codes: &[String]) -> TransactionOutcome {
    let lost_race = |code: &str| matches!(code, "ConditionalCheckFailed" | "TransactionConflict");
    let throttled = |code: &str| matches!(code, "ThrottlingError" | "ProvisionedThroughputExceeded");
    if codes.iter().all(|code| lost_race(code)) {
        TransactionOutcome::Conflict
    } else if codes.iter().all(|code| lost_race(code) || throttled(code)) {
        TransactionOutcome::Throttled
    } else {
        TransactionOutcome::Refused
    }
}

/// The head's item and the condition that it is still at `expected` (`None`: absent).
fn head_put(table: &str, user_id: &UserId, head: &OutboxHead, expected: Option<u64>) -> Result<Put, StoreError> {
    let version = expected.map_or(1, |version| version + 1);
    let mut item = encode(&OutboxHeadItem::from(head), "an outbox head")?;
    item.insert("userId".into(), AttributeValue::S(user_id.to_string()));
    item.insert("seq".into(), AttributeValue::N("0".into()));
    item.insert("version".into(), AttributeValue::N(version.to_string()));
    let put = Put::builder().table_name(table).set_item(Some(item));
    let put = match expected {
        None => put.condition_expression("attribute_not_exists(userId)"),
        Some(expected) => put
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string())),
    };
    put.build().map_err(|error| StoreError::Other(Cause::caused_by("building a Put", error)))
}

#[async_trait]
impl OutboxStore for DynamoDbStore {
    async fn head(&self, user_id: &UserId) -> Result<Option<(OutboxHead, u64)>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.outbox)
            .key("userId", AttributeValue::S(user_id.to_string()))
            .key("seq", AttributeValue::N("0".into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| store_error("GetItem", error))?;
        let Some(mut item) = output.item else { return Ok(None) };
        let version = take_version(&mut item, "outbox head")?;
        item.remove("userId");
        item.remove("seq");
        let head: OutboxHeadItem =
            serde_dynamo::from_item(item).map_err(|error| corrupt(format!("outbox head: {error}")))?;
        Ok(Some((OutboxHead::try_from(head)?, version)))
    }

    async fn append_message(
        &self,
        head: &OutboxHead,
        message: &OutboxMessage,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let table = &self.tables.outbox;
        let head_put = head_put(table, &message.user_id, head, expected_version)?;
        let message_put = Put::builder()
            .table_name(table)
            .set_item(Some(encode(&OutboxMessageItem::from(message), "an outbox message")?))
            .condition_expression("attribute_not_exists(seq)")
            .build()
            .map_err(|error| StoreError::Other(Cause::caused_by("building a Put", error)))?;
        self.client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(head_put).build())
            .transact_items(TransactWriteItem::builder().put(message_put).build())
            .send()
            .await
            .map_err(transaction_error)?;
        Ok(expected_version.map_or(1, |version| version + 1))
    }

    async fn put_head(
        &self,
        user_id: &UserId,
        head: &OutboxHead,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let put = head_put(&self.tables.outbox, user_id, head, expected_version)?;
        self.client
            .put_item()
            .table_name(put.table_name())
            .set_item(Some(put.item().clone()))
            .set_condition_expression(put.condition_expression().map(str::to_owned))
            .set_expression_attribute_values(put.expression_attribute_values().cloned())
            .send()
            .await
            .map_err(|error| store_error("PutItem", error))?;
        Ok(expected_version.map_or(1, |version| version + 1))
    }

    async fn messages(
        &self,
        user_id: &UserId,
        after: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let mut messages = Vec::new();
        if after >= until {
            return Ok(messages);
        }
        let mut start_key = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.tables.outbox)
                .key_condition_expression("userId = :user AND seq BETWEEN :first AND :last")
                .expression_attribute_values(":user", AttributeValue::S(user_id.to_string()))
                .expression_attribute_values(":first", AttributeValue::N((after + 1).to_string()))
                .expression_attribute_values(":last", AttributeValue::N(until.to_string()))
                .consistent_read(true)
                .limit(limit.saturating_sub(messages.len()).clamp(1, 1_000) as i32)
                .set_exclusive_start_key(start_key)
                .send()
                .await
                .map_err(|error| store_error("Query", error))?;
            for item in output.items.unwrap_or_default() {
                let item: OutboxMessageItem =
                    serde_dynamo::from_item(item).map_err(|error| corrupt(format!("outbox message: {error}")))?;
                messages.push(OutboxMessage::try_from(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if messages.len() < limit => start_key = Some(key),
                _ => return Ok(messages),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(codes: &[&str]) -> Vec<String> {
        codes.iter().map(|code| (*code).to_owned()).collect()
    }

    #[test]
    fn only_a_lost_race_is_a_conflict() {
        assert_eq!(transaction_outcome(&codes(&["ConditionalCheckFailed"])), TransactionOutcome::Conflict);
        assert_eq!(transaction_outcome(&codes(&["TransactionConflict"])), TransactionOutcome::Conflict);
        assert_eq!(
            transaction_outcome(&codes(&["ConditionalCheckFailed", "ThrottlingError"])),
            TransactionOutcome::Throttled
        );
        assert_eq!(transaction_outcome(&codes(&["ValidationError"])), TransactionOutcome::Refused);
        assert_eq!(
            transaction_outcome(&codes(&["ConditionalCheckFailed", "ItemCollectionSizeLimitExceeded"])),
            TransactionOutcome::Refused
        );
    }
}
