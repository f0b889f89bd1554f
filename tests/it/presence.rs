//! Presence end to end: `serve` (SQLite) with a webhook that checks signatures and
//! the SSE stream; the real projector bootstrap on DynamoDB Local with the webhook
//! and an EventBridge endpoint; the CLI; and bad webhook settings.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsledger::domain::{ConnectionEvent, ConnectionId, DisconnectReason, EventEnvelope, Timestamp, UserId};
use wsledger::local::ServeConfig;
use wsledger::ports::EventStore;
use wsledger::presence::PresenceSettings;
use wsledger_testkit::eventually;

use crate::presence_receiver::{EventBus, Webhook};
use crate::serve::{App, Client, next_text, test_config, urlencode};
use crate::sqlite::temp_db;

/// A user id with characters that need care in URLs, JSON, CSV and keys.
const USER: &str = "ana+ü/#1,\"x\"";
const GRACE: Duration = Duration::from_secs(3);

async fn presence_of(app: &App, user: &str) -> Value {
    let url = format!("http://{}/api/presence?user={}", app.server.local_addr(), urlencode(user));
    serde_json::from_str(&reqwest::get(url).await.unwrap().text().await.unwrap()).unwrap()
}

async fn wait_connections(app: &App, count: u64) {
    eventually(Duration::from_secs(5), &format!("{count} live connection(s) in presence"), || async {
        (presence_of(app, USER).await["connections"] == count).then_some(())
    })
    .await;
}

/// Collects the `presence` events of the SSE stream in the background.
fn follow_stream(app: &App) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let url = format!("http://{}/api/presence/stream", app.server.local_addr());
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut response = reqwest::get(url).await.unwrap();
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let message: String = buffer.drain(..end + 2).collect();
                if message.contains("event: presence") {
                    let data = message.lines().find_map(|line| line.strip_prefix("data: ")).unwrap_or("{}");
                    sink.lock().unwrap().push(serde_json::from_str(data).unwrap());
                }
            }
        }
    });
    seen
}

async fn send(client: &mut Client, message: Value) {
    client.send(Message::text(message.to_string())).await.unwrap();
    next_text(client).await;
}

async fn close(mut client: Client) {
    client.close(None).await.unwrap();
}

#[tokio::test]
async fn serve_tells_presence_with_a_grace_to_a_signed_webhook_and_the_stream() {
    let webhook = Webhook::start("whsec_serve").await;
    let settings = PresenceSettings {
        grace: TimeDelta::from_std(GRACE).unwrap(),
        webhook: Some((webhook.url.clone(), webhook.secret.clone())),
        ..PresenceSettings::default()
    };
    let app = App::start_config(temp_db(), ServeConfig { presence: settings, ..test_config() }).await;
    let stream = follow_stream(&app);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let user = urlencode(USER);

    // Two devices: one user.online.
    let a = app.connect(&user).await;
    assert_eq!(webhook.wait_for(USER, 1, Duration::from_secs(5)).await, ["user.online"]);
    let mut b = app.connect(&user).await;
    wait_connections(&app, 2).await;
    let presence = presence_of(&app, USER).await;
    assert_eq!((presence["userId"].as_str(), presence["status"].as_str()), (Some(USER), Some("ONLINE")));
    assert_eq!(presence["devices"].as_array().unwrap().len(), 2);
    assert_eq!(presence["devices"][0]["userAgent"], "wsledger-test/1.0");

    // Voice start and end on one of them.
    send(&mut b, json!({"type":"voice_start","data":{"audioFormat":"webm","sessionId":"v1"}})).await;
    webhook.wait_for(USER, 2, Duration::from_secs(5)).await;
    assert_eq!(presence_of(&app, USER).await["inVoice"], true);
    send(&mut b, json!({"type":"voice_end","data":{"sessionId":"v1"}})).await;
    webhook.wait_for(USER, 3, Duration::from_secs(5)).await;

    // One device leaving: nothing, even after the grace.
    close(a).await;
    wait_connections(&app, 1).await;
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    assert_eq!(webhook.of(USER).len(), 3, "a device leaving while another stays tells nothing");

    // The last leaving: user.offline, once the grace has passed.
    close(b).await;
    let closed = Instant::now();
    wait_connections(&app, 0).await;
    assert_eq!(webhook.of(USER).len(), 3, "no offline within the grace");
    let kinds = webhook.wait_for(USER, 4, Duration::from_secs(10)).await;
    assert!(
        closed.elapsed() >= GRACE - Duration::from_millis(500),
        "offline came {:?} after the close",
        closed.elapsed()
    );
    assert_eq!(kinds, ["user.online", "user.voice_started", "user.voice_ended", "user.offline"]);
    assert_eq!(webhook.of(USER)[3].2, 0, "offline counts no connection");

    // A reconnect within the grace: nothing at all.
    let c = app.connect(&user).await;
    webhook.wait_for(USER, 5, Duration::from_secs(5)).await;
    close(c).await;
    wait_connections(&app, 0).await;
    let d = app.connect(&user).await;
    wait_connections(&app, 1).await;
    tokio::time::sleep(GRACE + Duration::from_secs(2)).await;
    assert_eq!(webhook.of(USER).len(), 5, "a reconnect within the grace tells neither offline nor online");
    close(d).await;
    webhook.wait_for(USER, 6, Duration::from_secs(10)).await;

    // A webhook that fails, then recovers: the event comes late, not never.
    webhook.received.lock().unwrap().fail = 3;
    let e = app.connect(&user).await;
    eventually(Duration::from_secs(10), "the webhook failing three times", || async {
        (webhook.received.lock().unwrap().failed >= 3).then_some(())
    })
    .await;
    assert_eq!(webhook.of(USER).len(), 6, "{:?}", webhook.of(USER));
    assert_eq!(presence_of(&app, USER).await["status"], "ONLINE", "views and presence go on while the sink fails");
    webhook.wait_for(USER, 7, Duration::from_secs(20)).await;
    close(e).await;
    let kinds = webhook.wait_for(USER, 8, Duration::from_secs(30)).await;
    assert_eq!(
        kinds,
        [
            "user.online",
            "user.voice_started",
            "user.voice_ended",
            "user.offline",
            "user.online",
            "user.offline",
            "user.online",
            "user.offline"
        ]
    );
    let ids: Vec<String> = {
        let received = webhook.received.lock().unwrap();
        assert_eq!(received.bad_signatures, 0);
        let ids: Vec<String> =
            received.events.iter().filter_map(|event| event["eventId"].as_str().map(str::to_owned)).collect();
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 8, "each event once");
        let tries = received.attempted.iter().filter(|event| event["eventId"] == ids[6].as_str()).count();
        assert!(tries >= 4, "the online the webhook refused three times came again with its id ({tries} tries)");
        ids
    };
    assert!(app.server.metrics().count_by("PresenceDeliveryFailures", "webhook") >= 1);
    let streamed: Vec<String> =
        stream.lock().unwrap().iter().filter_map(|event| event["eventId"].as_str().map(str::to_owned)).collect();
    assert_eq!(streamed, ids, "the SSE stream tells the same events");

    let path = app.path.clone();
    app.server.shutdown().await;
    check_cli(&path).await;
}

/// `wsledger presence` in every format, with the user id round-tripping.
async fn check_cli(path: &std::path::Path) {
    let run = |args: Vec<String>| async move {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger")).args(&args).output().await.unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let store = format!("sqlite:{}", path.display());
    let for_user = |format: &str| {
        let args = ["presence", "--store", &store, "--user", USER, "--format", format];
        run(args.iter().map(|arg| (*arg).to_owned()).collect())
    };
    let json: Value = serde_json::from_str(&for_user("json").await).unwrap();
    assert_eq!(json[0]["userId"], USER);
    assert_eq!(json[0]["status"], "OFFLINE");
    assert_eq!(json[0]["connections"], 0);
    assert!(json[0]["lastSeen"].is_string() && json[0]["changedAt"].is_string());
    let ndjson = for_user("ndjson").await;
    assert_eq!(serde_json::from_str::<Value>(ndjson.trim()).unwrap()["userId"], USER);
    let csv = for_user("csv").await;
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("userId,status,connections,devices,inVoice,lastSeen,changedAt"));
    assert!(lines.next().unwrap().starts_with("\"ana+ü/#1,\"\"x\"\"\",OFFLINE,0,[],false,"));
    let table = run(vec!["presence".into(), "--store".into(), store.clone(), "--format".into(), "table".into()]).await;
    assert!(table.contains("0 user(s)"), "nobody is online: {table}");
}

#[tokio::test]
async fn serve_refuses_a_bad_webhook_in_one_line() {
    for (args, says) in [
        (vec!["--presence-webhook", "not a url", "--presence-webhook-secret", "s"], "is not a URL"),
        (vec!["--presence-webhook", "ftp://hooks.example/p", "--presence-webhook-secret", "s"], "must be http://"),
        (vec!["--presence-webhook", "https://hooks.example/p"], "needs a secret"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", &format!("sqlite:{}", temp_db().display())])
            .args(&args)
            .env_remove("PRESENCE_WEBHOOK_URL")
            .env_remove("PRESENCE_WEBHOOK_SECRET")
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(20), output).await.expect("refused at once").unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}

fn event(
    connection: &str,
    request: &str,
    at: Timestamp,
    connected_at: Timestamp,
    event: ConnectionEvent,
) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse(connection).unwrap(),
        UserId::parse(USER).unwrap(),
        request,
        at,
        connected_at,
        event,
    )
}

fn connected(agent: &str) -> ConnectionEvent {
    ConnectionEvent::Connected { ip_address: Some("203.0.113.9".into()), user_agent: Some(agent.into()) }
}

fn disconnected() -> ConnectionEvent {
    ConnectionEvent::Disconnected {
        reason: DisconnectReason::Client,
        status_code: Some(1000),
        detail: None,
        message_count: 0,
    }
}

async fn invoke(runtime: &crate::lambda_runtime_api::RuntimeApi, event: Value) -> Value {
    match runtime.invoke(event).await {
        crate::lambda_runtime_api::Outcome::Response(response) => response,
        crate::lambda_runtime_api::Outcome::Error(error) => panic!("{error}"),
    }
}

async fn invoke_batch(
    runtime: &crate::lambda_runtime_api::RuntimeApi,
    records: &[aws_lambda_events::dynamodb::EventRecord],
) {
    let mut batch = aws_lambda_events::dynamodb::Event::default();
    batch.records = records.to_vec();
    let response = invoke(runtime, serde_json::to_value(&batch).unwrap()).await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
}

#[tokio::test]
async fn the_projector_bootstrap_tells_presence_to_a_webhook_and_eventbridge_at_least_once() {
    let (store, counter) = crate::dynamodb_local::fresh_store().await;
    let webhook = Webhook::start("whsec_lambda").await;
    let bus = EventBus::start().await;
    let start = Timestamp::now().minus(TimeDelta::seconds(2));
    let at = |millis: i64| start.plus(TimeDelta::milliseconds(millis));
    let (phone, laptop) = ("PhoneConnXXXXXX=", "LaptopConnXXXXX=");
    let events = [
        event(phone, "p1", at(0), at(0), connected("phone")),
        event(laptop, "l1", at(10), at(10), connected("laptop")),
        event(
            laptop,
            "l2",
            at(20),
            at(10),
            ConnectionEvent::VoiceStarted { session_id: "v".into(), audio_format: "webm".into() },
        ),
        event(laptop, "l3", at(30), at(10), ConnectionEvent::VoiceEnded { session_id: "v".into() }),
        event(phone, "p2", at(40), at(0), disconnected()),
    ];
    for event in &events {
        store.append(event).await.unwrap();
    }
    let mut records = crate::projector_lambda::stream_records(&store).await;
    assert_eq!(records.len(), events.len());

    let runtime = crate::lambda_runtime_api::RuntimeApi::start().await;
    let mut env = crate::dynamodb_local::bootstrap_env(store.tables());
    env.extend([
        ("PRESENCE_WEBHOOK_URL", webhook.url.clone()),
        ("PRESENCE_WEBHOOK_SECRET", webhook.secret.clone()),
        ("PRESENCE_GRACE_SECS", "2".to_owned()),
        ("PRESENCE_EVENT_BUS", "presence-bus".to_owned()),
        ("AWS_ENDPOINT_URL_EVENTBRIDGE", bus.endpoint.clone()),
    ]);
    let _projector = runtime.spawn(&wsledger_testkit::bootstrap_bin("projector"), &env);

    // Two devices in one batch, then the same batch again: one user.online.
    invoke_batch(&runtime, &records[..2]).await;
    invoke_batch(&runtime, &records[..2]).await;
    assert_eq!(webhook.wait_for(USER, 1, Duration::from_secs(5)).await, ["user.online"]);
    assert_eq!(webhook.of(USER)[0].2, 2);

    // The webhook down (it redirects) while voice starts: the batch still succeeds,
    // the event stays owed; the redelivered batch, once the webhook is back,
    // publishes it with the same id.
    webhook.received.lock().unwrap().redirect = true;
    invoke_batch(&runtime, &records[2..3]).await;
    assert_eq!(webhook.of(USER).len(), 1);
    let attempted_id = webhook.received.lock().unwrap().attempted.last().unwrap()["eventId"].clone();
    assert!(webhook.received.lock().unwrap().redirected >= 1);
    webhook.received.lock().unwrap().redirect = false;
    tokio::time::sleep(Duration::from_secs(6)).await; // past the sink's rest and the record's back-off
    invoke_batch(&runtime, &records[2..3]).await;
    webhook.wait_for(USER, 2, Duration::from_secs(5)).await;
    assert_eq!(webhook.of(USER)[1].1, attempted_id.as_str().unwrap(), "the same id after the failure");

    // Voice ends and the phone leaves: voice_ended only.
    invoke_batch(&runtime, &records[3..5]).await;
    assert_eq!(webhook.wait_for(USER, 3, Duration::from_secs(5)).await[2], "user.voice_ended");
    // The laptop leaves: nothing until the grace has passed, then the scheduled check tells it.
    store.append(&event(laptop, "l4", Timestamp::now(), at(10), disconnected())).await.unwrap();
    records = crate::projector_lambda::stream_records(&store).await;
    assert_eq!(records.len(), events.len() + 1);
    invoke_batch(&runtime, &records[5..]).await;
    let check = json!({ "wsledger": "presence" });
    invoke(&runtime, check.clone()).await;
    assert_eq!(webhook.of(USER).len(), 3, "no offline within the grace");
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let answer = invoke(&runtime, check.clone()).await;
    assert_eq!(answer["events"], 1, "{answer}");
    let kinds = webhook.wait_for(USER, 4, Duration::from_secs(5)).await;
    assert_eq!(kinds, ["user.online", "user.voice_started", "user.voice_ended", "user.offline"]);
    // A whole redelivery afterwards tells nothing new.
    invoke_batch(&runtime, &records).await;
    invoke(&runtime, check).await;
    assert_eq!(webhook.of(USER).len(), 4);
    assert_eq!(webhook.received.lock().unwrap().bad_signatures, 0);

    // EventBridge got the same events, once each, in order.
    let entries = bus.entries.lock().unwrap().clone();
    let kinds: Vec<&str> = entries.iter().map(|entry| entry["DetailType"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["user.online", "user.voice_started", "user.voice_ended", "user.offline"]);
    for (entry, (_, id, _)) in entries.iter().zip(webhook.of(USER)) {
        assert_eq!(entry["Source"], "wsledger.presence");
        assert_eq!(entry["EventBusName"], "presence-bus");
        let detail: Value = serde_json::from_str(entry["Detail"].as_str().unwrap()).unwrap();
        assert_eq!((detail["eventId"].as_str(), detail["userId"].as_str()), (Some(id.as_str()), Some(USER)));
    }

    // Reading presence on DynamoDB: a GetItem for a user, Queries of the index for the online list.
    counter.reset();
    let presence =
        wsledger::presence::read(&store, &UserId::parse(USER).unwrap(), Timestamp::now()).await.unwrap().unwrap();
    assert_eq!((presence.devices.len(), presence.in_voice), (0, false));
    assert!(wsledger::presence::online(&store, Timestamp::now()).await.unwrap().is_empty());
    let requests = counter.snapshot();
    assert_eq!(counter.count("Scan"), 0, "{requests:?}");
    assert_eq!(counter.count("GetItem"), 1, "{requests:?}");
    assert_eq!(counter.count("Query"), wsledger::adapters::dynamodb::LIVE_SHARDS, "{requests:?}");
}

#[tokio::test]
async fn serve_on_dynamodb_tells_presence_through_the_stream_poller() {
    let webhook = Webhook::start("whsec_serve_dynamodb").await;
    let config = ServeConfig {
        presence: PresenceSettings {
            grace: TimeDelta::seconds(1),
            webhook: Some((webhook.url.clone(), webhook.secret.clone())),
            ..PresenceSettings::default()
        },
        stream_checkpoint: None,
        ..test_config()
    };
    let (store, _) = crate::dynamodb_local::fresh_store().await;
    let streams = crate::dynamodb_local::streams_client();
    let server =
        wsledger::local::Server::start(config, wsledger::local::Backend::DynamoDb { store: store.clone(), streams })
            .await
            .unwrap();
    let url = format!("ws://{}/?userId={}", server.local_addr(), urlencode(USER));
    let (mut phone, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let (laptop, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    assert_eq!(webhook.wait_for(USER, 1, Duration::from_secs(15)).await, ["user.online"]);
    let presence = eventually(Duration::from_secs(15), "both devices in presence", || async {
        let presence = wsledger::presence::read(&store, &UserId::parse(USER).unwrap(), Timestamp::now()).await.unwrap();
        presence.filter(|presence| presence.devices.len() == 2)
    })
    .await;
    assert_eq!(presence.user_id.as_str(), USER);
    phone.close(None).await.unwrap();
    drop(laptop);
    let kinds = webhook.wait_for(USER, 2, Duration::from_secs(20)).await;
    assert_eq!(kinds, ["user.online", "user.offline"]);
    assert_eq!(webhook.received.lock().unwrap().bad_signatures, 0);
    server.shutdown().await;
}
