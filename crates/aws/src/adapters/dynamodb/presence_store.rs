//! [`PresenceStore`] on the connections table: a user's presence record is one item
//! keyed `presence#<userId>` (API Gateway's connection ids never hold `#`), with the
//! user in `presenceUserId`, so the user index of views does not see it.
//!
//! **The index.** A record that needs attention by itself is put in the live index
//! (`liveShard-liveUntil-index`) under partitions of its own, `presence#0` to
//! `presence#7` (a stable hash of the user), with `liveUntil` set to when it needs
//! it. The sweep reads only the views' partitions (`0` to `7`), so neither sees the
//! other, and presence needs no index of its own: a table already deployed gains
//! presence without an index backfill. Listing the users online and finding the
//! due records are a Query per partition, never a Scan.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

use super::error::store_error;
use super::items::{Item, LIVE_SHARDS, put_if_version, take_version};
use super::view_store::{decode_cursor, encode_cursor, read_items};
use super::{DynamoDbStore, LIVE_INDEX};
use crate::adapters::stored::{PresenceItem, corrupt};
use crate::domain::presence::PresenceRecord;
use crate::domain::{Timestamp, UserId};
use crate::ports::{Cause, Page, PageRequest, PresenceStore, StoreError, ViewCursor};

/// The key of a user's presence item in the connections table.
pub fn presence_key(user_id: &UserId) -> String {
    format!("presence#{user_id}")
}

/// The live-index partition of a user's presence record.
fn presence_shard(shard: u64) -> String {
    format!("presence#{shard}")
}

fn shard_of_user(user_id: &UserId) -> u64 {
    let digest = Sha256::digest(user_id.as_str().as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % LIVE_SHARDS
}

fn record_from_item(mut item: Item) -> Result<(PresenceRecord, u64), StoreError> {
    let version = take_version(&mut item, "presence item")?;
    for index_attribute in ["connectionId", "liveShard", "liveUntil"] {
        item.remove(index_attribute);
    }
    let record: PresenceItem =
        serde_dynamo::from_item(item).map_err(|error| corrupt(format!("presence item: {error}")))?;
    Ok((PresenceRecord::try_from(record)?, version))
}

#[async_trait]
impl PresenceStore for DynamoDbStore {
    async fn presence(&self, user_id: &UserId) -> Result<Option<(PresenceRecord, u64)>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("connectionId", AttributeValue::S(presence_key(user_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| store_error("GetItem", error))?;
        output.item.map(record_from_item).transpose()
    }

    async fn put_presence(
        &self,
        record: &PresenceRecord,
        check_at: Option<Timestamp>,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let mut item: Item = serde_dynamo::to_item(PresenceItem::from(record))
            .map_err(|error| StoreError::Other(Cause::caused_by("encoding a presence item", error)))?;
        item.insert("connectionId".into(), AttributeValue::S(presence_key(&record.user_id)));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        if let Some(check_at) = check_at {
            item.insert("liveShard".into(), AttributeValue::S(presence_shard(shard_of_user(&record.user_id))));
            item.insert("liveUntil".into(), AttributeValue::S(check_at.to_rfc3339()));
        }
        let request = self.client.put_item().table_name(&self.tables.connections).set_item(Some(item));
        put_if_version(request, expected_version).send().await.map_err(|error| store_error("PutItem", error))?;
        Ok(version)
    }

    async fn list_presence(
        &self,
        due_by: Option<Timestamp>,
        page: PageRequest<ViewCursor>,
    ) -> Result<Page<PresenceRecord, ViewCursor>, StoreError> {
        let (mut shard, mut start_key) = match &page.after {
            Some(cursor) => decode_cursor(cursor)?,
            None => (0, None),
        };
        let mut records = Vec::new();
        let decode = |item: Item| record_from_item(item).map(|(record, _)| record);
        while shard < LIVE_SHARDS {
            let mut query = self
                .client
                .query()
                .table_name(&self.tables.connections)
                .index_name(LIVE_INDEX)
                .expression_attribute_values(":shard", AttributeValue::S(presence_shard(shard)));
            query = match due_by {
                Some(due_by) => query
                    .key_condition_expression("liveShard = :shard AND liveUntil <= :due")
                    .expression_attribute_values(":due", AttributeValue::S(due_by.to_rfc3339())),
                None => query.key_condition_expression("liveShard = :shard"),
            };
            let last_key = read_items(query, start_key.take(), page.limit, &mut records, decode).await?;
            match last_key {
                Some(key) if records.len() < page.limit => start_key = Some(key),
                Some(key) => return Ok(Page { items: records, next: Some(encode_cursor(shard, key)) }),
                None if records.len() < page.limit => shard += 1,
                None => {
                    let next = (shard + 1 < LIVE_SHARDS).then(|| encode_cursor(shard + 1, Item::new()));
                    return Ok(Page { items: records, next });
                }
            }
        }
        Ok(Page { items: records, next: None })
    }
}
