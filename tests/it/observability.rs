//! Every handled failure is visible: the real bootstraps print CloudWatch EMF lines
//! (parsed here as CloudWatch would), `serve` answers `/metrics`, and the JWKS is
//! fetched once at a time and not hammered during an outage.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::dynamodb::Event;
use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use wsledger::auth::{AuthConfig, AuthError, JwksSource, JwtVerifier};
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, Timestamp, UserId};
use wsledger::metrics::{Metrics, names};
use wsledger::ports::EventStore;

use crate::authorizer_lambda::{CLIENT_ID, METHOD_ARN, SigningKey, USER_POOL_ID, claims, serve_jwks};
use crate::dynamodb_local;
use crate::lambda_runtime_api::{Outcome, RuntimeApi};

/// Checks a line as CloudWatch's EMF parser does, and returns it parsed: an `_aws`
/// object with a numeric `Timestamp` and `CloudWatchMetrics` directives, each with
/// a `Namespace`, `Dimensions` (arrays of names, each a top-level string member)
/// and `Metrics` (each a `Name` that is a top-level number, and a `Unit`).
fn parse_emf(line: &str) -> Value {
    let value: Value = serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
    let aws = &value["_aws"];
    assert!(aws["Timestamp"].is_i64(), "Timestamp: {line}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics is an array");
    assert!(!directives.is_empty(), "{line}");
    for directive in directives {
        assert!(directive["Namespace"].as_str().is_some_and(|namespace| !namespace.is_empty()), "{line}");
        for dimension_set in directive["Dimensions"].as_array().expect("Dimensions") {
            let names = dimension_set.as_array().expect("a dimension set is an array");
            assert!(!names.is_empty() && names.len() <= 30, "{line}");
            for name in names {
                let name = name.as_str().expect("a dimension name");
                assert!(value[name].is_string(), "dimension {name} must be a top-level string: {line}");
            }
        }
        for metric in directive["Metrics"].as_array().expect("Metrics") {
            let name = metric["Name"].as_str().expect("a metric name");
            assert!(value[name].is_number(), "metric {name} must be a top-level number: {line}");
            assert!(metric["Unit"].is_string(), "{line}");
        }
    }
    value
}

/// The EMF lines a piped bootstrap prints, as they come.
#[derive(Clone, Default)]
struct EmfLines(Arc<Mutex<Vec<Value>>>);

impl EmfLines {
    fn collect(child: &mut tokio::process::Child) -> Self {
        let lines = Self::default();
        let sink = lines.0.clone();
        let stdout = child.stdout.take().expect("a piped stdout");
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if line.contains("\"_aws\"") {
                    sink.lock().unwrap().push(parse_emf(&line));
                }
            }
        });
        lines
    }

    /// The sum of `metric` over the lines whose dimension `dimension` (if given) matches.
    fn sum(&self, metric: &str, dimension: Option<(&str, &str)>) -> f64 {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|line| dimension.is_none_or(|(name, value)| line[name] == value))
            .filter_map(|line| line[metric].as_f64())
            .sum()
    }

    /// Waits until `metric` adds up to at least `at_least`.
    async fn wait_for(&self, metric: &str, dimension: Option<(&str, &str)>, at_least: f64) {
        let what = format!("{metric} {dimension:?} reaching {at_least}");
        wsledger_testkit::eventually(Duration::from_secs(5), &what, || async {
            (self.sum(metric, dimension) >= at_least).then_some(())
        })
        .await;
    }

    fn namespaces_and_functions(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                let namespace = line["_aws"]["CloudWatchMetrics"][0]["Namespace"].as_str().unwrap().to_owned();
                (namespace, line["FunctionName"].as_str().unwrap().to_owned())
            })
            .collect()
    }
}

fn dynamodb_env(tables: &wsledger::adapters::dynamodb::TableNames) -> Vec<(&'static str, String)> {
    let mut env = dynamodb_local::bootstrap_env(tables);
    env.push(("METRICS_NAMESPACE", "wsledger-test".to_owned()));
    env
}

fn websocket_event(fixture: &str, connection_id: &str, offset_ms: i64, body: Option<&str>) -> Value {
    let connected_at = Timestamp::now().epoch_millis() - 10_000;
    crate::lambda_runtime_api::websocket_event(fixture, connection_id, connected_at, connected_at + offset_ms, body)
}

#[tokio::test]
async fn the_connection_handler_prints_emf_for_messages_rejections_and_appends() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let runtime = RuntimeApi::start().await;
    let mut process =
        runtime.spawn_piped(&wsledger_testkit::bootstrap_bin("connection-handler"), &dynamodb_env(store.tables()));
    let emf = EmfLines::collect(&mut process);
    let connection = "EmfHandler01=";
    for event in [
        websocket_event(include_str!("../fixtures/apigw/connect.json"), connection, 0, None),
        websocket_event(include_str!("../fixtures/apigw/default.json"), connection, 10, Some(r#"{"type":"ping"}"#)),
        websocket_event(include_str!("../fixtures/apigw/default.json"), connection, 20, Some("{oops")),
    ] {
        assert!(matches!(runtime.invoke(event).await, Outcome::Response(_)));
    }
    emf.wait_for(names::MESSAGES, None, 2.0).await;
    emf.wait_for(names::REJECTED, Some(("Code", "invalid_json")), 1.0).await;
    emf.wait_for(names::EVENTS_APPENDED, None, 2.0).await;
    assert!(
        emf.namespaces_and_functions()
            .iter()
            .all(|(namespace, function)| namespace == "wsledger-test" && function == "wsledger-test")
    );
}

#[tokio::test]
async fn the_projector_prints_emf_for_records_views_and_lag() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let at = Timestamp::now().minus(chrono::TimeDelta::seconds(2));
    let event = EventEnvelope::for_request(
        ConnectionId::parse("conn-emf").unwrap(),
        UserId::parse("user-emf").unwrap(),
        "request-emf",
        at,
        at,
        ConnectionEvent::Connected { ip_address: None, user_agent: None },
    );
    store.append(&event).await.unwrap();
    let mut records = crate::projector_lambda::stream_records(&store).await;
    let mut poison = records[0].clone();
    poison.change.new_image = serde_json::from_value(json!({ "connectionId": { "S": "conn-emf" } })).unwrap();
    records.push(poison);

    let runtime = RuntimeApi::start().await;
    let mut process = runtime.spawn_piped(&wsledger_testkit::bootstrap_bin("projector"), &dynamodb_env(store.tables()));
    let emf = EmfLines::collect(&mut process);
    let mut batch = Event::default();
    batch.records = records;
    assert!(matches!(runtime.invoke(serde_json::to_value(&batch).unwrap()).await, Outcome::Response(_)));
    emf.wait_for(names::RECORDS, None, 2.0).await;
    emf.wait_for(names::VIEWS_WRITTEN, None, 1.0).await;
    emf.wait_for(names::POISON_RECORDS, None, 1.0).await;
    let lag = emf.sum(names::PROJECTION_LAG_MS, None);
    assert!(lag >= 2_000.0, "the lag of an event two seconds old: {lag}");
}

fn authorizer_event(token: &str) -> Value {
    json!({
        "type": "REQUEST",
        "methodArn": METHOD_ARN,
        "headers": {},
        "queryStringParameters": { "token": token },
        "multiValueQueryStringParameters": { "token": [token] },
        "requestContext": { "routeKey": "$connect", "eventType": "CONNECT", "connectionId": "B1xq5cFJIAMCL-g=" }
    })
}

#[tokio::test]
async fn the_authorizer_prints_emf_for_allowed_and_denied_by_reason() {
    let key = SigningKey::generate("emf-key");
    let address = serve_jwks(json!({ "keys": [key.jwk.clone()] })).await;
    let runtime = RuntimeApi::start().await;
    let mut process = runtime.spawn_piped(
        &wsledger_testkit::bootstrap_bin("authorizer"),
        &[
            ("USER_POOL_ID", USER_POOL_ID.to_owned()),
            ("USER_POOL_CLIENT_ID", CLIENT_ID.to_owned()),
            ("JWKS_URL", format!("http://{address}/.well-known/jwks.json")),
        ],
    );
    let emf = EmfLines::collect(&mut process);
    let expired = key.sign(&claims(json!({ "exp": chrono::Utc::now().timestamp() - 3_600 })));
    for token in [key.sign(&claims(json!({}))), expired.clone(), expired] {
        assert!(matches!(runtime.invoke(authorizer_event(&token)).await, Outcome::Response(_)));
    }
    emf.wait_for(names::ALLOWED, None, 1.0).await;
    emf.wait_for(names::DENIED, Some(("Reason", "expired")), 2.0).await;
}

/// A JWKS endpoint that counts its requests and can be made to fail.
struct CountingJwks {
    address: SocketAddr,
    requests: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

async fn counting_jwks(jwks: Value) -> CountingJwks {
    let requests = Arc::new(AtomicUsize::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (counter, switch) = (requests.clone(), failing.clone());
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (counter, switch, jwks) = (counter.clone(), switch.clone(), jwks.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                // Slow enough that concurrent requests overlap with the fetch.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if switch.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                axum::Json(jwks).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    CountingJwks { address, requests, failing }
}

fn verifier(jwks: &CountingJwks, backoff: Duration) -> (Arc<JwtVerifier>, Arc<Metrics>) {
    let mut config = AuthConfig::cognito(USER_POOL_ID, Some(CLIENT_ID.to_owned())).unwrap();
    config.jwks = JwksSource::Url(format!("http://{}/.well-known/jwks.json", jwks.address));
    let metrics = Arc::new(Metrics::new());
    let verifier = JwtVerifier::new(config).with_metrics(metrics.clone()).with_failure_backoff(backoff);
    (Arc::new(verifier), metrics)
}

#[tokio::test]
async fn fifty_unknown_key_ids_at_once_cause_one_fetch() {
    let known = SigningKey::generate("known-key");
    let jwks = counting_jwks(json!({ "keys": [known.jwk.clone()] })).await;
    let (verifier, metrics) = verifier(&jwks, Duration::from_secs(30));
    let tokens: Vec<String> =
        (0..50).map(|_| SigningKey::generate(&ulid::Ulid::generate().to_string()).sign(&claims(json!({})))).collect();
    let results = futures::future::join_all(tokens.iter().map(|token| {
        let verifier = verifier.clone();
        async move { verifier.verify(token).await }
    }))
    .await;
    assert!(results.iter().all(|result| matches!(result, Err(AuthError::UnknownKey(_)))), "{results:?}");
    assert_eq!(jwks.requests.load(Ordering::SeqCst), 1, "one fetch for 50 concurrent unknown kids");
    assert_eq!(metrics.total(names::JWKS_FETCHES), 1);
    assert!(verifier.verify(&known.sign(&claims(json!({})))).await.is_ok(), "the known key from the same fetch");
    assert_eq!(jwks.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_jwks_is_fetched_once_per_back_off() {
    let key = SigningKey::generate("outage-key");
    let jwks = counting_jwks(json!({ "keys": [key.jwk.clone()] })).await;
    jwks.failing.store(true, Ordering::SeqCst);
    let backoff = Duration::from_millis(1_500);
    let (verifier, metrics) = verifier(&jwks, backoff);
    assert!(verifier.warm_up().await.is_err(), "warm-up fails during the outage");

    let token = key.sign(&claims(json!({})));
    let started = std::time::Instant::now();
    let results = futures::future::join_all((0..20).map(|_| {
        let (verifier, token) = (verifier.clone(), token.clone());
        async move { verifier.verify(&token).await }
    }))
    .await;
    assert!(results.iter().all(|result| matches!(result, Err(AuthError::Keys(_)))));
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once, not after a fetch each");
    assert_eq!(jwks.requests.load(Ordering::SeqCst), 1, "only the warm-up fetched");
    assert_eq!(metrics.total(names::JWKS_FETCH_FAILURES), 1);

    // After the back-off, one request fetches again; the keys are back.
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(backoff + Duration::from_millis(100)).await;
    let results = futures::future::join_all((0..20).map(|_| {
        let (verifier, token) = (verifier.clone(), token.clone());
        async move { verifier.verify(&token).await }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(jwks.requests.load(Ordering::SeqCst), 2, "one more fetch after the back-off");
    assert_eq!(metrics.total(names::JWKS_FETCH_FAILURES), 1);
}

#[tokio::test]
async fn serve_reports_its_counters_at_metrics() {
    let app = crate::serve::App::start().await;
    let mut client = app.connect("user-metrics").await;
    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    crate::serve::next_text(&mut client).await;
    client.send(Message::Text("{oops".into())).await.unwrap();
    crate::serve::next_text(&mut client).await;
    app.views_when("user-metrics", |views| views.len() == 1).await;
    let url = format!("http://{}/metrics", app.server.local_addr());
    let expected = [
        "wsledger_messages_total 2",
        "wsledger_rejected_total{code=\"invalid_json\"} 1",
        "wsledger_events_appended_total ",
        "wsledger_records_total ",
        "wsledger_views_written_total ",
        "wsledger_open_connections 1",
    ];
    // The projector counts a batch once its presence is written too, a moment after the view.
    let text = wsledger_testkit::eventually(Duration::from_secs(5), "the projector's counters", || async {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        expected.iter().all(|expected| text.contains(expected)).then_some(text)
    })
    .await;
    for expected in expected {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    app.server.shutdown().await;
}
