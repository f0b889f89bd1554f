//! [`PresenceSink`] on an EventBridge bus (docs/contract.md, "EventBridge sink"):
//! `PutEvents` with `Source` `wsledger.presence`, `DetailType` the event's type and
//! `Detail` the event, so rules route presence anywhere (AppSync Events through an
//! API destination, SNS, SQS, a function). At most 10 entries per call, as the API
//! allows; an entry the bus refused fails the publish (the events go again).

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::adapters::aws::{AwsPolicy, sdk_error_message};
use crate::adapters::stored::PresenceEventItem;
use crate::domain::presence::PresenceEvent;
use crate::ports::{PresenceSink, SinkError};

pub const SOURCE: &str = "wsledger.presence";
const ENTRIES_PER_CALL: usize = 10;

pub struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeSink {
    /// A sink on `bus` (a name or an ARN), with the one policy of every AWS client.
    pub async fn new(bus: String, endpoint_url: Option<&str>, policy: AwsPolicy) -> Self {
        let config = crate::adapters::aws::sdk_config(endpoint_url, policy).await;
        Self { client: aws_sdk_eventbridge::Client::new(&config), bus }
    }
}

#[async_trait]
impl PresenceSink for EventBridgeSink {
    fn name(&self) -> &str {
        "eventbridge"
    }

    async fn publish(&self, events: &[PresenceEvent]) -> Result<(), SinkError> {
        for chunk in events.chunks(ENTRIES_PER_CALL) {
            let mut request = self.client.put_events();
            for event in chunk {
                let detail = serde_json::to_string(&PresenceEventItem::from(event))
                    .map_err(|error| SinkError(format!("encoding a presence event: {error}")))?;
                request = request.entries(
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(event.kind.as_str())
                        .detail(detail)
                        .build(),
                );
            }
            let output = request.send().await.map_err(|error| SinkError(sdk_error_message("PutEvents", &error)))?;
            if output.failed_entry_count > 0 {
                let reason = output
                    .entries
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|entry| entry.error_message.or(entry.error_code))
                    .unwrap_or_default();
                return Err(SinkError(format!(
                    "PutEvents on {}: {} of {} entries refused: {reason}",
                    self.bus,
                    output.failed_entry_count,
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}
