//! Usage and policies from the outside: the real projector bootstrap on DynamoDB
//! Local, the `wsledger usage` binary on both stores, and `serve` with real sockets.

use std::time::Duration;

use aws_lambda_events::dynamodb::Event;
use futures::SinkExt;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use wsledger::adapters::dynamodb::DynamoDbStore;
use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::usage::ConnectionUsage;
use wsledger::domain::{
    ConnectionEvent, ConnectionId, ConnectionStatus, DisconnectReason, EventEnvelope, EventKind, Timestamp, UserId,
};
use wsledger::handler::HandlerConfig;
use wsledger::local::ServeConfig;
use wsledger::policy::Policies;
use wsledger::ports::{EventStore, PageRequest};

use crate::dynamodb_local;
use crate::lambda_runtime_api::{Outcome, RuntimeApi};
use crate::serve::{App, next_text, test_config};
use crate::sqlite::temp_db;

/// 2026-11-26T23:59:00Z: the session crosses midnight.
const START: i64 = 1_795_737_540_000;

/// A session with known times: connected 23:59:00, voice 23:59:10 to 00:00:10,
/// 5 messages at 23:59:20 and 3 more counted by the end at 00:00:40.
fn session(connection: &str) -> Vec<EventEnvelope> {
    let event = |request: &str, offset_s: i64, payload: ConnectionEvent| {
        EventEnvelope::for_request(
            ConnectionId::parse(connection).unwrap(),
            UserId::parse("user-usage").unwrap(),
            request,
            Timestamp::from_epoch_millis(START + offset_s * 1_000),
            Timestamp::from_epoch_millis(START),
            payload,
        )
    };
    vec![
        event("c", 0, ConnectionEvent::Connected { ip_address: None, user_agent: None }),
        event("s", 10, ConnectionEvent::VoiceStarted { session_id: "v".into(), audio_format: "webm".into() }),
        event("a", 20, ConnectionEvent::Activity { session_id: Some("v".into()), message_count: 5 }),
        event("e", 70, ConnectionEvent::VoiceEnded { session_id: "v".into() }),
        event(
            "d",
            100,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Client,
                status_code: Some(1000),
                detail: None,
                message_count: 3,
            },
        ),
    ]
}

/// What `wsledger usage --by day` must print for [`session`].
fn expected_by_day() -> Value {
    json!([
        { "userId": "user-usage", "day": "2026-11-26", "connections": 1, "connectedSeconds": 60.0,
          "messages": 5, "voiceSessions": 1, "voiceSeconds": 50.0 },
        { "userId": "user-usage", "day": "2026-11-27", "connections": 0, "connectedSeconds": 40.0,
          "messages": 3, "voiceSessions": 0, "voiceSeconds": 10.0 },
    ])
}

async fn usage_cli(store_args: &[&str], envs: &[(&str, String)], args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .arg("usage")
        .args(store_args)
        .args(args)
        .args(["--format", "json"])
        .envs(envs.iter().map(|(name, value)| (*name, value.as_str())))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn dynamodb_env(store: &DynamoDbStore) -> Vec<(&'static str, String)> {
    dynamodb_local::bootstrap_env(store.tables())
}

#[tokio::test]
async fn shuffled_and_duplicated_records_give_the_session_usage_on_both_stores() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let events = session("conn-usage-1");
    for event in &events {
        store.append(event).await.unwrap();
    }
    let records = crate::projector_lambda::stream_records(&store).await;
    assert_eq!(records.len(), events.len());
    // Newest first, with the first three delivered again in the middle and at the end.
    let mut batch: Vec<_> = records.iter().rev().cloned().collect();
    batch.insert(2, records[0].clone());
    batch.extend(records[..3].iter().cloned());
    let runtime = RuntimeApi::start().await;
    let _projector = runtime.spawn(&wsledger_testkit::bootstrap_bin("projector"), &dynamodb_env(&store));
    for part in [&batch[..3], &batch[3..]] {
        let mut lambda_event = Event::default();
        lambda_event.records = part.to_vec();
        let Outcome::Response(response) = runtime.invoke(serde_json::to_value(&lambda_event).unwrap()).await else {
            panic!("the projector failed")
        };
        assert_eq!(response["batchItemFailures"], json!([]));
    }
    let dynamodb_args = ["--store", "dynamodb", "--endpoint-url", dynamodb_local::endpoint()];
    let env = dynamodb_env(&store);
    let by_day = usage_cli(&dynamodb_args, &env, &["--user", "user-usage", "--by", "day"]).await;
    assert_eq!(by_day, expected_by_day());
    let total = usage_cli(&dynamodb_args, &env, &["--user", "user-usage"]).await;
    assert_eq!(
        total,
        json!([{ "userId": "user-usage", "connections": 1, "connectedSeconds": 100.0, "messages": 8,
                 "voiceSessions": 1, "voiceSeconds": 60.0 }])
    );
    // Every user in a window, through the time index.
    let window =
        usage_cli(&dynamodb_args, &env, &["--since", "2026-11-26T00:00:00Z", "--until", "2026-11-28T00:00:00Z"]).await;
    assert_eq!(window, total);

    // The same session on the embedded store, projected by serve's feed code.
    let path = temp_db();
    let sqlite = SqliteStore::open(&path).unwrap();
    for event in events.iter().rev() {
        sqlite.append(event).await.unwrap();
    }
    wsledger::local::feed::project_pending(&sqlite, &sqlite, None, &wsledger::metrics::Metrics::new()).await.unwrap();
    let sqlite_args = ["--store".to_owned(), format!("sqlite:{}", path.display())];
    let sqlite_args: Vec<&str> = sqlite_args.iter().map(String::as_str).collect();
    assert_eq!(usage_cli(&sqlite_args, &[], &["--user", "user-usage", "--by", "day"]).await, expected_by_day());
}

fn policy_config(policies: Policies) -> ServeConfig {
    ServeConfig { handler: HandlerConfig { policies, ..HandlerConfig::default() }, ..test_config() }
}

#[tokio::test]
async fn a_users_connection_beyond_the_limit_is_refused_and_recorded_but_ghosts_do_not_count() {
    let app =
        App::start_config(temp_db(), policy_config(Policies { max_connections_per_user: 2, ..Policies::default() }))
            .await;
    // A ghost: a view left CONNECTED three hours ago, long past its liveUntil.
    let ghost_at = Timestamp::now().minus(chrono::TimeDelta::hours(3));
    let ghost = EventEnvelope::for_request(
        ConnectionId::parse("GhostConn00001=").unwrap(),
        UserId::parse("user-limited").unwrap(),
        "ghost",
        ghost_at,
        ghost_at,
        ConnectionEvent::Connected { ip_address: None, user_agent: None },
    );
    app.store.append(&ghost).await.unwrap();
    app.views_when("user-limited", |views| views.len() == 1).await;

    let _first = app.connect("user-limited").await;
    let _second = app.connect("user-limited").await;
    app.views_when("user-limited", |views| views.iter().filter(|view| view.is_connected()).count() == 3).await;
    match tokio_tungstenite::connect_async(app.url("?userId=user-limited")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected 429, got {other:?}"),
    }
    let views = app
        .views_when("user-limited", |views| {
            views.iter().any(|view| view.disconnect_reason == Some(DisconnectReason::Refused))
        })
        .await;
    let refused = views.iter().find(|view| view.disconnect_reason == Some(DisconnectReason::Refused)).unwrap();
    assert_eq!(refused.status, ConnectionStatus::Disconnected);
    assert!(refused.disconnect_detail.as_deref().unwrap_or_default().contains("MAX_CONNECTIONS_PER_USER=2"));
    let history = app.store.connection_history(&refused.connection_id, PageRequest::default()).await.unwrap().items;
    assert_eq!(
        history.iter().map(|event| event.kind()).collect::<Vec<_>>(),
        [EventKind::Connected, EventKind::Disconnected]
    );
    let metrics =
        reqwest::get(format!("http://{}/metrics", app.server.local_addr())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("wsledger_connects_refused_total{policy=\"MAX_CONNECTIONS_PER_USER\"} 1"), "{metrics}");
    app.server.shutdown().await;
}

#[tokio::test]
async fn fast_clients_are_rate_limited_and_voice_events_are_capped() {
    let policies = Policies { max_messages_per_second: 5, ..Policies::default() };
    let app = App::start_config(temp_db(), policy_config(policies)).await;
    let mut client = app.connect("user-fast").await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
        let reply = next_text(&mut client).await;
        codes.push(reply["code"].as_str().unwrap_or(reply["type"].as_str().unwrap()).to_owned());
    }
    let limited = codes.iter().filter(|code| *code == "rate_limited").count();
    assert!(limited > 0 && codes[..5].iter().all(|code| code == "pong"), "{codes:?}");
    app.server.shutdown().await;

    // The default cap on voice events: 10,000 voice_starts write at most the cap.
    let app = App::start().await;
    let mut client = app.connect("user-voice-flood").await;
    let voice_start = r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"flood"}}"#;
    let started = std::time::Instant::now();
    let mut refused = 0;
    for round in 0..100 {
        for _ in 0..100 {
            client.feed(Message::Text(voice_start.into())).await.unwrap();
        }
        client.flush().await.unwrap();
        for _ in 0..100 {
            let reply = next_text(&mut client).await;
            refused += usize::from(reply["code"] == "rate_limited");
        }
        let _ = round;
    }
    let views = app.views_when("user-voice-flood", |views| views.len() == 1).await;
    let history = app.store.connection_history(&views[0].connection_id, PageRequest::first(100_000)).await.unwrap();
    let written = history.items.iter().filter(|event| event.kind() == EventKind::VoiceStarted).count();
    // serve spaces a connection's requests at least 1 ms apart: 10,000 span at least 10 s.
    let span_s = (history.items.last().unwrap().at.epoch_millis() - history.items[0].at.epoch_millis()) / 1_000;
    eprintln!("10,000 voice_starts in {:?}: {written} written, {refused} refused", started.elapsed());
    assert!(written as i64 <= 30 + span_s / 2 + 1, "{written} written over {span_s} s");
    assert_eq!(written + refused, 10_000);
    app.server.shutdown().await;
}

#[tokio::test]
async fn voice_beyond_the_daily_quota_is_refused_but_a_running_session_is_not_cut() {
    let policies = Policies { max_voice_seconds_per_day: 1, ..Policies::default() };
    let app = App::start_config(temp_db(), policy_config(policies)).await;
    let mut client = app.connect("user-quota").await;
    let start = |session: &str| {
        Message::Text(
            format!(r#"{{"type":"voice_start","data":{{"audioFormat":"webm","sessionId":"{session}"}}}}"#).into(),
        )
    };
    client.send(start("first")).await.unwrap();
    assert_eq!(next_text(&mut client).await["type"], "voice_started");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    // Still running past the quota: its audio is still taken.
    client
        .send(Message::Text(r#"{"type":"voice_data","data":{"audioData":"AAAA","sessionId":"first"}}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await["type"], "voice_data_received");
    client.send(Message::Text(r#"{"type":"voice_end","data":{"sessionId":"first"}}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut client).await["type"], "voice_ended");
    app.views_when("user-quota", |views| views[0].usage.as_ref().is_some_and(|usage| usage.total().voice_ms >= 1_000))
        .await;
    client.send(start("second")).await.unwrap();
    let refused = next_text(&mut client).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("quota_exceeded")),
        "{refused}"
    );
    app.server.shutdown().await;
}

/// A real session through `serve`: `wsledger usage` on the SQLite file equals a
/// recomputation from the connection's ledger.
#[tokio::test]
async fn a_session_through_serve_has_the_usage_of_its_ledger() {
    let app = App::start().await;
    let mut client = app.connect("user-serve-usage").await;
    for message in [
        r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"v"}}"#,
        r#"{"type":"text_message","data":{"content":"hi","sessionId":"v"}}"#,
        r#"{"type":"voice_end","data":{"sessionId":"v"}}"#,
        r#"{"type":"ping"}"#,
    ] {
        client.send(Message::Text(message.into())).await.unwrap();
        next_text(&mut client).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close(None).await.unwrap();
    let views =
        app.views_when("user-serve-usage", |views| views.first().is_some_and(|view| !view.is_connected())).await;
    let history = app.store.connection_history(&views[0].connection_id, PageRequest::default()).await.unwrap().items;
    let expected = ConnectionUsage::of(&history).unwrap().total();
    assert_eq!(expected.messages, 4, "all four messages, the last ones with the Disconnected");
    let path = app.path.display().to_string();
    app.server.shutdown().await;
    let rows = usage_cli(&["--store", &format!("sqlite:{path}")], &[], &["--user", "user-serve-usage"]).await;
    assert_eq!(rows[0]["messages"], expected.messages);
    assert_eq!(rows[0]["voiceSessions"], 1);
    assert_eq!(rows[0]["connectedSeconds"], expected.connected_ms as f64 / 1_000.0);
    assert_eq!(rows[0]["voiceSeconds"], expected.voice_ms as f64 / 1_000.0);
}
