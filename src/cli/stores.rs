//! What several commands share: which store to open, and times as users write them.

use std::str::FromStr;

use anyhow::Context;
use chrono::TimeDelta;
use clap::Args;

use crate::adapters::apigw::ManagementApiGateway;
use crate::adapters::dynamodb::{self, DynamoDbStore};
use crate::adapters::sqlite::SqliteStore;
use crate::domain::Timestamp;
use crate::ports::{EventStore, ViewStore};
use crate::settings;

/// `--store`: `sqlite:PATH` (the embedded store) or `dynamodb` (tables named by
/// EVENTS_TABLE_NAME and CONNECTIONS_TABLE_NAME).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreArg {
    DynamoDb,
    Sqlite(String),
}

impl FromStr for StoreArg {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "dynamodb" => Ok(StoreArg::DynamoDb),
            other => match other.strip_prefix("sqlite:") {
                Some(path) if !path.is_empty() => Ok(StoreArg::Sqlite(path.to_owned())),
                _ => Err(format!("{other:?} is not a store: use dynamodb or sqlite:PATH")),
            },
        }
    }
}

impl std::fmt::Display for StoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreArg::DynamoDb => f.write_str("dynamodb"),
            StoreArg::Sqlite(path) => write!(f, "sqlite:{path}"),
        }
    }
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where the ledger is: `sqlite:PATH` (the embedded store) or `dynamodb` (tables
    /// from EVENTS_TABLE_NAME and CONNECTIONS_TABLE_NAME).
    #[arg(long, default_value = "sqlite:./wsledger.db", value_name = "STORE")]
    pub store: StoreArg,
    /// The DynamoDB endpoint (default: AWS_ENDPOINT_URL_DYNAMODB, else AWS_ENDPOINT_URL, else AWS).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// An opened store: both ports on one backend.
#[derive(Debug, Clone)]
pub enum OpenStore {
    Sqlite(SqliteStore),
    DynamoDb(DynamoDbStore),
}

impl OpenStore {
    pub fn events(&self) -> &dyn EventStore {
        match self {
            OpenStore::Sqlite(store) => store,
            OpenStore::DynamoDb(store) => store,
        }
    }

    pub fn views(&self) -> &dyn ViewStore {
        match self {
            OpenStore::Sqlite(store) => store,
            OpenStore::DynamoDb(store) => store,
        }
    }

    pub fn outbox(&self) -> &dyn crate::ports::OutboxStore {
        match self {
            OpenStore::Sqlite(store) => store,
            OpenStore::DynamoDb(store) => store,
        }
    }

    pub fn presence(&self) -> &dyn crate::ports::PresenceStore {
        match self {
            OpenStore::Sqlite(store) => store,
            OpenStore::DynamoDb(store) => store,
        }
    }

    pub fn leases(&self) -> &dyn crate::ports::LeaseStore {
        match self {
            OpenStore::Sqlite(store) => store,
            OpenStore::DynamoDb(store) => store,
        }
    }
}

impl StoreArgs {
    /// Opens a store that must exist already: reading a path that holds no store is
    /// a mistake, not a reason to create an empty one.
    pub async fn open_existing(&self) -> anyhow::Result<OpenStore> {
        if let StoreArg::Sqlite(path) = &self.store
            && !std::path::Path::new(path).exists()
        {
            anyhow::bail!("no store at {path}: start `wsledger serve` there first, or pass --store")
        }
        self.open().await
    }

    /// Where DynamoDB is, in words, for error messages.
    pub fn dynamodb_endpoint(&self) -> String {
        settings::dynamodb_endpoint(self.endpoint_url.as_deref()).unwrap_or_else(|| "AWS".to_owned())
    }

    pub async fn open(&self) -> anyhow::Result<OpenStore> {
        match &self.store {
            StoreArg::DynamoDb => Ok(OpenStore::DynamoDb(DynamoDbStore::new(
                dynamodb::client(self.endpoint_url.as_deref(), settings::aws_policy()).await,
                settings::table_names(),
            ))),
            StoreArg::Sqlite(path) => {
                let store = SqliteStore::open(path).with_context(|| format!("opening the store sqlite:{path}"))?;
                Ok(OpenStore::Sqlite(store))
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// The Management API endpoint, `https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`
    /// (default: AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI, else WEBSOCKET_API_ENDPOINT).
    #[arg(long, value_name = "URL", env = "WEBSOCKET_API_ENDPOINT")]
    pub websocket_endpoint: Option<String>,
}

impl GatewayArgs {
    pub async fn open(&self) -> anyhow::Result<ManagementApiGateway> {
        let endpoint = settings::management_endpoint(self.websocket_endpoint.as_deref())
            .context("no Management API endpoint: pass --websocket-endpoint or set WEBSOCKET_API_ENDPOINT")?;
        Ok(ManagementApiGateway::new(&endpoint, settings::aws_policy()).await)
    }
}

/// The retention period in days, from RETENTION_DAYS (default 90).
pub fn retention_days() -> anyhow::Result<u32> {
    settings::handler_config().map(|config| config.retention_days).map_err(anyhow::Error::msg)
}

/// A time as users write it: RFC 3339 (`2025-11-24T16:00:00Z`) or a span before
/// now (`90s`, `15m`, `2h`, `7d`, `1w`).
pub fn parse_time(input: &str, now: Timestamp) -> Result<Timestamp, String> {
    let input = input.trim();
    if let Ok(time) = Timestamp::parse_rfc3339(input) {
        return Ok(time);
    }
    // A span before now, as humantime reads it: `15m`, `2h 30m`, `7days`.
    match humantime::parse_duration(input) {
        Ok(span) => {
            let too_far = || format!("{input:?} reaches too far back");
            let span = TimeDelta::from_std(span).map_err(|_| too_far())?;
            now.as_datetime().checked_sub_signed(span).ok_or_else(too_far)?;
            Ok(now.minus(span))
        }
        Err(error) => Err(format!(
            "{input:?} is not a time: use RFC 3339 (2025-11-24T16:00:00Z) or a span before now (15m, 2h, 7d): {error}"
        )),
    }
}

/// A store failure in words a user can act on.
pub fn explain(error: crate::ports::StoreError, store: &StoreArgs) -> anyhow::Error {
    use crate::ports::StoreError;
    match (&store.store, &error) {
        (StoreArg::DynamoDb, StoreError::NotFound(cause)) => {
            let tables = settings::table_names();
            let cause = cause.message();
            anyhow::anyhow!(
                "the DynamoDB tables {}, {} and {} do not all exist at {}: create them with `wsledger migrate` ({cause})",
                tables.events,
                tables.connections,
                tables.outbox,
                store.dynamodb_endpoint()
            )
        }
        (StoreArg::DynamoDb, StoreError::Unavailable(cause)) => {
            let cause = crate::error_chain::chain(cause);
            anyhow::anyhow!("DynamoDB at {} is unreachable: {cause}", store.dynamodb_endpoint())
        }
        _ => anyhow::Error::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_spans_before_now() {
        let now = Timestamp::parse_rfc3339("2025-11-24T16:00:00Z").unwrap();
        assert_eq!(parse_time("15m", now).unwrap().to_rfc3339(), "2025-11-24T15:45:00.000Z");
        assert_eq!(parse_time("7d", now).unwrap().to_rfc3339(), "2025-11-17T16:00:00.000Z");
        assert_eq!(parse_time("2025-01-02T03:04:05+01:00", now).unwrap().to_rfc3339(), "2025-01-02T02:04:05.000Z");
        assert!(parse_time("yesterday", now).unwrap_err().contains("RFC 3339"));
        assert_eq!(parse_time("2h 30m", now).unwrap().to_rfc3339(), "2025-11-24T13:30:00.000Z");
        assert!(parse_time("5 fortnights", now).unwrap_err().contains("unknown time unit"));
        assert!(parse_time("", now).is_err());
    }

    #[test]
    fn stores_are_dynamodb_or_sqlite_paths() {
        assert_eq!("dynamodb".parse::<StoreArg>(), Ok(StoreArg::DynamoDb));
        assert_eq!("sqlite:./x.db".parse::<StoreArg>(), Ok(StoreArg::Sqlite("./x.db".into())));
        assert!("postgres".parse::<StoreArg>().is_err());
        assert!("sqlite:".parse::<StoreArg>().is_err());
    }
}
