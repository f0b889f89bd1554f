//! The `projector` Lambda: DynamoDB Streams batches of the events table, and the
//! scheduled sweep.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{Error, LambdaEvent};
use serde_json::{Value, json};

use crate::adapters::dynamodb::stream::decode_record;
use crate::domain::Timestamp;
use crate::metrics::Metrics;
use crate::ports::{ConnectionGateway, EventStore, LeaseStore, ViewStore};
use crate::presence::{Presence, check_due};
use crate::projector::{ChangeRecord, count_batch, project_with_presence};
use crate::sweep::{SweepConfig, SweepPorts, sweep};

/// Projects one stream batch and answers with the partial batch response Lambda
/// expects (`ReportBatchItemFailures`): the earliest record to retry from, or a
/// failure without an identifier (retry the whole batch), or nothing.
pub async fn stream_batch(
    views: &dyn ViewStore,
    ledger: &dyn EventStore,
    records: &[EventRecord],
    presence: Option<&Presence>,
    metrics: &Metrics,
) -> DynamoDbEventResponse {
    let records: Vec<ChangeRecord> = records.iter().map(decode_record).collect();
    let now = Timestamp::now();
    let outcome = project_with_presence(views, ledger, &records, presence, now).await;
    count_batch(metrics, &records, &outcome, now);
    tracing::info!(
        records = records.len(),
        connections = outcome.connections,
        written = outcome.written,
        unchanged = outcome.unchanged,
        failed = outcome.failed,
        ignored = outcome.ignored,
        poison = outcome.poison,
        presence_events = outcome.presence_told.len(),
        "batch projected"
    );
    let mut response = DynamoDbEventResponse::default();
    if outcome.retry_from.is_some() || outcome.retry_whole_batch {
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = outcome.retry_from;
        response.batch_item_failures.push(failure);
    }
    response
}

/// A partial batch response that retries `records` from the first.
fn retry_all(records: &[EventRecord]) -> DynamoDbEventResponse {
    let mut failure = DynamoDbBatchItemFailure::default();
    failure.item_identifier = records.first().and_then(|record| record.change.sequence_number.clone());
    let mut response = DynamoDbEventResponse::default();
    response.batch_item_failures.push(failure);
    response
}

/// What the projector needs: the stores, and the Management API for the sweep.
pub struct Projector<'a> {
    pub events: &'a dyn EventStore,
    pub views: &'a dyn ViewStore,
    pub gateway: Option<&'a dyn ConnectionGateway>,
    /// The users' connection leases, which the sweep frees for gone connections.
    pub leases: Option<&'a dyn LeaseStore>,
    pub sweep: SweepConfig,
    /// The presence projection and its sinks (`None`: `PRESENCE=off`).
    pub presence: Option<Presence>,
    pub metrics: &'a Metrics,
}

/// The presence schedule's input (`template.yaml`, `PresenceSchedule`).
fn is_presence_check(event: &Value) -> bool {
    event.get("wsledger").and_then(Value::as_str) == Some("presence")
}

fn is_scheduled(event: &Value) -> bool {
    event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event.get("source").and_then(Value::as_str) == Some("aws.events")
}

pub async fn handle(projector: &Projector<'_>, event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload = event.payload;
    if payload.get("Records").is_some() {
        let batch: Event =
            serde_json::from_value(payload).map_err(|error| format!("not a DynamoDB Streams event: {error}"))?;
        let projected = tokio::time::timeout_at(
            super::answer_by(event.context.deadline),
            stream_batch(
                projector.views,
                projector.events,
                &batch.records,
                projector.presence.as_ref(),
                projector.metrics,
            ),
        );
        let response = match projected.await {
            Ok(response) => response,
            Err(_) => {
                // Out of time: the whole batch again, from its first record (harmless:
                // projection is idempotent).
                tracing::error!(records = batch.records.len(), "the batch was not projected before the deadline");
                projector.metrics.add(crate::metrics::names::FAILED_RECORDS, batch.records.len() as u64);
                retry_all(&batch.records)
            }
        };
        return Ok(serde_json::to_value(response)?);
    }
    if is_presence_check(&payload) {
        return presence_check(projector, event.context.deadline).await;
    }
    if is_scheduled(&payload) {
        let gateway = projector.gateway.ok_or("the sweep needs the Management API: set WEBSOCKET_API_ENDPOINT")?;
        let ports = SweepPorts { views: projector.views, events: projector.events, gateway, leases: projector.leases };
        let report = sweep(ports, Timestamp::now(), projector.sweep).await?;
        report.count(projector.metrics);
        if let Some(presence) = &projector.presence {
            check_due(presence, Timestamp::now()).await?;
        }
        return Ok(json!({
            "checked": report.checked,
            "gone": report.gone,
            "alive": report.alive,
            "refreshed": report.refreshed,
            "errors": report.errors,
        }));
    }
    Err("unsupported event: expected DynamoDB Streams records or a scheduled event".into())
}

/// The presence follow-up: offlines whose grace ended, ghosts, deliveries to retry.
async fn presence_check(projector: &Projector<'_>, deadline: u64) -> Result<Value, Error> {
    let presence = projector.presence.as_ref().ok_or("presence is off (PRESENCE=off)")?;
    let report = tokio::time::timeout_at(super::answer_by(deadline), check_due(presence, Timestamp::now()))
        .await
        .map_err(|_| "the presence check did not finish before the deadline")??;
    Ok(json!({ "users": report.users, "events": report.told.len(), "failed": report.failed.len() }))
}
