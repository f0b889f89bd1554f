//! The DynamoDB adapter: the event store and view store on two tables, and the
//! migrations that create them. Only this module knows item attribute names and
//! index names of DynamoDB.

mod error;
mod event_store;
mod items;
mod lease_store;
pub mod migrate;
mod outbox_store;
mod presence_store;
mod request_counter;
pub mod stream;
mod view_fold;
mod view_store;

pub use items::{LIVE_SHARDS, TIME_BUCKET_SHARDS};

use crate::adapters::aws::AwsPolicy;
pub use request_counter::RequestCounter;

/// The events table's index for one user's history (`userId` + `eventId`).
pub const USER_INDEX: &str = "userId-eventId-index";
/// The events table's index for time windows (`timeBucket` + `eventId`).
pub const TIME_INDEX: &str = "timeBucket-eventId-index";
/// The connections table's index of a user's connections (`userId` + `createdAt`).
pub const USER_CONNECTIONS_INDEX: &str = "userId-createdAt-index";
/// The connections table's sparse index of live connections (`liveShard` + `liveUntil`).
pub const LIVE_INDEX: &str = "liveShard-liveUntil-index";

/// The names of the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub events: String,
    pub connections: String,
    /// Reconnect recovery's outbox (`OUTBOX_TABLE_NAME`).
    pub outbox: String,
}

impl TableNames {
    pub const DEFAULT_EVENTS: &'static str = "wsledger-events";
    pub const DEFAULT_CONNECTIONS: &'static str = "wsledger-connections";
    pub const DEFAULT_OUTBOX: &'static str = "wsledger-outbox";

    /// From `EVENTS_TABLE_NAME`, `CONNECTIONS_TABLE_NAME` and `OUTBOX_TABLE_NAME` as `lookup` finds them,
    /// with the defaults (`settings::table_names` reads them from the process).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let read = |name: &str, default: &str| {
            lookup(name).filter(|value| !value.is_empty()).unwrap_or_else(|| default.to_owned())
        };
        Self {
            events: read("EVENTS_TABLE_NAME", Self::DEFAULT_EVENTS),
            connections: read("CONNECTIONS_TABLE_NAME", Self::DEFAULT_CONNECTIONS),
            outbox: read("OUTBOX_TABLE_NAME", Self::DEFAULT_OUTBOX),
        }
    }
}

/// Builds a DynamoDB client from the standard AWS configuration (environment,
/// profile, instance role) and the one timeout and retry policy
/// ([`crate::adapters::aws`]). With `endpoint_url` (for example a DynamoDB Local),
/// the region defaults to `us-east-1` when none is configured.
pub async fn client(endpoint_url: Option<&str>, policy: AwsPolicy) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&crate::adapters::aws::sdk_config(endpoint_url, policy).await)
}

/// A DynamoDB Streams client configured like [`client`] (DynamoDB Local serves
/// streams on the same endpoint: pass it, since to the SDK Streams is another service).
pub async fn streams_client(endpoint_url: Option<&str>, policy: AwsPolicy) -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::new(&crate::adapters::aws::sdk_config(endpoint_url, policy).await)
}

/// Both stores on one client: [`crate::ports::EventStore`] on the events table and
/// [`crate::ports::ViewStore`] on the connections table.
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: aws_sdk_dynamodb::Client,
    tables: TableNames,
}

impl DynamoDbStore {
    pub fn new(client: aws_sdk_dynamodb::Client, tables: TableNames) -> Self {
        Self { client, tables }
    }

    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }
}
