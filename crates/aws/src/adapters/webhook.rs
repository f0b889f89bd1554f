//! [`PresenceSink`] as a signed webhook (docs/contract.md, "Webhook sink"): a
//! `POST` of `{"events":[...]}` with `X-Wsledger-Timestamp` (Unix seconds) and
//! `X-Wsledger-Signature: v1=<hex HMAC-SHA256 of the secret over "<timestamp>.<body>">`,
//! as Stripe signs its webhooks, so a receiver can check both origin and freshness.
//!
//! Bounded: 3 attempts per publish (3 s each, 200 ms and 800 ms apart); a redirect
//! is a failure, never followed (the URL is the operator's, not the receiver's to
//! change). After a failed publish the sink refuses at once for 5 s, so a receiver
//! that is down costs one timeout per round rather than one per user; the events
//! stay owed (`presence`), and go again later with the same ids.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

use crate::adapters::stored::PresenceEventItem;
use crate::domain::Timestamp;
use crate::domain::presence::PresenceEvent;
use crate::ports::{PresenceSink, SinkError};
use crate::trust_roots::TrustRoots;

const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const PAUSES: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(800)];
const REST_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// The signature header's value for `body` sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("v1={hex}")
}

/// Why a webhook configuration is refused, in one line.
pub fn check_config(url: Option<&str>, secret: Option<&str>) -> Result<Option<(hyper::Uri, String)>, String> {
    match (url.filter(|url| !url.is_empty()), secret.filter(|secret| !secret.is_empty())) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err("a presence webhook secret was given without a presence webhook URL".into()),
        (Some(url), None) => Err(format!("the presence webhook {url:?} needs a secret to sign with")),
        (Some(url), Some(secret)) => {
            let uri: hyper::Uri =
                url.parse().map_err(|error| format!("the presence webhook URL {url:?} is not a URL: {error}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
                return Err(format!("the presence webhook URL {url:?} must be http:// or https:// with a host"));
            }
            Ok(Some((uri, secret.to_owned())))
        }
    }
}

pub struct WebhookSink {
    uri: hyper::Uri,
    secret: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    resting_until: Mutex<Option<Instant>>,
    attempt_timeout: Duration,
}

impl WebhookSink {
    /// A sink posting to `uri` (checked by [`check_config`]), trusting `roots` for HTTPS.
    pub fn new(uri: hyper::Uri, secret: String, roots: TrustRoots) -> Result<Self, String> {
        let connector = crate::https_get::connector(crate::https_get::root_store(roots))?;
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self { uri, secret, client, resting_until: Mutex::new(None), attempt_timeout: ATTEMPT_TIMEOUT })
    }

    async fn attempt(&self, body: &Bytes) -> Result<(), String> {
        let timestamp = Timestamp::now().epoch_seconds();
        let request = hyper::Request::post(self.uri.clone())
            .header("content-type", "application/json")
            .header("user-agent", "wsledger-presence")
            .header("x-wsledger-timestamp", timestamp.to_string())
            .header("x-wsledger-signature", signature(&self.secret, timestamp, body))
            .body(Full::new(body.clone()))
            .map_err(|error| error.to_string())?;
        let response = tokio::time::timeout(self.attempt_timeout, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {:?}", self.attempt_timeout))?
            .map_err(|error| error.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(format!("HTTP {status}: redirects are not followed"))
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

#[async_trait]
impl PresenceSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    async fn publish(&self, events: &[PresenceEvent]) -> Result<(), SinkError> {
        if crate::sync::lock(&self.resting_until).is_some_and(|until| Instant::now() < until) {
            return Err(SinkError("the webhook failed moments ago; resting".into()));
        }
        let items: Vec<PresenceEventItem> = events.iter().map(PresenceEventItem::from).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "events": items }))
            .map_err(|error| SinkError(format!("encoding presence events: {error}")))?;
        let body = Bytes::from(body);
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(PAUSES[(attempt - 1) as usize]).await;
            }
            match self.attempt(&body).await {
                Ok(()) => return Ok(()),
                Err(error) => last_error = error,
            }
        }
        *crate::sync::lock(&self.resting_until) = Some(Instant::now() + REST_AFTER_FAILURE);
        Err(SinkError(format!("POST {}: {last_error} ({ATTEMPTS} attempts)", self.uri)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Python: hmac.new(b"whsec_test", b'1700000000.{"events":[]}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"events":[]}"#),
            "v1=4f6f9b7a41398ad124e52a1320534f978e522923f3f2b2724e31d7a9dbf78a7f"
        );
    }

    /// A receiver that accepts connections and never answers: the publish fails
    /// after its attempts, within their bounds, and the next one rests at once.
    #[tokio::test]
    async fn a_webhook_that_never_answers_fails_within_bounds_and_then_rests() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let held = std::sync::Arc::new(Mutex::new(Vec::new()));
        let holder = held.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                holder.lock().unwrap().push(socket);
            }
        });
        let (uri, secret) = check_config(Some(&url), Some("s")).unwrap().unwrap();
        let mut sink = WebhookSink::new(uri, secret, TrustRoots::System).unwrap();
        sink.attempt_timeout = Duration::from_millis(200);
        let event = PresenceEvent {
            event_id: "01KAV9FT3V2KRMX7E5F8FPAMEJ".into(),
            kind: crate::domain::presence::PresenceEventType::Online,
            user_id: crate::domain::UserId::parse("u").unwrap(),
            at: Timestamp::from_epoch_millis(1_764_000_000_000),
            connections: 1,
        };
        let started = Instant::now();
        let error = sink.publish(std::slice::from_ref(&event)).await.unwrap_err();
        let took = started.elapsed();
        assert!(error.0.contains("no answer within") && error.0.contains("3 attempts"), "{error}");
        assert!(took < Duration::from_secs(6), "three 200 ms attempts and two pauses, not {took:?}");
        let started = Instant::now();
        let resting = sink.publish(std::slice::from_ref(&event)).await.unwrap_err();
        assert!(resting.0.contains("resting") && started.elapsed() < Duration::from_millis(500), "{resting}");
        assert_eq!(held.lock().unwrap().len(), 3, "one connection per attempt, none while resting");
    }

    #[test]
    fn a_bad_configuration_is_one_clear_line() {
        assert!(check_config(None, None).unwrap().is_none());
        assert!(check_config(Some("https://hooks.example/p"), Some("s")).unwrap().is_some());
        for (url, secret, says) in [
            (Some("https://hooks.example/p"), None, "needs a secret"),
            (None, Some("s"), "without a presence webhook URL"),
            (Some("hooks.example/p"), Some("s"), "the presence webhook URL \"hooks.example/p\""),
            (Some("ftp://hooks.example/p"), Some("s"), "must be http:// or https://"),
            (Some("http://exa mple"), Some("s"), "is not a URL"),
        ] {
            let error = check_config(url, secret).unwrap_err();
            assert!(error.contains(says), "{error}");
            assert!(!error.contains('\n'));
        }
    }
}
