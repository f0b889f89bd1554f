//! Applies the table definitions of `migrations/` to DynamoDB, idempotently.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::TableNames;
use super::error::store_error;
use crate::dynamodb_tables::{self, KeyElement, MigrationError, TableChange, TableDefinition, TableState};
use crate::ports::{Cause, StoreError};

/// How long to wait for a table or index to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error("table {0} did not become active within {1:?}")]
    NotActive(String, Duration),
}

/// What migrating one table did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    pub changes: Vec<TableChange>,
}

/// The definitions of the tables under their configured names.
pub fn definitions(tables: &TableNames) -> [TableDefinition; 3] {
    [
        TableDefinition::events(&tables.events),
        TableDefinition::connections(&tables.connections),
        TableDefinition::outbox(&tables.outbox),
    ]
}

/// Brings both tables to their definitions. Checks everything before changing
/// anything, so a refused table leaves the other untouched too.
pub async fn migrate(client: &Client, tables: &TableNames) -> Result<Vec<TableReport>, MigrateError> {
    let mut planned = Vec::new();
    for definition in definitions(tables) {
        let state = describe(client, &definition.table_name).await?;
        let changes = dynamodb_tables::plan(&definition, state.as_ref())?;
        planned.push((definition, changes));
    }
    let mut reports = Vec::new();
    for (definition, changes) in planned {
        for change in &changes {
            apply(client, &definition, change).await?;
        }
        reports.push(TableReport { table: definition.table_name.clone(), changes });
    }
    Ok(reports)
}

fn build_error(error: BuildError) -> StoreError {
    StoreError::Other(Cause::caused_by("building a request", error))
}

fn keys(keys: &[KeyElement]) -> Result<Vec<KeySchemaElement>, StoreError> {
    keys.iter()
        .map(|key| {
            KeySchemaElement::builder()
                .attribute_name(&key.attribute_name)
                .key_type(KeyType::from(key.key_type.as_str()))
                .build()
                .map_err(build_error)
        })
        .collect()
}

fn attribute_definitions(definition: &TableDefinition) -> Result<Vec<AttributeDefinition>, StoreError> {
    definition
        .attribute_definitions
        .iter()
        .map(|attribute| {
            AttributeDefinition::builder()
                .attribute_name(&attribute.attribute_name)
                .attribute_type(ScalarAttributeType::from(attribute.attribute_type.as_str()))
                .build()
                .map_err(build_error)
        })
        .collect()
}

fn projection(index: &dynamodb_tables::IndexDefinition) -> Projection {
    Projection::builder().projection_type(ProjectionType::from(index.projection.projection_type.as_str())).build()
}

fn stream(view_type: &str) -> Result<StreamSpecification, StoreError> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::from(view_type))
        .build()
        .map_err(build_error)
}

/// The table's current state, or `None` when it does not exist.
pub async fn describe(client: &Client, table_name: &str) -> Result<Option<TableState>, StoreError> {
    let output = match client.describe_table().table_name(table_name).send().await {
        Ok(output) => output,
        Err(error) => {
            return match store_error("DescribeTable", error) {
                StoreError::NotFound(_) => Ok(None),
                other => Err(other),
            };
        }
    };
    let Some(table) = output.table else { return Ok(None) };
    let key_elements = |elements: &[KeySchemaElement]| -> Vec<KeyElement> {
        elements
            .iter()
            .map(|element| KeyElement {
                attribute_name: element.attribute_name.clone(),
                key_type: element.key_type.as_str().to_owned(),
            })
            .collect()
    };
    let ttl = client
        .describe_time_to_live()
        .table_name(table_name)
        .send()
        .await
        .map_err(|error| store_error("DescribeTimeToLive", error))?;
    let ttl_attribute = ttl.time_to_live_description.and_then(|description| {
        matches!(description.time_to_live_status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            .then_some(description.attribute_name)
            .flatten()
    });
    Ok(Some(TableState {
        key_schema: key_elements(table.key_schema()),
        indexes: table
            .global_secondary_indexes()
            .iter()
            .map(|index| (index.index_name().unwrap_or_default().to_owned(), key_elements(index.key_schema())))
            .collect(),
        stream_view_type: table
            .stream_specification
            .filter(|stream| stream.stream_enabled)
            .and_then(|stream| stream.stream_view_type)
            .map(|view_type| view_type.as_str().to_owned()),
        ttl_attribute,
    }))
}

#[tracing::instrument(skip(client, definition), fields(table = %definition.table_name))]
async fn apply(client: &Client, definition: &TableDefinition, change: &TableChange) -> Result<(), MigrateError> {
    let table_name = &definition.table_name;
    match change {
        TableChange::CreateTable => {
            let mut indexes = Vec::new();
            for index in &definition.global_secondary_indexes {
                indexes.push(
                    GlobalSecondaryIndex::builder()
                        .index_name(&index.index_name)
                        .set_key_schema(Some(keys(&index.key_schema)?))
                        .projection(projection(index))
                        .build()
                        .map_err(build_error)?,
                );
            }
            let stream = definition.stream_view_type().map(stream).transpose()?;
            client
                .create_table()
                .table_name(table_name)
                .billing_mode(BillingMode::from(definition.billing_mode.as_str()))
                .set_attribute_definitions(Some(attribute_definitions(definition)?))
                .set_key_schema(Some(keys(&definition.key_schema)?))
                .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
                .set_stream_specification(stream)
                .send()
                .await
                .map_err(|error| store_error("CreateTable", error))?;
        }
        TableChange::AddIndex(index_name) => {
            let index = definition
                .global_secondary_indexes
                .iter()
                .find(|index| index.index_name == *index_name)
                .expect("planned indexes come from the definition");
            let action = CreateGlobalSecondaryIndexAction::builder()
                .index_name(index_name)
                .set_key_schema(Some(keys(&index.key_schema)?))
                .projection(projection(index))
                .build()
                .map_err(build_error)?;
            client
                .update_table()
                .table_name(table_name)
                .set_attribute_definitions(Some(attribute_definitions(definition)?))
                .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(action).build())
                .send()
                .await
                .map_err(|error| store_error("UpdateTable", error))?;
        }
        TableChange::EnableStream(view_type) => {
            client
                .update_table()
                .table_name(table_name)
                .stream_specification(stream(view_type)?)
                .send()
                .await
                .map_err(|error| store_error("UpdateTable", error))?;
        }
        TableChange::EnableTtl(attribute) => {
            wait_until_active(client, table_name).await?;
            client
                .update_time_to_live()
                .table_name(table_name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .map_err(build_error)?,
                )
                .send()
                .await
                .map_err(|error| store_error("UpdateTimeToLive", error))?;
        }
    }
    wait_until_active(client, table_name).await
}

async fn wait_until_active(client: &Client, table_name: &str) -> Result<(), MigrateError> {
    let started = tokio::time::Instant::now();
    loop {
        let output = client
            .describe_table()
            .table_name(table_name)
            .send()
            .await
            .map_err(|error| store_error("DescribeTable", error))?;
        let active = output.table.is_some_and(|table| {
            table.table_status == Some(TableStatus::Active)
                && table.global_secondary_indexes().iter().all(|index| index.index_status == Some(IndexStatus::Active))
        });
        if active {
            return Ok(());
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(MigrateError::NotActive(table_name.to_owned(), ACTIVE_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
