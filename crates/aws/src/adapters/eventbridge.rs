//! [`PresenceSink`] on an EventBridge bus (docs/contract.md, "EventBridge sink"):
//! `PutEvents` with `Source` `wsledger.presence`, `DetailType` the event's type and
//! `Detail` the event, so rules route presence anywhere (AppSync Events through an
//! API destination, SNS, SQS, a function). At most 10 entries per call, as the API
//! allows; an entry the bus refused fails the publish (the events go again).
//!
//! One call, spoken directly: a JSON POST signed with SigV4 (`aws-sigv4`, the
//! signer the SDK clients use, with the credentials of the SDK configuration) on
//! the hyper and rustls stack of `https_get`. The `aws-sdk-eventbridge` client
//! would add about 0.5 MB to the projector, past its 8 MB budget
//! (`scripts/package`, BENCHMARKS.md).

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::adapters::aws::AwsPolicy;
use crate::adapters::stored::PresenceEventItem;
use crate::domain::presence::PresenceEvent;
use crate::ports::{PresenceSink, SinkError};

pub const SOURCE: &str = "wsledger.presence";
const ENTRIES_PER_CALL: usize = 10;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EventBridgeSink {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    credentials: Option<SharedCredentialsProvider>,
    region: String,
    endpoint: String,
    bus: String,
}

impl EventBridgeSink {
    /// A sink on `bus` (a name or an ARN), at `endpoint_url` or the region's
    /// endpoint, with the credentials and region of the SDK configuration.
    pub async fn new(bus: String, endpoint_url: Option<&str>, policy: AwsPolicy) -> Result<Self, String> {
        let config = crate::adapters::aws::sdk_config(endpoint_url, policy).await;
        let region = config.region().map(ToString::to_string).unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint = match endpoint_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://events.{region}.amazonaws.com"),
        };
        let connector = crate::https_get::connector(crate::https_get::root_store(policy.roots))?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { client, credentials: config.credentials_provider(), region, endpoint, bus })
    }

    /// `PutEvents` for `entries`, signed; the answer's JSON.
    async fn put_events(&self, entries: Vec<Value>) -> Result<Value, String> {
        let body = json!({ "Entries": entries }).to_string();
        let url = format!("{}/", self.endpoint);
        let provider = self.credentials.as_ref().ok_or("no AWS credentials configured")?;
        let credentials = provider.provide_credentials().await.map_err(|error| format!("AWS credentials: {error}"))?;
        let identity = Identity::from(credentials);
        let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", "AWSEvents.PutEvents")];
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("events")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|error| error.to_string())?
            .into();
        let signable =
            SignableRequest::new("POST", url.as_str(), headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
                .map_err(|error| error.to_string())?;
        let (instructions, _) = sign(signable, &params).map_err(|error| error.to_string())?.into_parts();
        let mut request = hyper::Request::post(url.as_str());
        for (name, value) in headers.into_iter().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|error| error.to_string())?;
        let call = async {
            let response = self.client.request(request).await.map_err(|error| error.to_string())?;
            let status = response.status();
            let answer = Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await
                .map_err(|error| format!("reading the answer: {error}"))?
                .to_bytes();
            let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
            if !status.is_success() {
                let message = answer.get("message").or_else(|| answer.get("Message")).and_then(Value::as_str);
                return Err(format!("HTTP {status}: {}", message.unwrap_or("no message")));
            }
            Ok(answer)
        };
        tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
    }
}

#[async_trait]
impl PresenceSink for EventBridgeSink {
    fn name(&self) -> &str {
        "eventbridge"
    }

    async fn publish(&self, events: &[PresenceEvent]) -> Result<(), SinkError> {
        for chunk in events.chunks(ENTRIES_PER_CALL) {
            let entries = chunk
                .iter()
                .map(|event| {
                    let detail = serde_json::to_string(&PresenceEventItem::from(event))
                        .map_err(|error| SinkError(format!("encoding a presence event: {error}")))?;
                    Ok(json!({
                        "EventBusName": self.bus,
                        "Source": SOURCE,
                        "DetailType": event.kind.as_str(),
                        "Detail": detail,
                    }))
                })
                .collect::<Result<Vec<Value>, SinkError>>()?;
            let answer = self
                .put_events(entries)
                .await
                .map_err(|error| SinkError(format!("PutEvents on {}: {error}", self.bus)))?;
            let failed = answer.get("FailedEntryCount").and_then(Value::as_u64).unwrap_or(0);
            if failed > 0 {
                let reason = answer["Entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|entry| entry.get("ErrorMessage").or_else(|| entry.get("ErrorCode")))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                return Err(SinkError(format!(
                    "PutEvents on {}: {failed} of {} entries refused: {reason}",
                    self.bus,
                    chunk.len()
                )));
            }
        }
        Ok(())
    }
}
