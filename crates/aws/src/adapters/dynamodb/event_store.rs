//! [`EventStore`] on the events table.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use tokio::task::JoinSet;

use super::error::store_error;
use super::items::{Item, TIME_BUCKET_SHARDS, event_from_item, event_to_item, time_bucket};
use super::{DynamoDbStore, TIME_INDEX, USER_INDEX};
use crate::domain::{ConnectionId, EventEnvelope, EventId, TimeRange, Timestamp, UserId};
use crate::ports::{AppendOutcome, Cause, EventStore, Page, PageRequest, StoreError, WindowCursor};

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// The events of one page of query results, leaving out those past their
/// retention that DynamoDB has not deleted yet (`now` in epoch seconds).
fn unexpired(items: Option<Vec<Item>>, now: i64) -> Result<impl Iterator<Item = EventEnvelope>, StoreError> {
    let events = items.unwrap_or_default().into_iter().map(event_from_item).collect::<Result<Vec<_>, _>>()?;
    Ok(events.into_iter().filter(move |event| event.expires_at.is_none_or(|expires_at| expires_at > now)))
}

/// The time-bucket days (`YYYY-MM-DD`) a range of event ids covers, in order.
fn days_between(lowest: EventId, highest: EventId) -> Vec<String> {
    let last_day = highest.timestamp().as_datetime().date_naive();
    let mut day = lowest.timestamp().as_datetime().date_naive();
    let mut days = Vec::new();
    while day <= last_day {
        days.push(day.format("%Y-%m-%d").to_string());
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    days
}

/// Reads a query to the end or to `limit + 1` events, whichever comes first, and
/// leaves out events past their retention that DynamoDB has not deleted yet.
/// Returns the events and whether more remain.
async fn collect(query: QueryFluentBuilder, limit: usize) -> Result<(Vec<EventEnvelope>, bool), StoreError> {
    let now = Timestamp::now().epoch_seconds();
    let mut events = Vec::new();
    let mut start_key = None;
    loop {
        // No extra request to learn whether more follow: DynamoDB's
        // LastEvaluatedKey says so (at worst the next page is empty).
        let wanted = (limit - events.len()).min(1_000) as i32;
        let output = query
            .clone()
            .set_exclusive_start_key(start_key.take())
            .limit(wanted)
            .send()
            .await
            .map_err(|error| store_error("Query", error))?;
        events.extend(unexpired(output.items, now)?);
        match output.last_evaluated_key {
            Some(key) if events.len() < limit => start_key = Some(key),
            Some(_) => return Ok((events, true)),
            None => return Ok((events, false)),
        }
    }
}

fn page(events: Vec<EventEnvelope>, more: bool) -> Page<EventEnvelope> {
    let next = if more { events.last().map(|event| event.event_id) } else { None };
    Page { items: events, next }
}

impl DynamoDbStore {
    /// Writes many events with BatchWriteItem, 25 at a time, unconditionally (a
    /// repeated event overwrites itself with the same item). For imports and
    /// benchmarks; the application appends through [`EventStore::append`].
    pub async fn bulk_load(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        /// Unprocessed items are sent again this often at most, with backoff.
        const MAX_UNPROCESSED_RETRIES: u32 = 10;
        for chunk in events.chunks(25) {
            let mut requests = Vec::with_capacity(chunk.len());
            for event in chunk {
                let put = PutRequest::builder()
                    .set_item(Some(event_to_item(event)?))
                    .build()
                    .map_err(|error| StoreError::Other(Cause::caused_by("building an event item", error)))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut attempt = 0u32;
            while !requests.is_empty() {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.tables.events, requests)
                    .send()
                    .await
                    .map_err(|error| store_error("BatchWriteItem", error))?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut unprocessed| unprocessed.remove(&self.tables.events))
                    .unwrap_or_default();
                if !requests.is_empty() {
                    attempt += 1;
                    if attempt >= MAX_UNPROCESSED_RETRIES {
                        return Err(StoreError::Throttled(
                            format!(
                                "BatchWriteItem: {} items still unprocessed after {attempt} attempts",
                                requests.len()
                            )
                            .into(),
                        ));
                    }
                    crate::backoff::pause(attempt).await;
                }
            }
        }
        Ok(())
    }

    fn query_id_range(
        &self,
        index: &str,
        key_name: &str,
        key: &str,
        lowest: EventId,
        highest: EventId,
    ) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.tables.events)
            .index_name(index)
            .key_condition_expression("#key = :key AND eventId BETWEEN :lowest AND :highest")
            .expression_attribute_names("#key", key_name)
            .expression_attribute_values(":key", string(key))
            .expression_attribute_values(":lowest", string(lowest.to_string()))
            .expression_attribute_values(":highest", string(highest.to_string()))
    }
}

/// One time-bucket shard of one day, read one DynamoDB result page (up to 1 MB)
/// at a time, and only when the events already read from it are used up.
struct ShardCursor {
    bucket: String,
    buffer: std::collections::VecDeque<EventEnvelope>,
    start_key: Option<Item>,
    exhausted: bool,
}

impl ShardCursor {
    fn needs_page(&self) -> bool {
        self.buffer.is_empty() && !self.exhausted
    }

    async fn fetch(&mut self, store: &DynamoDbStore, lowest: EventId, highest: EventId) -> Result<(), StoreError> {
        let now = Timestamp::now().epoch_seconds();
        let output = store
            .query_id_range(TIME_INDEX, "timeBucket", &self.bucket, lowest, highest)
            .set_exclusive_start_key(self.start_key.take())
            .send()
            .await
            .map_err(|error| store_error("Query", error))?;
        self.buffer.extend(unexpired(output.items, now)?);
        self.start_key = output.last_evaluated_key;
        self.exhausted = self.start_key.is_none();
        Ok(())
    }
}

/// A time window read with a cursor per shard: the shards of a day are merged by
/// event id, and a shard is asked for its next page only when its buffer runs dry.
/// A window costs one Query per shard per DynamoDB result page, whatever the page
/// size its reader asks for (the page-based `window` asks every shard again for
/// every page).
struct ShardedWindow<'a> {
    store: &'a DynamoDbStore,
    lowest: EventId,
    highest: EventId,
    /// The days still to read, in order.
    days: std::collections::VecDeque<String>,
    /// The current day's shards.
    shards: Vec<ShardCursor>,
}

#[async_trait]
impl WindowCursor for ShardedWindow<'_> {
    async fn next_page(&mut self, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut page = Vec::new();
        while page.len() < limit {
            if self.shards.is_empty() {
                let Some(day) = self.days.pop_front() else { break };
                self.shards = (0..TIME_BUCKET_SHARDS)
                    .map(|shard| ShardCursor {
                        bucket: time_bucket(&day, shard),
                        buffer: Default::default(),
                        start_key: None,
                        exhausted: false,
                    })
                    .collect();
            }
            let (store, lowest, highest) = (self.store, self.lowest, self.highest);
            let fetches = self
                .shards
                .iter_mut()
                .filter(|shard| shard.needs_page())
                .map(|shard| shard.fetch(store, lowest, highest));
            futures::future::try_join_all(fetches).await?;
            let next = self
                .shards
                .iter_mut()
                .filter(|shard| !shard.buffer.is_empty())
                .min_by_key(|shard| shard.buffer.front().map(|event| event.event_id));
            match next.and_then(|shard| shard.buffer.pop_front()) {
                Some(event) => page.push(event),
                // Every shard of the day is read to its end.
                None => self.shards.clear(),
            }
        }
        Ok(page)
    }
}

#[async_trait]
impl EventStore for DynamoDbStore {
    fn window_cursor(&self, since: Timestamp, until: Timestamp) -> Option<Box<dyn WindowCursor + '_>> {
        let (lowest, highest) = EventId::bounds(TimeRange::between(since, until), None)?;
        let days = days_between(lowest, highest).into();
        Some(Box::new(ShardedWindow { store: self, lowest, highest, days, shards: Vec::new() }))
    }

    #[tracing::instrument(skip(self, event), fields(connection_id = %event.connection_id, event_id = %event.event_id))]
    async fn append(&self, event: &EventEnvelope) -> Result<AppendOutcome, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.tables.events)
            .set_item(Some(event_to_item(event)?))
            .condition_expression("attribute_not_exists(eventId)")
            .send()
            .await;
        match result.map_err(|error| store_error("PutItem", error)) {
            Ok(_) => Ok(AppendOutcome::Appended),
            Err(StoreError::Conflict(_)) => Ok(AppendOutcome::AlreadyExists),
            Err(error) => Err(error),
        }
    }

    async fn connection_history(
        &self,
        connection_id: &ConnectionId,
        page_request: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        // Strongly consistent: the projector reads a connection's whole history after
        // a stream record of its latest event, and must see that event.
        let mut query = self
            .client
            .query()
            .table_name(&self.tables.events)
            .consistent_read(true)
            .expression_attribute_values(":connection", string(connection_id.as_str()));
        query = match page_request.after {
            Some(after) => query
                .key_condition_expression("connectionId = :connection AND eventId > :after")
                .expression_attribute_values(":after", string(after.to_string())),
            None => query.key_condition_expression("connectionId = :connection"),
        };
        let (events, more) = collect(query, page_request.limit).await?;
        Ok(page(events, more))
    }

    async fn user_history(
        &self,
        user_id: &UserId,
        range: TimeRange,
        page_request: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        let Some((lowest, highest)) = EventId::bounds(range, page_request.after) else {
            return Ok(Page { items: Vec::new(), next: None });
        };
        let query = self.query_id_range(USER_INDEX, "userId", user_id.as_str(), lowest, highest);
        let (events, more) = collect(query, page_request.limit).await?;
        Ok(page(events, more))
    }

    /// Fans out over the time-bucket shards of each day in parallel and merges in
    /// event id order, a day at a time, stopping once the page is full.
    async fn window(
        &self,
        since: Timestamp,
        until: Timestamp,
        page_request: PageRequest,
    ) -> Result<Page<EventEnvelope>, StoreError> {
        let Some((lowest, highest)) = EventId::bounds(TimeRange::between(since, until), page_request.after) else {
            return Ok(Page { items: Vec::new(), next: None });
        };
        let limit = page_request.limit;
        let mut merged: Vec<EventEnvelope> = Vec::new();
        let mut more = false;
        let days = days_between(lowest, highest);
        for (index, day_text) in days.iter().enumerate() {
            let wanted = limit - merged.len();
            let mut shards = JoinSet::new();
            for shard in 0..TIME_BUCKET_SHARDS {
                let bucket = time_bucket(day_text, shard);
                shards.spawn(collect(self.query_id_range(TIME_INDEX, "timeBucket", &bucket, lowest, highest), wanted));
            }
            let mut day_events = Vec::new();
            while let Some(joined) = shards.join_next().await {
                let (events, shard_has_more) =
                    joined.map_err(|error| StoreError::Other(Cause::caused_by("window query task", error)))??;
                day_events.extend(events);
                more |= shard_has_more;
            }
            day_events.sort_by_key(|event| event.event_id);
            merged.extend(day_events);
            if merged.len() >= limit {
                // Later days may hold more; an empty last page is the price of not asking.
                more |= merged.len() > limit || index + 1 < days.len();
                break;
            }
        }
        merged.truncate(limit);
        Ok(page(merged, more))
    }
}
