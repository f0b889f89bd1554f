//! Loopback receivers of presence events: a webhook that checks every signature
//! with its own HMAC (not the library's), can fail or redirect on demand, and
//! records every body it was sent; and an EventBridge endpoint answering `PutEvents`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Default)]
pub struct Received {
    /// Events of the requests answered 2xx, in order.
    pub events: Vec<Value>,
    /// Events of every request, failed ones included.
    pub attempted: Vec<Value>,
    pub bad_signatures: usize,
    /// Answer this many more requests with 500.
    pub fail: usize,
    pub failed: usize,
    /// Answer every request with a redirect while set.
    pub redirect: bool,
    pub redirected: usize,
}

pub struct Webhook {
    pub url: String,
    pub secret: String,
    pub received: Arc<Mutex<Received>>,
}

struct Shared {
    secret: String,
    received: Arc<Mutex<Received>>,
}

fn valid_signature(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
    let (timestamp, signature) = (header("x-wsledger-timestamp"), header("x-wsledger-signature"));
    let Ok(seconds) = timestamp.parse::<i64>() else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - seconds).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let Some(hex) = signature.strip_prefix("v1=") else { return false };
    let Ok(bytes) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    mac.verify_slice(&bytes).is_ok()
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let mut received = shared.received.lock().unwrap();
    if !valid_signature(&shared.secret, &headers, &body) {
        received.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let events: Vec<Value> = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body["events"].as_array().cloned())
        .unwrap_or_default();
    received.attempted.extend(events.iter().cloned());
    if received.redirect {
        received.redirected += 1;
        return (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")]).into_response();
    }
    if received.fail > 0 {
        received.fail -= 1;
        received.failed += 1;
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    received.events.extend(events);
    StatusCode::NO_CONTENT.into_response()
}

impl Webhook {
    pub async fn start(secret: &str) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = Arc::new(Shared { secret: secret.to_owned(), received: received.clone() });
        let app = Router::new().route("/hook", post(hook)).with_state(shared);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, secret: secret.to_owned(), received }
    }

    /// The delivered events of `user`, as `(type, eventId, connections)`.
    pub fn of(&self, user: &str) -> Vec<(String, String, u64)> {
        self.received
            .lock()
            .unwrap()
            .events
            .iter()
            .filter(|event| event["userId"] == user)
            .map(|event| {
                (
                    event["type"].as_str().unwrap().to_owned(),
                    event["eventId"].as_str().unwrap().to_owned(),
                    event["connections"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Waits until `user` has `count` delivered events; returns their types.
    pub async fn wait_for(&self, user: &str, count: usize, within: Duration) -> Vec<String> {
        wsledger_testkit::eventually(within, &format!("{count} presence event(s) of {user}"), || async {
            let events = self.of(user);
            (events.len() >= count).then(|| events.into_iter().map(|(kind, _, _)| kind).collect())
        })
        .await
    }
}

/// An EventBridge endpoint (`AWS_ENDPOINT_URL_EVENTBRIDGE`) that takes every
/// `PutEvents` and records its entries.
pub struct EventBus {
    pub endpoint: String,
    pub entries: Arc<Mutex<Vec<Value>>>,
}

/// Checks a request's SigV4 signature (with the tests' DynamoDB Local secret, the
/// credentials the bootstraps run with) by `serve`'s verifier, which is checked
/// against AWS's documented example.
fn signed_by_the_tests_key(headers: &HeaderMap, body: &[u8]) -> bool {
    use wsledger::local::gateway::sigv4::{Authorization, SignedRequest, verify};
    let Some(Ok(authorization)) =
        headers.get("authorization").and_then(|value| value.to_str().ok()).and_then(Authorization::parse)
    else {
        return false;
    };
    let request = SignedRequest { method: "POST", path: "/", query: "", headers, body };
    authorization.scope.ends_with("/events/aws4_request")
        && verify(&request, &authorization, crate::dynamodb_local::SECRET_KEY, chrono::Utc::now()).is_ok()
}

async fn put_events(State(entries): State<Arc<Mutex<Vec<Value>>>>, headers: HeaderMap, body: Bytes) -> Response {
    if !signed_by_the_tests_key(&headers, &body) {
        return (StatusCode::FORBIDDEN, r#"{"message":"The request signature we calculated does not match"}"#)
            .into_response();
    }
    let target = headers.get("x-amz-target").and_then(|value| value.to_str().ok()).unwrap_or_default();
    if target != "AWSEvents.PutEvents" {
        return (StatusCode::BAD_REQUEST, format!("unexpected target {target}")).into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let sent = request["Entries"].as_array().cloned().unwrap_or_default();
    let answer: Vec<Value> =
        sent.iter().enumerate().map(|(index, _)| json!({ "EventId": format!("e{index}") })).collect();
    entries.lock().unwrap().extend(sent);
    ([("content-type", "application/x-amz-json-1.1")], json!({ "FailedEntryCount": 0, "Entries": answer }).to_string())
        .into_response()
}

impl EventBus {
    pub async fn start() -> Self {
        let entries = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new().route("/", post(put_events)).with_state(entries.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { endpoint, entries }
    }
}
