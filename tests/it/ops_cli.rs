//! `wsledger rebuild`, `send` and `sweep` as a user runs them, against DynamoDB Local
//! and a loopback Management API.

use std::process::Output;

use tokio::process::Command;

use wsledger::adapters::dynamodb::DynamoDbStore;
use wsledger::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, DisconnectReason, EventEnvelope, Timestamp, UserId,
};
use wsledger::ports::{EventStore, ViewStore};
use wsledger::projection::project_connection;

use crate::dynamodb_local::{self, ACCESS_KEY, REGION, SECRET_KEY};
use crate::management_api::ManagementApi;

/// Runs the CLI without blocking the test's runtime (which serves the fake Management API).
async fn wsledger(store: &DynamoDbStore, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(args)
        .args(["--endpoint-url", dynamodb_local::endpoint()])
        .env("EVENTS_TABLE_NAME", &store.tables().events)
        .env("CONNECTIONS_TABLE_NAME", &store.tables().connections)
        .env("OUTBOX_TABLE_NAME", &store.tables().outbox)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env_remove("WEBSOCKET_API_ENDPOINT")
        .env_remove("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI")
        .output()
        .await
        .expect("the wsledger binary runs")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn connection_events(connection: &str, user: &str, start: Timestamp, disconnect: bool) -> Vec<EventEnvelope> {
    let envelope = |request: &str, seconds: i64, event| {
        EventEnvelope::for_request(
            ConnectionId::parse(connection).unwrap(),
            UserId::parse(user).unwrap(),
            request,
            start.plus(chrono::TimeDelta::seconds(seconds)),
            start,
            event,
        )
    };
    let mut events = vec![envelope(
        "c",
        0,
        ConnectionEvent::Connected { ip_address: Some("203.0.113.9".into()), user_agent: Some("cli".into()) },
    )];
    if disconnect {
        events.push(envelope(
            "d",
            20,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::Client,
                status_code: Some(1000),
                detail: None,
                message_count: 0,
            },
        ));
    }
    events
}

#[tokio::test]
async fn rebuild_repairs_views_from_the_ledger_and_is_idempotent() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let start = Timestamp::now().minus(chrono::TimeDelta::minutes(30));
    let mut all = Vec::new();
    for (index, connection) in ["RebuildA", "RebuildB", "RebuildC"].iter().enumerate() {
        let events = connection_events(connection, "user-rebuild", start, index == 0);
        for event in &events {
            store.append(event).await.unwrap();
        }
        all.push(events);
    }
    // A damaged view: connected, from a wrong address, although the ledger says disconnected.
    let mut damaged = ConnectionInfo::fold(&all[0][..1]).unwrap();
    damaged.ip_address = Some("0.0.0.0".into());
    store.put(&damaged, None).await.unwrap();

    let first = stdout(&wsledger(&store, &["rebuild", "--store", "dynamodb", "--since", "1h"]).await);
    assert_eq!(first.trim(), "rebuilt 3 connections from 4 events: 3 written, 0 unchanged");
    for events in &all {
        let stored = store.get(&events[0].connection_id).await.unwrap().unwrap();
        assert_eq!(stored.view, ConnectionInfo::fold(events).unwrap());
    }
    let second = stdout(&wsledger(&store, &["rebuild", "--store", "dynamodb", "--since", "1h"]).await);
    assert_eq!(second.trim(), "rebuilt 3 connections from 4 events: 0 written, 3 unchanged");

    let bad = wsledger(&store, &["rebuild", "--store", "dynamodb", "--since", "last tuesday"]).await;
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.starts_with("error: --since: \"last tuesday\" is not a time"), "{stderr}");
}

#[tokio::test]
async fn send_reaches_live_connections_and_records_the_gone_ones() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let start = Timestamp::now().minus(chrono::TimeDelta::minutes(1));
    for (connection, disconnect) in [("SendLive", false), ("SendGone", false), ("SendClosed", true)] {
        let events = connection_events(connection, "user-send", start, disconnect);
        for event in &events {
            store.append(event).await.unwrap();
        }
        project_connection(&store, &store, &events).await.unwrap();
    }
    let api = ManagementApi::start(&["SendGone"]).await;
    let output = wsledger(
        &store,
        &[
            "send",
            "--store",
            "dynamodb",
            "--user",
            "user-send",
            "--data",
            r#"{ "type": "notice", "text": "hi" }"#,
            "--websocket-endpoint",
            &api.endpoint,
        ],
    )
    .await;
    assert_eq!(stdout(&output).trim(), "delivered 1, gone 1, failed 0 (seq 1)");
    assert_eq!(api.calls.lock().unwrap().posted["SendLive"], vec![br#"{"text":"hi","type":"notice"}"#.to_vec()]);
    let gone =
        store.connection_history(&ConnectionId::parse("SendGone").unwrap(), Default::default()).await.unwrap().items;
    assert!(
        gone.iter()
            .any(|event| matches!(event.event, ConnectionEvent::Disconnected { reason: DisconnectReason::Gone, .. }))
    );

    let bad = wsledger(
        &store,
        &[
            "send",
            "--store",
            "dynamodb",
            "--user",
            "user-send",
            "--data",
            "{oops",
            "--websocket-endpoint",
            &api.endpoint,
        ],
    )
    .await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).starts_with("error: --data is not JSON"));
    let no_endpoint = wsledger(&store, &["send", "--store", "dynamodb", "--user", "user-send", "--data", "{}"]).await;
    assert!(String::from_utf8_lossy(&no_endpoint.stderr).contains("no Management API endpoint"));
}

#[tokio::test]
async fn sweep_from_the_command_line() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let start = Timestamp::now().minus(chrono::TimeDelta::hours(3));
    for connection in ["SweepGone", "SweepAlive"] {
        let events = connection_events(connection, "user-sweep", start, false);
        store.append(&events[0]).await.unwrap();
        project_connection(&store, &store, &events).await.unwrap();
    }
    let api = ManagementApi::start(&["SweepGone"]).await;
    let output = wsledger(&store, &["sweep", "--store", "dynamodb", "--websocket-endpoint", &api.endpoint]).await;
    assert_eq!(stdout(&output).trim(), "checked 2, gone 1, alive 1 (0 with newer activity), errors 0");
}
