//! Faults: DynamoDB going away in the middle of traffic through `serve`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use wsledger::adapters::dynamodb::DynamoDbStore;
use wsledger::adapters::dynamodb::migrate::migrate;
use wsledger::domain::{ConnectionEvent, UserId};
use wsledger::local::{Backend, ServeConfig, Server};
use wsledger::ports::{EventStore, PageRequest, ViewStore};

use crate::dynamodb_local::{DedicatedDynamoDbLocal, unique_tables};

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends one message and returns its reply; a missing reply within 15 s is a hang.
async fn ask(client: &mut Client, body: String) -> Value {
    client.send(Message::Text(body.into())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), client.next()).await.expect("a reply, not a hang");
        match frame {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("the connection ended: {other:?}"),
        }
    }
}

/// Runs voice sessions on every client; returns the acknowledged (user, session, kind).
async fn sessions(
    clients: &mut [(String, Client)],
    round: usize,
    acknowledged: &mut BTreeSet<(String, String, String)>,
) -> usize {
    let mut errors = 0;
    for (user, client) in clients.iter_mut() {
        let session = format!("s-{round}");
        let start = format!(r#"{{"type":"voice_start","data":{{"audioFormat":"webm","sessionId":"{session}"}}}}"#);
        let end = format!(r#"{{"type":"voice_end","data":{{"sessionId":"{session}"}}}}"#);
        for (body, kind) in [(start, "VoiceStarted"), (end, "VoiceEnded")] {
            let reply = ask(client, body).await;
            match reply["type"].as_str() {
                Some("voice_started" | "voice_ended") => {
                    acknowledged.insert((user.clone(), session.clone(), kind.to_owned()));
                }
                Some("error") => {
                    assert_eq!(reply["code"], "unavailable", "{reply}");
                    errors += 1;
                }
                _ => panic!("unexpected reply {reply}"),
            }
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_dynamodb_outage_and_views_converge() {
    let mut local = DedicatedDynamoDbLocal::start();
    let tables = unique_tables();
    migrate(&local.client(), &tables).await.unwrap();
    let store = DynamoDbStore::new(local.client(), tables);
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sweep_interval: Duration::from_secs(3_600),
        ..ServeConfig::default()
    };
    let server = Server::start(config, Backend::DynamoDb { store: store.clone(), streams: local.streams_client() })
        .await
        .unwrap();
    let mut clients = Vec::new();
    for index in 0..4 {
        let user = format!("outage-{index}");
        let url = format!("ws://{}/?userId={user}", server.local_addr());
        clients.push((user, tokio_tungstenite::connect_async(url).await.unwrap().0));
    }
    let mut acknowledged = BTreeSet::new();
    assert_eq!(sessions(&mut clients, 0, &mut acknowledged).await, 0);

    local.kill();
    let errors = sessions(&mut clients, 1, &mut acknowledged).await;
    assert!(errors > 0, "while DynamoDB is down, messages that need the ledger get error frames");
    let pong = ask(&mut clients[0].1, r#"{"type":"ping"}"#.into()).await;
    assert_eq!(pong["type"], "pong", "a ping is still answered");

    local.restart();
    assert_eq!(sessions(&mut clients, 2, &mut acknowledged).await, 0, "service resumes after the restart");
    for (_, client) in clients.iter_mut() {
        client.close(None).await.unwrap();
        while let Some(Ok(_)) = client.next().await {}
    }

    // Every acknowledged message's event is in the ledger.
    let mut stored = BTreeSet::new();
    for (user, _) in &clients {
        let user_id = UserId::parse(user.as_str()).unwrap();
        let history = store.user_history(&user_id, Default::default(), PageRequest::first(1_000)).await.unwrap().items;
        for event in history {
            match &event.event {
                ConnectionEvent::VoiceStarted { session_id, .. } => {
                    stored.insert((user.clone(), session_id.clone(), "VoiceStarted".to_owned()));
                }
                ConnectionEvent::VoiceEnded { session_id } => {
                    stored.insert((user.clone(), session_id.clone(), "VoiceEnded".to_owned()));
                }
                _ => {}
            }
        }
    }
    let missing: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but not stored: {missing:?}");
    assert!(acknowledged.len() >= 16, "{} acknowledged", acknowledged.len());

    // And every view converges (the stream poller recovers from the outage).
    for (user, _) in &clients {
        let user_id = UserId::parse(user.as_str()).unwrap();
        wsledger_testkit::eventually(Duration::from_secs(30), &format!("the view of {user} converging"), || async {
            let views = store.list_by_user(&user_id, None, PageRequest::default()).await.unwrap().items;
            views
                .first()
                .is_some_and(|view| !view.is_connected() && view.session_id.as_deref() == Some("s-2"))
                .then_some(())
        })
        .await;
    }
    server.shutdown().await;
}
