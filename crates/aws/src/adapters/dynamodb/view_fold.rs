//! The usage walk of a view (`usageFold`, `domain::usage::UsageFold`) in an item of
//! its own in the connections table, keyed `usage#<connectionId>`, so that no index
//! holds a copy of it: inside the view it took every view over 1 KB, and the table
//! and both indexes (which project ALL) each paid 2 WCU per write instead of 1.
//!
//! The walk item carries the `viewVersion` it was written with; a reader uses it
//! only with the view of that version (a write of the view that lost its walk's
//! write, or a walk written late over a newer view, is a walk not found, and the
//! projection then walks the history once). The item has none of the indexes' key
//! attributes (`userId`, `liveShard`), as the lease and presence items have none.
//! A view written before the walk moved out keeps its `usageFold` inline until it
//! is written again.

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

use super::DynamoDbStore;
use super::error::store_error;
use super::items::Item;
use crate::domain::ConnectionId;
use crate::ports::{Cause, StoreError};

/// The attribute the walk is stored under, in the view as in its own item.
pub(super) const FOLD_ATTRIBUTE: &str = "usageFold";

/// How many times keys DynamoDB left unprocessed are asked for again.
const MAX_UNPROCESSED_ROUNDS: u32 = 8;

fn fold_key(connection_id: &ConnectionId) -> String {
    format!("usage#{connection_id}")
}

fn number(item: &Item, name: &str) -> Option<u64> {
    item.get(name).and_then(|value| value.as_n().ok()).and_then(|number| number.parse().ok())
}

impl DynamoDbStore {
    /// The view item of `connection_id` with its walk put back in when the walk
    /// item belongs to this version of the view: one consistent BatchGetItem.
    pub(super) async fn view_item_with_fold(&self, connection_id: &ConnectionId) -> Result<Option<Item>, StoreError> {
        let table = &self.tables.connections;
        let key = |id: String| Item::from([("connectionId".to_owned(), AttributeValue::S(id))]);
        let mut keys = Some(
            KeysAndAttributes::builder()
                .keys(key(connection_id.to_string()))
                .keys(key(fold_key(connection_id)))
                .consistent_read(true)
                .build()
                .map_err(|error| StoreError::Other(Cause::caused_by("building a BatchGetItem", error)))?,
        );
        let (mut view, mut fold) = (None, None);
        for round in 0..MAX_UNPROCESSED_ROUNDS {
            let Some(asked) = keys.take() else { break };
            if round > 0 {
                crate::backoff::pause(round).await;
            }
            let output = self
                .client
                .batch_get_item()
                .request_items(table, asked)
                .send()
                .await
                .map_err(|error| store_error("BatchGetItem", error))?;
            for item in output.responses.and_then(|mut tables| tables.remove(table)).unwrap_or_default() {
                match item.get("connectionId").and_then(|id| id.as_s().ok()) {
                    Some(id) if *id == connection_id.as_str() => view = Some(item),
                    _ => fold = Some(item),
                }
            }
            keys = output.unprocessed_keys.and_then(|mut tables| tables.remove(table));
        }
        if keys.is_some() {
            return Err(StoreError::Throttled(Cause::new("BatchGetItem: keys left unprocessed")));
        }
        let Some(mut view) = view else { return Ok(None) };
        if let Some(mut fold) = fold {
            let same_version =
                number(&fold, "viewVersion").is_some_and(|version| Some(version) == number(&view, "version"));
            if same_version
                && !view.contains_key(FOLD_ATTRIBUTE)
                && let Some(walk) = fold.remove(FOLD_ATTRIBUTE)
            {
                view.insert(FOLD_ATTRIBUTE.into(), walk);
            }
        }
        Ok(Some(view))
    }

    /// Writes `walk` as the walk of version `version` of the view, unless a walk of
    /// a later version is there already. A walk not written costs the next
    /// projection one history read, nothing else: the view is written already, so
    /// a failure is logged, not returned.
    pub(super) async fn put_fold(&self, connection_id: &ConnectionId, version: u64, walk: AttributeValue) {
        let item = Item::from([
            ("connectionId".to_owned(), AttributeValue::S(fold_key(connection_id))),
            ("viewVersion".to_owned(), AttributeValue::N(version.to_string())),
            (FOLD_ATTRIBUTE.to_owned(), walk),
        ]);
        let written = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(connectionId) OR viewVersion < :version")
            .expression_attribute_values(":version", AttributeValue::N(version.to_string()))
            .send()
            .await
            .map_err(|error| store_error("PutItem", error));
        match written {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(error) => {
                tracing::warn!(%connection_id, error = %crate::error_chain::chain(&error), "the usage walk was not written; the next projection reads the history");
            }
        }
    }
}
