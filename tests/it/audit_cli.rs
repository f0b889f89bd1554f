//! `wsledger history` and `wsledger connections` on both stores: the same traffic
//! answers the same, in every format, and user mistakes are one-line errors.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;
use wsledger::adapters::dynamodb::DynamoDbStore;
use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::{ConnectionEvent, ConnectionId, DisconnectReason, EventEnvelope, Timestamp, UserId};
use wsledger::ports::EventStore;
use wsledger::projection::project_connection;

use crate::dynamodb_local::{self, ACCESS_KEY, REGION, SECRET_KEY};
use crate::sqlite::temp_db;

/// The same traffic for both stores: 3 users, 6 connections, a day boundary.
fn traffic(start: Timestamp) -> Vec<Vec<EventEnvelope>> {
    let mut connections = Vec::new();
    for index in 0..6i64 {
        let connection = format!("AuditConn{index:02}=");
        let user = format!("audit-user-{}", index % 3);
        let opened = start.plus(chrono::TimeDelta::minutes(index * 7));
        let envelope = |request: &str, seconds: i64, event| {
            EventEnvelope::for_request(
                ConnectionId::parse(connection.as_str()).unwrap(),
                UserId::parse(user.as_str()).unwrap(),
                format!("{connection}-{request}"),
                opened.plus(chrono::TimeDelta::seconds(seconds)),
                opened,
                event,
            )
        };
        let mut events = vec![
            envelope(
                "c",
                0,
                ConnectionEvent::Connected {
                    ip_address: Some(format!("198.51.100.{index}")),
                    user_agent: Some("Mozilla/5.0, \"quoted\"".into()),
                },
            ),
            envelope(
                "v",
                5,
                ConnectionEvent::VoiceStarted { session_id: "voice-session-123".into(), audio_format: "webm".into() },
            ),
            envelope(
                "a",
                30,
                ConnectionEvent::Activity { session_id: Some("chat-session-123".into()), message_count: 12 },
            ),
            envelope("e", 65, ConnectionEvent::VoiceEnded { session_id: "voice-session-123".into() }),
        ];
        if index % 2 == 0 {
            events.push(envelope(
                "d",
                90,
                ConnectionEvent::Disconnected {
                    reason: DisconnectReason::Client,
                    status_code: Some(1000),
                    detail: Some("bye".into()),
                    message_count: 0,
                },
            ));
        }
        connections.push(events);
    }
    connections
}

struct Stores {
    sqlite_path: std::path::PathBuf,
    dynamodb: DynamoDbStore,
}

async fn load(start: Timestamp) -> Stores {
    let sqlite_path = temp_db();
    let sqlite = SqliteStore::open(&sqlite_path).unwrap();
    let (dynamodb, _) = dynamodb_local::fresh_store().await;
    for events in traffic(start) {
        for event in &events {
            sqlite.append(event).await.unwrap();
            dynamodb.append(event).await.unwrap();
        }
        project_connection(&sqlite, &sqlite, &events).await.unwrap();
        project_connection(&dynamodb, &dynamodb, &events).await.unwrap();
    }
    Stores { sqlite_path, dynamodb }
}

async fn wsledger(dynamodb: Option<&DynamoDbStore>, sqlite: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsledger"));
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION);
    if let Some(store) = dynamodb {
        command
            .args(["--store", "dynamodb", "--endpoint-url", dynamodb_local::endpoint()])
            .env("EVENTS_TABLE_NAME", &store.tables().events)
            .env("CONNECTIONS_TABLE_NAME", &store.tables().connections);
    }
    if let Some(path) = sqlite {
        command.args(["--store", &format!("sqlite:{}", path.display())]);
    }
    command.output().await.unwrap()
}

fn ok(output: &Output) -> String {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test]
async fn both_stores_answer_every_query_identically() {
    let start = Timestamp::parse_rfc3339("2025-11-24T23:40:00Z").unwrap();
    let stores = load(start).await;
    let queries: Vec<Vec<&str>> = vec![
        vec!["history", "--connection", "AuditConn01=", "--format", "json"],
        vec!["history", "--user", "audit-user-1", "--format", "json"],
        vec![
            "history",
            "--user",
            "audit-user-0",
            "--since",
            "2025-11-24T23:45:00Z",
            "--until",
            "2025-11-25T00:10:00Z",
            "--format",
            "ndjson",
        ],
        vec!["history", "--since", "2025-11-24T23:50:00Z", "--until", "2025-11-25T00:20:00Z", "--format", "csv"],
        vec![
            "history",
            "--since",
            "2025-11-24T23:00:00Z",
            "--until",
            "2025-11-25T01:00:00Z",
            "--type",
            "Connected",
            "--type",
            "disconnected",
            "--format",
            "json",
        ],
        vec![
            "history",
            "--since",
            "2025-11-24T23:00:00Z",
            "--until",
            "2025-11-25T01:00:00Z",
            "--limit",
            "7",
            "--format",
            "csv",
        ],
        vec!["history", "--user", "audit-user-2", "--format", "table"],
        vec!["connections", "--user", "audit-user-0", "--format", "json"],
        vec!["connections", "--user", "audit-user-0", "--status", "connected", "--format", "csv"],
        vec!["connections", "--user", "audit-user-1", "--status", "disconnected", "--format", "ndjson"],
    ];
    for query in queries {
        let sqlite = ok(&wsledger(None, Some(&stores.sqlite_path), &query).await);
        let dynamodb = ok(&wsledger(Some(&stores.dynamodb), None, &query).await);
        assert_eq!(sqlite, dynamodb, "{query:?}");
        assert!(!sqlite.trim().is_empty(), "{query:?}");
    }

    let window = ok(&wsledger(
        None,
        Some(&stores.sqlite_path),
        &["history", "--since", "2025-11-24T23:00:00Z", "--until", "2025-11-25T01:00:00Z", "--format", "json"],
    )
    .await);
    let window: Vec<Value> = serde_json::from_str(&window).unwrap();
    assert_eq!(window.len(), 27, "6 connections x 4 events + 3 disconnects");
    let ids: Vec<&str> = window.iter().map(|event| event["eventId"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in event id order");
    let first = &window[0];
    for attribute in
        ["connectionId", "eventId", "type", "userId", "at", "connectedAt", "requestId", "ipAddress", "userAgent"]
    {
        assert!(first.get(attribute).is_some(), "{attribute} in {first}");
    }
    let csv =
        ok(&wsledger(None, Some(&stores.sqlite_path), &["history", "--connection", "AuditConn00=", "--format", "csv"])
            .await);
    assert!(csv.contains(r#""Mozilla/5.0, ""quoted""""#), "RFC 4180 quoting: {csv}");
    let connections =
        ok(&wsledger(None, Some(&stores.sqlite_path), &["connections", "--user", "audit-user-0", "--format", "json"])
            .await);
    let connections: Vec<Value> = serde_json::from_str(&connections).unwrap();
    assert_eq!(connections.len(), 2);
    for attribute in ["connectionId", "userId", "status", "ipAddress", "userAgent", "createdAt", "lastActivity"] {
        assert!(connections[0].get(attribute).is_some(), "{attribute}");
    }
    let live = ok(&wsledger(None, Some(&stores.sqlite_path), &["connections", "--format", "json"]).await);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&live).unwrap().len(), 3, "every live connection without --user");
}

fn one_line_error(output: &Output) -> String {
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[tokio::test]
async fn mistakes_and_outages_are_one_line_errors() {
    let stores = load(Timestamp::now().minus(chrono::TimeDelta::hours(1))).await;
    let path = stores.sqlite_path.as_path();

    let bad_time =
        one_line_error(&wsledger(None, Some(path), &["history", "--user", "u", "--since", "last tuesday"]).await);
    assert!(bad_time.contains("--since") && bad_time.contains("RFC 3339"), "{bad_time}");
    let bad_type = one_line_error(&wsledger(None, Some(path), &["history", "--user", "u", "--type", "Exploded"]).await);
    assert!(bad_type.contains("--type"), "{bad_type}");
    let no_query = one_line_error(&wsledger(None, Some(path), &["history"]).await);
    assert!(no_query.contains("--connection"), "{no_query}");

    let unknown = ok(&wsledger(None, Some(path), &["history", "--user", "nobody", "--format", "json"]).await);
    assert_eq!(unknown.trim(), "[]", "an unknown user is an empty result");
    let unknown =
        ok(&wsledger(Some(&stores.dynamodb), None, &["history", "--connection", "NoSuchConn=", "--format", "json"])
            .await);
    assert_eq!(unknown.trim(), "[]");

    let missing_file =
        one_line_error(&wsledger(None, Some(Path::new("/nonexistent/wsledger.db")), &["history", "--user", "u"]).await);
    assert!(missing_file.contains("no store at /nonexistent/wsledger.db"), "{missing_file}");

    let mut missing_tables = stores.dynamodb.tables().clone();
    missing_tables.events = "no-such-events-table".into();
    let output = Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["history", "--user", "u", "--store", "dynamodb", "--endpoint-url", dynamodb_local::endpoint()])
        .env("EVENTS_TABLE_NAME", &missing_tables.events)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .output()
        .await
        .unwrap();
    let missing = one_line_error(&output);
    assert!(missing.contains("no-such-events-table") && missing.contains("wsledger migrate"), "{missing}");

    let output = Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["history", "--user", "u", "--store", "dynamodb", "--endpoint-url", "http://127.0.0.1:9"])
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .await
        .unwrap();
    let unreachable = one_line_error(&output);
    assert!(unreachable.contains("DynamoDB at http://127.0.0.1:9 is unreachable"), "{unreachable}");
}
