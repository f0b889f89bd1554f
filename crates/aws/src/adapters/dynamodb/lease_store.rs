//! [`LeaseStore`] on the connections table: a user's leases are one item whose key
//! is `lease#<userId>` (API Gateway's connection ids never hold `#`). The item has
//! none of the indexes' key attributes (`userId`, `createdAt`, `liveShard`), so no
//! index and no view listing sees it; it needs no table and no permission of its
//! own beyond GetItem and PutItem on the connections table.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoDbStore;
use super::error::store_error;
use super::items::{Item, put_if_version, take_version};
use crate::adapters::stored::{LeasesItem, corrupt};
use crate::domain::UserId;
use crate::domain::lease::UserLeases;
use crate::ports::{Cause, LeaseStore, StoreError};

/// The key of a user's lease item in the connections table.
pub fn lease_key(user_id: &UserId) -> String {
    format!("lease#{user_id}")
}

#[async_trait]
impl LeaseStore for DynamoDbStore {
    async fn leases(&self, user_id: &UserId) -> Result<Option<(UserLeases, u64)>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.tables.connections)
            .key("connectionId", AttributeValue::S(lease_key(user_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| store_error("GetItem", error))?;
        let Some(mut item) = output.item else { return Ok(None) };
        let version = take_version(&mut item, "leases item")?;
        item.remove("connectionId");
        let leases: LeasesItem =
            serde_dynamo::from_item(item).map_err(|error| corrupt(format!("leases item: {error}")))?;
        Ok(Some((UserLeases::try_from(leases)?, version)))
    }

    async fn put_leases(&self, leases: &UserLeases, expected_version: Option<u64>) -> Result<u64, StoreError> {
        let version = expected_version.map_or(1, |version| version + 1);
        let mut item: Item = serde_dynamo::to_item(LeasesItem::from(leases))
            .map_err(|error| StoreError::Other(Cause::caused_by("encoding a leases item", error)))?;
        item.insert("connectionId".into(), AttributeValue::S(lease_key(&leases.user_id)));
        item.insert("version".into(), AttributeValue::N(version.to_string()));
        let request = self.client.put_item().table_name(&self.tables.connections).set_item(Some(item));
        put_if_version(request, expected_version).send().await.map_err(|error| store_error("PutItem", error))?;
        Ok(version)
    }
}
