//! DynamoDB Streams: decoding stream records of the events table into
//! [`ChangeRecord`]s, and a local poller that reads a table's stream the way Lambda's
//! event source mapping does, for `serve --store dynamodb` and the tests.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_lambda_events::dynamodb::{EventRecord, StreamRecord, UserIdentity};
use aws_lambda_events::streams::DynamoDbEventResponse;
use aws_sdk_dynamodbstreams::types::ShardIteratorType;

use super::error::store_error;
use super::items::{Item, event_from_item};
use crate::ports::StoreError;
use crate::ports::{Change, ChangeRecord};

/// The principal of the REMOVE records DynamoDB writes when TTL deletes an item.
pub const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

/// Decodes one stream record of the events table. Never fails: a record that is not
/// a valid event is `Change::Poison`.
pub fn decode_record(record: &EventRecord) -> ChangeRecord {
    let change = match record.event_name.as_str() {
        "INSERT" => {
            let item: Item = record.change.new_image.clone().into();
            if item.is_empty() {
                Change::Poison("INSERT without a NewImage (is the stream NEW_IMAGE?)".into())
            } else {
                match event_from_item(item) {
                    Ok(event) => Change::Appended(event),
                    Err(error) => Change::Poison(error.to_string()),
                }
            }
        }
        "MODIFY" => Change::Ignored("modify: events are immutable"),
        "REMOVE" if record.user_identity.as_ref().is_some_and(|identity| identity.principal_id == TTL_PRINCIPAL) => {
            Change::Ignored("remove: TTL expiry")
        }
        "REMOVE" => Change::Ignored("remove"),
        other => Change::Poison(format!("unknown eventName {other:?}")),
    };
    ChangeRecord { record_id: record.event_id.clone(), sequence_number: record.change.sequence_number.clone(), change }
}

/// Turns a record of `aws-sdk-dynamodbstreams` into the record Lambda would deliver.
pub fn lambda_record(record: &aws_sdk_dynamodbstreams::types::Record, table_arn: &str) -> EventRecord {
    let mut change = StreamRecord::default();
    if let Some(stream_record) = record.dynamodb() {
        if let Some(keys) = stream_record.keys() {
            change.keys = keys.clone().into();
        }
        if let Some(new_image) = stream_record.new_image() {
            change.new_image = new_image.clone().into();
        }
        if let Some(old_image) = stream_record.old_image() {
            change.old_image = old_image.clone().into();
        }
        change.sequence_number = stream_record.sequence_number().map(str::to_owned);
        change.size_bytes = stream_record.size_bytes().unwrap_or_default();
        if let Some(at) = stream_record.approximate_creation_date_time().and_then(|at| at.to_millis().ok()) {
            change.approximate_creation_date_time = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
        }
    }
    let mut event_record = EventRecord::default();
    event_record.event_id = record.event_id().unwrap_or_default().to_owned();
    event_record.event_name = record.event_name().map(|name| name.as_str().to_owned()).unwrap_or_default();
    event_record.event_source = Some("aws:dynamodb".into());
    event_record.event_version = record.event_version().map(str::to_owned);
    event_record.aws_region = record.aws_region().unwrap_or_default().to_owned();
    event_record.event_source_arn = Some(table_arn.to_owned());
    event_record.user_identity = record.user_identity().map(|identity| {
        let mut user_identity = UserIdentity::default();
        user_identity.type_ = identity.r#type().unwrap_or_default().to_owned();
        user_identity.principal_id = identity.principal_id().unwrap_or_default().to_owned();
        user_identity
    });
    event_record.change = change;
    event_record
}

/// Where a shard is read next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum Position {
    TrimHorizon,
    At(String),
    After(String),
    Iterator(String),
    Closed,
}

/// Reads the stream of a table shard by shard, parents before children, handing
/// each batch to a handler and checkpointing as Lambda does: after a batch, from the
/// reported failure (`AT_SEQUENCE_NUMBER`) or after its last record.
pub struct StreamPoller {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    table_name: String,
    batch_size: i32,
    positions: HashMap<String, Position>,
    parents: HashMap<String, Option<String>>,
    stream: Option<(String, String)>,
    /// Consecutive rounds that failed or had a batch to retry (the backoff's attempt).
    failing_rounds: u32,
    /// Where the positions are kept between runs (see [`StreamPoller::with_checkpoint`]).
    checkpoint: Option<std::path::PathBuf>,
    /// The last position of each shard that survives a restart (not an iterator).
    durable: HashMap<String, Position>,
}

/// The checkpoint file: the stream it belongs to, and where each shard was.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Checkpoint {
    stream_arn: String,
    shards: HashMap<String, Position>,
}

impl StreamPoller {
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table_name: impl Into<String>,
    ) -> Self {
        Self {
            dynamodb,
            streams,
            table_name: table_name.into(),
            batch_size: 100,
            failing_rounds: 0,
            checkpoint: None,
            durable: HashMap::new(),
            positions: HashMap::new(),
            parents: HashMap::new(),
            stream: None,
        }
    }

    /// At most `records` records per batch (GetRecords' `Limit`; Lambda's
    /// `BatchSize`), 1 to 1,000.
    pub fn with_batch_size(mut self, records: usize) -> Self {
        self.batch_size = records.clamp(1, 1_000) as i32;
        self
    }

    /// Keeps the shards' positions in `path` between runs, so a restart goes on where
    /// the last run stopped instead of reading every shard from `TRIM_HORIZON` again
    /// (a checkpoint of another stream, as after the table was recreated, is ignored).
    pub fn with_checkpoint(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }

    fn load_checkpoint(&mut self, stream_arn: &str) {
        let Some(path) = &self.checkpoint else { return };
        let Ok(text) = std::fs::read_to_string(path) else { return };
        match serde_json::from_str::<Checkpoint>(&text) {
            Ok(checkpoint) if checkpoint.stream_arn == stream_arn => {
                self.positions.extend(checkpoint.shards.clone());
                self.durable = checkpoint.shards;
            }
            Ok(_) => {
                tracing::info!(path = %path.display(), "the stream checkpoint is of another stream; starting over")
            }
            Err(error) => tracing::warn!(path = %path.display(), %error, "ignoring an unreadable stream checkpoint"),
        }
    }

    fn save_checkpoint(&self, stream_arn: &str) {
        let Some(path) = &self.checkpoint else { return };
        let checkpoint = Checkpoint { stream_arn: stream_arn.to_owned(), shards: self.durable.clone() };
        let written = serde_json::to_vec(&checkpoint)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::private_files::replace(path, &bytes));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "saving the stream checkpoint failed");
        }
    }

    /// Sets a shard's next position, remembering the ones that survive a restart.
    fn set_position(&mut self, shard_id: String, position: Position) {
        if matches!(position, Position::At(_) | Position::After(_) | Position::Closed) {
            self.durable.insert(shard_id.clone(), position.clone());
        }
        self.positions.insert(shard_id, position);
    }

    /// The stream's ARN and the table's ARN.
    async fn stream(&mut self) -> Result<(String, String), StoreError> {
        if let Some(stream) = &self.stream {
            return Ok(stream.clone());
        }
        let table = self
            .dynamodb
            .describe_table()
            .table_name(&self.table_name)
            .send()
            .await
            .map_err(|error| store_error("DescribeTable", error))?
            .table
            .ok_or_else(|| StoreError::NotFound(format!("table {}", self.table_name).into()))?;
        let stream_arn = table
            .latest_stream_arn
            .ok_or_else(|| StoreError::NotFound(format!("table {} has no stream", self.table_name).into()))?;
        let stream = (stream_arn, table.table_arn.unwrap_or_default());
        self.stream = Some(stream.clone());
        self.load_checkpoint(&stream.0);
        Ok(stream)
    }

    async fn refresh_shards(&mut self, stream_arn: &str) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let output = self
                .streams
                .describe_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|error| store_error("DescribeStream", error))?;
            let Some(description) = output.stream_description else { return Ok(()) };
            for shard in description.shards() {
                let Some(shard_id) = shard.shard_id() else { continue };
                self.parents.entry(shard_id.to_owned()).or_insert_with(|| shard.parent_shard_id().map(str::to_owned));
                self.positions.entry(shard_id.to_owned()).or_insert(Position::TrimHorizon);
            }
            match description.last_evaluated_shard_id {
                Some(last) => start = Some(last),
                None => return Ok(()),
            }
        }
    }

    async fn iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &Position,
    ) -> Result<Option<String>, StoreError> {
        let request = self.streams.get_shard_iterator().stream_arn(stream_arn).shard_id(shard_id);
        let request = match position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::At(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AtSequenceNumber).sequence_number(sequence)
            }
            Position::After(sequence) => {
                request.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(sequence)
            }
            Position::Iterator(iterator) => return Ok(Some(iterator.clone())),
            Position::Closed => return Ok(None),
        };
        let output = request.send().await.map_err(|error| store_error("GetShardIterator", error))?;
        Ok(output.shard_iterator)
    }

    /// Reads every shard once (one GetRecords each) and hands non-empty batches to
    /// `handle`. Returns how many records were handed over.
    pub async fn poll_once<F, Fut>(&mut self, mut handle: F) -> Result<usize, StoreError>
    where
        F: FnMut(Vec<EventRecord>) -> Fut,
        Fut: std::future::Future<Output = DynamoDbEventResponse>,
    {
        let (stream_arn, table_arn) = self.stream().await?;
        self.refresh_shards(&stream_arn).await?;
        let closed: HashSet<String> = self
            .positions
            .iter()
            .filter(|(_, position)| **position == Position::Closed)
            .map(|(shard, _)| shard.clone())
            .collect();
        let mut shards: Vec<String> = self
            .positions
            .keys()
            .filter(|shard| !closed.contains(*shard))
            // A child waits until its parent (if this stream still lists it) is done.
            .filter(|shard| {
                self.parents
                    .get(*shard)
                    .cloned()
                    .flatten()
                    .is_none_or(|parent| closed.contains(&parent) || !self.positions.contains_key(&parent))
            })
            .cloned()
            .collect();
        shards.sort();
        let mut delivered = 0;
        let mut retrying = false;
        let durable_before = self.durable.clone();
        for shard_id in shards {
            let position = self.positions[&shard_id].clone();
            let Some(iterator) = self.iterator(&stream_arn, &shard_id, &position).await? else {
                self.set_position(shard_id, Position::Closed);
                continue;
            };
            let output = match self.streams.get_records().shard_iterator(iterator).limit(self.batch_size).send().await {
                Ok(output) => output,
                Err(error) => {
                    // An expired iterator is re-read from the last checkpoint next time.
                    let error = store_error("GetRecords", error);
                    if let Position::Iterator(_) = position {
                        let restart = self.durable.get(&shard_id).cloned().unwrap_or(Position::TrimHorizon);
                        self.positions.insert(shard_id, restart);
                    }
                    return Err(error);
                }
            };
            let records: Vec<EventRecord> =
                output.records().iter().map(|record| lambda_record(record, &table_arn)).collect();
            let next = output.next_shard_iterator.map_or(Position::Closed, Position::Iterator);
            if records.is_empty() {
                self.positions.insert(shard_id, next);
                continue;
            }
            let last_sequence = records.last().and_then(|record| record.change.sequence_number.clone());
            delivered += records.len();
            let response = handle(records).await;
            let retry_from = response
                .batch_item_failures
                .iter()
                .filter_map(|failure| failure.item_identifier.clone())
                .min_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
            retrying |= !response.batch_item_failures.is_empty();
            let position = match (retry_from, last_sequence) {
                (Some(sequence), _) => Position::At(sequence),
                (None, _) if next == Position::Closed => Position::Closed,
                (None, Some(sequence)) => Position::After(sequence),
                (None, None) => next,
            };
            self.set_position(shard_id, position);
        }
        if durable_before != self.durable {
            self.save_checkpoint(&stream_arn);
        }
        self.failing_rounds = if retrying { self.failing_rounds + 1 } else { 0 };
        Ok(delivered)
    }

    /// Polls until `stop` resolves, pausing `idle` after a round that found nothing,
    /// and backing off (exponentially, with jitter) while rounds fail or leave a
    /// batch to retry.
    pub async fn run<F, Fut>(mut self, mut handle: F, idle: Duration, stop: impl std::future::Future<Output = ()>)
    where
        F: FnMut(Vec<EventRecord>) -> Fut,
        Fut: std::future::Future<Output = DynamoDbEventResponse>,
    {
        tokio::pin!(stop);
        loop {
            let pause = match self.poll_once(&mut handle).await {
                Ok(_) if self.failing_rounds > 0 => crate::backoff::backoff(self.failing_rounds),
                Ok(0) => idle,
                Ok(_) => Duration::ZERO,
                Err(error) => {
                    self.failing_rounds += 1;
                    tracing::warn!(error = %crate::error_chain::chain(&error), "reading the stream failed; retrying");
                    idle.max(crate::backoff::backoff(self.failing_rounds))
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn record(event_name: &str, new_image: serde_json::Value) -> EventRecord {
        let mut record = EventRecord::default();
        record.event_id = "record".into();
        record.event_name = event_name.into();
        record.change.new_image = serde_json::from_value(new_image).unwrap_or_default();
        record.change.sequence_number = Some("100".into());
        record
    }

    #[test]
    fn inserts_decode_and_everything_else_is_ignored_or_poison() {
        let image = json!({
            "connectionId": { "S": "c" }, "eventId": { "S": "01KAV9FT3VMY579VHBT3XJN3MQ" }, "type": { "S": "Connected" },
            "userId": { "S": "u" }, "at": { "S": "2025-11-24T16:00:00.123Z" },
            "connectedAt": { "S": "2025-11-24T16:00:00.000Z" }, "requestId": { "S": "r" }, "timeBucket": { "S": "x#1" }
        });
        assert!(matches!(decode_record(&record("INSERT", image.clone())).change, Change::Appended(_)));
        assert!(matches!(decode_record(&record("MODIFY", image.clone())).change, Change::Ignored(_)));
        assert!(matches!(decode_record(&record("REMOVE", json!({}))).change, Change::Ignored(_)));
        assert!(matches!(decode_record(&record("INSERT", json!({}))).change, Change::Poison(_)));
        assert!(matches!(decode_record(&record("UPSERT", image)).change, Change::Poison(_)));
    }

    fn attribute() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            any::<String>().prop_map(|text| json!({ "S": text })),
            any::<i64>().prop_map(|number| json!({ "N": number.to_string() })),
            any::<bool>().prop_map(|flag| json!({ "BOOL": flag })),
            Just(json!({ "NULL": true })),
            prop::collection::vec(any::<String>(), 0..3).prop_map(|list| json!({ "SS": list })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        /// Random images (real attribute names with random values, and random names)
        /// never panic the decoder: each is an event, ignored, or poison.
        #[test]
        fn random_stream_records_never_panic(
            name in prop::sample::select(vec!["INSERT", "MODIFY", "REMOVE", "x"]),
            known in prop::collection::vec((prop::sample::select(vec![
                "connectionId", "eventId", "type", "userId", "at", "connectedAt", "requestId",
                "ipAddress", "sessionId", "messageCount", "reason", "statusCode", "expiresAt",
            ]), attribute()), 0..12),
            unknown in prop::collection::vec(("[a-z]{1,8}", attribute()), 0..3),
        ) {
            let mut image = serde_json::Map::new();
            for (key, value) in known {
                image.insert(key.to_owned(), value);
            }
            for (key, value) in unknown {
                image.insert(key, value);
            }
            let decoded = decode_record(&record(name, serde_json::Value::Object(image)));
            prop_assert_eq!(decoded.sequence_number.as_deref(), Some("100"));
        }
    }
}
