//! [`ViewStore`] on the connections table.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::error::store_error;
use super::items::{Item, LIVE_SHARDS, put_if_version, view_from_item, view_to_item};
use super::view_fold::FOLD_ATTRIBUTE;
use super::{DynamoDbStore, LIVE_INDEX, USER_CONNECTIONS_INDEX};
use crate::domain::{ConnectionId, ConnectionInfo, ConnectionStatus, Timestamp, UserId};
use crate::ports::{Cause, Page, PageRequest, StoreError, VersionedView, ViewCursor, ViewStore};

/// The cursor of a view listing: the shard of the live index it is in (0 for the
/// user index) and DynamoDB's `LastEvaluatedKey`, whose attributes are all strings.
#[derive(Debug, Serialize, Deserialize)]
struct CursorState {
    shard: u64,
    key: HashMap<String, String>,
}

pub(super) fn encode_cursor(shard: u64, key: Item) -> ViewCursor {
    let key = key.into_iter().filter_map(|(name, value)| value.as_s().ok().map(|text| (name, text.clone()))).collect();
    ViewCursor(serde_json::to_string(&CursorState { shard, key }).unwrap_or_default())
}

/// The shard and the key to start after; no key means "from the shard's start".
pub(super) fn decode_cursor(cursor: &ViewCursor) -> Result<(u64, Option<Item>), StoreError> {
    let state: CursorState = serde_json::from_str(&cursor.0)
        .map_err(|error| StoreError::Other(Cause::caused_by(format!("invalid view cursor {:?}", cursor.0), error)))?;
    let key: Item = state.key.into_iter().map(|(name, text)| (name, AttributeValue::S(text))).collect();
    Ok((state.shard, (!key.is_empty()).then_some(key)))
}

/// Sends one page of a view listing (from `start_key`, up to what `limit` still
/// wants), adds its views to `views`, and returns where the next page starts.
async fn read_page(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    start_key: Option<Item>,
    limit: usize,
    views: &mut Vec<ConnectionInfo>,
) -> Result<Option<Item>, StoreError> {
    read_items(query, start_key, limit, views, |item| Ok(view_from_item(item)?.view)).await
}

/// [`read_page`] for any item `decode` reads (the presence records share the live index).
pub(super) async fn read_items<T>(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    start_key: Option<Item>,
    limit: usize,
    read: &mut Vec<T>,
    decode: impl Fn(Item) -> Result<T, StoreError>,
) -> Result<Option<Item>, StoreError> {
    let output = query
        .set_exclusive_start_key(start_key)
        .limit(limit.saturating_sub(read.len()).clamp(1, 1_000) as i32)
        .send()
        .await
        .map_err(|error| store_error("Query", error))?;
    for item in output.items.unwrap_or_default() {
        read.push(decode(item)?);
    }
    Ok(output.last_evaluated_key)
}

#[async_trait]
impl ViewStore for DynamoDbStore {
    /// The view and its usage walk, which has an item of its own (`view_fold`).
    async fn get(&self, connection_id: &ConnectionId) -> Result<Option<VersionedView>, StoreError> {
        self.view_item_with_fold(connection_id).await?.map(view_from_item).transpose()
    }

    /// The view item alone: one consistent GetItem.
    async fn read(&self, connection_id: &ConnectionId) -> Result<Option<ConnectionInfo>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("connectionId", AttributeValue::S(connection_id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| store_error("GetItem", error))?;
        Ok(output.item.map(view_from_item).transpose()?.map(|stored| stored.view))
    }

    /// The view, conditional on its version, then its usage walk in its own item.
    #[tracing::instrument(skip(self, view), fields(connection_id = %view.connection_id))]
    async fn put(&self, view: &ConnectionInfo, expected_version: Option<u64>) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let mut item = view_to_item(view, version)?;
        let walk = item.remove(FOLD_ATTRIBUTE);
        let request = self.client.put_item().table_name(&self.tables.connections).set_item(Some(item));
        put_if_version(request, expected_version).send().await.map_err(|error| store_error("PutItem", error))?;
        if let Some(walk) = walk {
            self.put_fold(&view.connection_id, version, walk).await;
        }
        Ok(version)
    }

    async fn list_by_user(
        &self,
        user_id: &UserId,
        status: Option<ConnectionStatus>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.connections)
            .index_name(USER_CONNECTIONS_INDEX)
            .key_condition_expression("userId = :user")
            .expression_attribute_values(":user", AttributeValue::S(user_id.to_string()))
            .scan_index_forward(false);
        if let Some(status) = status {
            query = query
                .filter_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", AttributeValue::S(status.as_str().to_owned()));
        }
        let mut start_key = page.after.as_ref().map(decode_cursor).transpose()?.and_then(|(_, key)| key);
        let mut views = Vec::new();
        loop {
            let last_key = read_page(query.clone(), start_key.take(), page.limit, &mut views).await?;
            match last_key {
                Some(key) if views.len() < page.limit => start_key = Some(key),
                Some(key) => return Ok(Page { items: views, next: Some(encode_cursor(0, key)) }),
                None => return Ok(Page { items: views, next: None }),
            }
        }
    }

    async fn list_live_until_before(
        &self,
        deadline: Timestamp,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<ConnectionInfo, ViewCursor>, StoreError> {
        let (mut shard, mut start_key) = match &page.after {
            Some(cursor) => decode_cursor(cursor)?,
            None => (0, None),
        };
        let mut views = Vec::new();
        while shard < LIVE_SHARDS {
            let query = self
                .client
                .query()
                .table_name(&self.tables.connections)
                .index_name(LIVE_INDEX)
                .key_condition_expression("liveShard = :shard AND liveUntil < :deadline")
                .expression_attribute_values(":shard", AttributeValue::S(shard.to_string()))
                .expression_attribute_values(":deadline", AttributeValue::S(deadline.to_rfc3339()));
            let last_key = read_page(query, start_key.take(), page.limit, &mut views).await?;
            match last_key {
                Some(key) if views.len() < page.limit => start_key = Some(key),
                Some(key) => return Ok(Page { items: views, next: Some(encode_cursor(shard, key)) }),
                None if views.len() < page.limit => shard += 1,
                None => {
                    let next = (shard + 1 < LIVE_SHARDS).then(|| encode_cursor(shard + 1, Item::new()));
                    return Ok(Page { items: views, next });
                }
            }
        }
        Ok(Page { items: views, next: None })
    }
}
