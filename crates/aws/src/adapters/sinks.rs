//! The presence sinks a [`PresenceSettings`] names, built once at start.

use std::sync::Arc;

use super::aws::AwsPolicy;
use super::eventbridge::EventBridgeSink;
use super::webhook::{WebhookSink, check_config};
use crate::ports::PresenceSink;
use crate::presence::PresenceSettings;
use crate::trust_roots::TrustRoots;

/// The webhook (trusting `webhook_roots`) and the EventBridge bus (on `policy`),
/// those that are configured.
pub async fn presence_sinks(
    settings: &PresenceSettings,
    webhook_roots: TrustRoots,
    policy: AwsPolicy,
) -> Result<Vec<Arc<dyn PresenceSink>>, String> {
    let mut sinks: Vec<Arc<dyn PresenceSink>> = Vec::new();
    if let Some((url, secret)) = &settings.webhook
        && let Some((uri, secret)) = check_config(Some(url), Some(secret))?
    {
        sinks.push(Arc::new(WebhookSink::new(uri, secret, webhook_roots)?));
    }
    if let Some(bus) = &settings.event_bus {
        let endpoint = crate::settings::lookup("AWS_ENDPOINT_URL_EVENTBRIDGE");
        sinks.push(Arc::new(EventBridgeSink::new(bus.clone(), endpoint.as_deref(), policy).await?));
    }
    Ok(sinks)
}
