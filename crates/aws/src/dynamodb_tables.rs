//! The table definitions in `migrations/` and the plan that brings a store to them.
//!
//! Pure: parsing the embedded definitions and deciding what to change. Applying the
//! plan is the adapter's job (`adapters::dynamodb::migrate`).

use std::fmt;

use serde::Deserialize;

const EVENTS_JSON: &str = include_str!("../../../migrations/dynamodb/events.json");
const CONNECTIONS_JSON: &str = include_str!("../../../migrations/dynamodb/connections.json");
const OUTBOX_JSON: &str = include_str!("../../../migrations/dynamodb/outbox.json");

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDefinition {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyElement {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Projection {
    pub projection_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDefinition {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    pub projection: Projection,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSpecification {
    pub stream_enabled: bool,
    pub stream_view_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TimeToLiveSpecification {
    pub attribute_name: String,
    pub enabled: bool,
}

/// One table as `migrations/dynamodb/*.json` defines it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDefinition {
    pub table_name: String,
    pub billing_mode: String,
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeyElement>,
    #[serde(default)]
    pub global_secondary_indexes: Vec<IndexDefinition>,
    #[serde(default)]
    pub stream_specification: Option<StreamSpecification>,
    #[serde(default)]
    pub time_to_live_specification: Option<TimeToLiveSpecification>,
}

impl TableDefinition {
    fn parse(json: &str, table_name: &str) -> Self {
        let mut definition: TableDefinition =
            serde_json::from_str(json).expect("the embedded migrations are valid (checked by a unit test)");
        definition.table_name = table_name.to_owned();
        definition
    }

    /// The events table, named `table_name`.
    pub fn events(table_name: &str) -> Self {
        Self::parse(EVENTS_JSON, table_name)
    }

    /// The connections (view) table, named `table_name`.
    pub fn connections(table_name: &str) -> Self {
        Self::parse(CONNECTIONS_JSON, table_name)
    }

    /// The outbox of reconnect recovery (per user: the head at `seq` 0 and the
    /// messages kept for the window, removed by TTL), named `table_name`.
    pub fn outbox(table_name: &str) -> Self {
        Self::parse(OUTBOX_JSON, table_name)
    }

    pub fn stream_view_type(&self) -> Option<&str> {
        self.stream_specification
            .as_ref()
            .filter(|stream| stream.stream_enabled)
            .map(|stream| stream.stream_view_type.as_str())
    }

    pub fn ttl_attribute(&self) -> Option<&str> {
        self.time_to_live_specification.as_ref().filter(|ttl| ttl.enabled).map(|ttl| ttl.attribute_name.as_str())
    }
}

/// What a table looks like now, as far as migrations care.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableState {
    pub key_schema: Vec<KeyElement>,
    pub indexes: Vec<(String, Vec<KeyElement>)>,
    pub stream_view_type: Option<String>,
    pub ttl_attribute: Option<String>,
}

/// One step of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableChange {
    CreateTable,
    AddIndex(String),
    EnableStream(String),
    EnableTtl(String),
}

impl fmt::Display for TableChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableChange::CreateTable => write!(f, "create the table"),
            TableChange::AddIndex(index) => write!(f, "add index {index}"),
            TableChange::EnableStream(view_type) => write!(f, "enable the stream ({view_type})"),
            TableChange::EnableTtl(attribute) => write!(f, "enable TTL on {attribute}"),
        }
    }
}

/// A difference that migrations refuse to paper over: changing it would need the
/// table (or index, or stream) to be dropped, which loses data or stream records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error("table {table} has key schema {found}, expected {expected}; migrate will not change a table's keys")]
    KeySchema { table: String, expected: String, found: String },
    #[error("index {index} of table {table} has key schema {found}, expected {expected}")]
    IndexKeySchema { table: String, index: String, expected: String, found: String },
    #[error("table {table} streams {found}, expected {expected}")]
    StreamViewType { table: String, expected: String, found: String },
    #[error("table {table} has TTL on {found}, expected {expected}")]
    TtlAttribute { table: String, expected: String, found: String },
}

fn describe_keys(keys: &[KeyElement]) -> String {
    let parts: Vec<String> = keys.iter().map(|key| format!("{} {}", key.attribute_name, key.key_type)).collect();
    format!("({})", parts.join(", "))
}

/// What to do to bring the table in `state` (`None`: it does not exist) to `definition`.
pub fn plan(definition: &TableDefinition, state: Option<&TableState>) -> Result<Vec<TableChange>, MigrationError> {
    let table = &definition.table_name;
    let Some(state) = state else {
        let mut changes = vec![TableChange::CreateTable];
        changes.extend(definition.ttl_attribute().map(|attribute| TableChange::EnableTtl(attribute.to_owned())));
        return Ok(changes);
    };
    if state.key_schema != definition.key_schema {
        return Err(MigrationError::KeySchema {
            table: table.clone(),
            expected: describe_keys(&definition.key_schema),
            found: describe_keys(&state.key_schema),
        });
    }
    let mut changes = Vec::new();
    for index in &definition.global_secondary_indexes {
        match state.indexes.iter().find(|(name, _)| *name == index.index_name) {
            None => changes.push(TableChange::AddIndex(index.index_name.clone())),
            Some((_, keys)) if *keys != index.key_schema => {
                return Err(MigrationError::IndexKeySchema {
                    table: table.clone(),
                    index: index.index_name.clone(),
                    expected: describe_keys(&index.key_schema),
                    found: describe_keys(keys),
                });
            }
            Some(_) => {}
        }
    }
    match (definition.stream_view_type(), state.stream_view_type.as_deref()) {
        (Some(expected), None) => changes.push(TableChange::EnableStream(expected.to_owned())),
        (Some(expected), Some(found)) if expected != found => {
            return Err(MigrationError::StreamViewType {
                table: table.clone(),
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
        _ => {}
    }
    match (definition.ttl_attribute(), state.ttl_attribute.as_deref()) {
        (Some(expected), None) => changes.push(TableChange::EnableTtl(expected.to_owned())),
        (Some(expected), Some(found)) if expected != found => {
            return Err(MigrationError::TtlAttribute {
                table: table.clone(),
                expected: expected.to_owned(),
                found: found.to_owned(),
            });
        }
        _ => {}
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(definition: &TableDefinition) -> TableState {
        TableState {
            key_schema: definition.key_schema.clone(),
            indexes: definition
                .global_secondary_indexes
                .iter()
                .map(|index| (index.index_name.clone(), index.key_schema.clone()))
                .collect(),
            stream_view_type: definition.stream_view_type().map(str::to_owned),
            ttl_attribute: definition.ttl_attribute().map(str::to_owned),
        }
    }

    #[test]
    fn embedded_definitions_parse_and_match_the_design() {
        let events = TableDefinition::events("e");
        assert_eq!(events.table_name, "e");
        assert_eq!(events.stream_view_type(), Some("NEW_IMAGE"));
        assert_eq!(events.ttl_attribute(), Some("expiresAt"));
        assert_eq!(describe_keys(&events.key_schema), "(connectionId HASH, eventId RANGE)");
        let connections = TableDefinition::connections("c");
        assert_eq!(describe_keys(&connections.key_schema), "(connectionId HASH)");
        for definition in [&events, &connections] {
            assert_eq!(definition.billing_mode, "PAY_PER_REQUEST");
            for index in &definition.global_secondary_indexes {
                for key in &index.key_schema {
                    assert!(
                        definition.attribute_definitions.iter().any(|a| a.attribute_name == key.attribute_name),
                        "{} is defined",
                        key.attribute_name
                    );
                }
            }
        }
    }

    #[test]
    fn a_missing_table_is_created_with_ttl() {
        let events = TableDefinition::events("e");
        assert_eq!(plan(&events, None), Ok(vec![TableChange::CreateTable, TableChange::EnableTtl("expiresAt".into())]));
    }

    #[test]
    fn a_matching_table_needs_nothing() {
        let events = TableDefinition::events("e");
        assert_eq!(plan(&events, Some(&state_of(&events))), Ok(vec![]));
    }

    #[test]
    fn missing_parts_are_added() {
        let events = TableDefinition::events("e");
        let mut state = state_of(&events);
        state.indexes.pop();
        state.stream_view_type = None;
        state.ttl_attribute = None;
        assert_eq!(
            plan(&events, Some(&state)),
            Ok(vec![
                TableChange::AddIndex("timeBucket-eventId-index".into()),
                TableChange::EnableStream("NEW_IMAGE".into()),
                TableChange::EnableTtl("expiresAt".into()),
            ])
        );
    }

    #[test]
    fn a_different_key_schema_is_an_error_naming_the_difference() {
        let events = TableDefinition::events("e");
        let mut state = state_of(&events);
        state.key_schema.pop();
        let error = plan(&events, Some(&state)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "table e has key schema (connectionId HASH), expected (connectionId HASH, eventId RANGE); \
             migrate will not change a table's keys"
        );
    }
}
