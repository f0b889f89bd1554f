//! Reconnect recovery end to end: `serve` on SQLite and on DynamoDB Local (a gap
//! replayed in order, two devices resuming from their own `lastSeq`, a client that
//! never resumes, a future `lastSeq`, the ledger's `Resumed`), a send racing a
//! resume, an expired window, senders in several processes, and the real
//! connection-handler bootstrap replaying through a Management API.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsledger::adapters::apigw::ManagementApiGateway;
use wsledger::delivery::{Recovery, SendError, SendReport, send_to_user};
use wsledger::domain::{ConnectionEvent, EventKind, Timestamp, UserId};
use wsledger::local::{Backend, ServeConfig, Server};
use wsledger::ports::{EventStore, OutboxStore, PageRequest, ViewStore};
use wsledger_testkit::eventually;

use crate::serve::{Client, management_client, test_config, urlencode, wsledger_send};
use crate::sqlite::temp_db;

const USER: &str = "ana/#1+ü";

trait Stores: EventStore + ViewStore + OutboxStore + Send + Sync {}
impl<S: EventStore + ViewStore + OutboxStore + Send + Sync> Stores for S {}

/// `serve` with a store the test also reads, and a sender through its `@connections`.
struct Harness {
    server: Server,
    store: Arc<dyn Stores>,
    gateway: ManagementApiGateway,
    window: chrono::TimeDelta,
}

impl Harness {
    async fn start(backend: Backend, store: Arc<dyn Stores>, window_secs: i64) -> Self {
        let mut config = ServeConfig { ..test_config() };
        config.handler.recovery_window = chrono::TimeDelta::seconds(window_secs);
        let server = Server::start(config, backend).await.unwrap();
        let gateway =
            ManagementApiGateway::from_client(management_client(&format!("http://{}/local", server.local_addr())));
        Self { server, store, gateway, window: chrono::TimeDelta::seconds(window_secs) }
    }

    async fn sqlite(window_secs: i64) -> Self {
        let store = wsledger::adapters::sqlite::SqliteStore::open(temp_db()).unwrap();
        Self::start(Backend::Sqlite(store.clone()), Arc::new(store), window_secs).await
    }

    async fn dynamodb(window_secs: i64) -> Self {
        let (store, _) = crate::dynamodb_local::fresh_store().await;
        let streams = crate::dynamodb_local::streams_client();
        Self::start(Backend::DynamoDb { store: store.clone(), streams }, Arc::new(store), window_secs).await
    }

    async fn connect(&self) -> Client {
        let url = format!("ws://{}/?userId={}", self.server.local_addr(), urlencode(USER));
        tokio_tungstenite::connect_async(url).await.expect("the handshake succeeds").0
    }

    /// Waits until the user has `count` live connections in the views (a send
    /// reaches the connections the views know, as today).
    async fn live(&self, count: usize) {
        let user = UserId::parse(USER).unwrap();
        eventually(Duration::from_secs(10), &format!("{count} live view(s)"), || async {
            let views = self
                .store
                .list_by_user(&user, Some(wsledger::domain::ConnectionStatus::Connected), PageRequest::default())
                .await
                .unwrap();
            (views.items.len() == count).then_some(())
        })
        .await;
    }

    async fn send(&self, n: u64) -> SendReport {
        let recovery = Recovery { outbox: self.store.as_ref(), window: self.window, metrics: None };
        let data = json!({ "n": n }).to_string();
        let user = UserId::parse(USER).unwrap();
        send_to_user(
            self.store.as_ref(),
            self.store.as_ref(),
            &self.gateway,
            &user,
            data.as_bytes(),
            90,
            Timestamp::now(),
            Some(recovery),
        )
        .await
        .unwrap()
    }
}

async fn next(client: &mut Client) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("a frame within 10 s") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("a JSON frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn resume(client: &mut Client, last_seq: u64) {
    client.send(Message::text(json!({"type":"resume","data":{"lastSeq": last_seq}}).to_string())).await.unwrap();
}

fn delivery(seq: u64) -> Value {
    json!({ "type": "delivery", "seq": seq, "data": { "n": seq } })
}

async fn a_gap_is_replayed_in_order_and_clients_that_never_resume_see_todays_messages(harness: Harness) {
    let mut plain = harness.connect().await;
    let mut phone = harness.connect().await;
    resume(&mut phone, 0).await;
    assert_eq!(next(&mut phone).await, json!({"type":"resumed","data":{"lastSeq":0,"replayed":0}}));
    harness.live(2).await;
    assert_eq!(harness.send(1).await.seq, Some(1));
    assert_eq!(next(&mut phone).await, delivery(1));
    assert_eq!(next(&mut plain).await, json!({"n": 1}), "exactly today's message");

    // The phone drops (a tunnel); two messages go by; it comes back on a new connection.
    phone.close(None).await.unwrap();
    harness.live(1).await;
    harness.send(2).await;
    harness.send(3).await;
    let mut phone = harness.connect().await;
    resume(&mut phone, 1).await;
    assert_eq!(next(&mut phone).await, json!({"type":"resumed","data":{"lastSeq":1,"replayed":2}}));
    assert_eq!(next(&mut phone).await, delivery(2));
    assert_eq!(next(&mut phone).await, delivery(3));
    harness.send(4).await;
    assert_eq!(next(&mut phone).await, delivery(4), "then live deliveries");

    // A second device resumes from its own lastSeq.
    let mut laptop = harness.connect().await;
    resume(&mut laptop, 3).await;
    assert_eq!(next(&mut laptop).await, json!({"type":"resumed","data":{"lastSeq":3,"replayed":1}}));
    assert_eq!(next(&mut laptop).await, delivery(4));

    // A lastSeq from the future: an error frame, nothing changes.
    resume(&mut laptop, 99).await;
    let error = next(&mut laptop).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "invalid_field");
    assert!(error["message"].as_str().unwrap().contains("ahead"), "{error}");
    harness.send(5).await;
    assert_eq!(next(&mut phone).await, delivery(5));
    assert_eq!(next(&mut laptop).await, delivery(5), "still live");
    for n in 2..=5 {
        assert_eq!(
            next(&mut plain).await,
            json!({"n": n}),
            "the client that never resumed gets every message as today"
        );
    }

    // The ledger has each resume: what was asked, how many were replayed.
    let user = UserId::parse(USER).unwrap();
    let resumes = eventually(Duration::from_secs(5), "the resumes in the history", || async {
        let history =
            harness.store.user_history(&user, Default::default(), PageRequest::first(1_000)).await.unwrap().items;
        let resumes: Vec<(u64, u64)> = history
            .iter()
            .filter_map(|event| match &event.event {
                ConnectionEvent::Resumed { last_seq, replayed, failure: None } => Some((*last_seq, *replayed)),
                _ => None,
            })
            .collect();
        (resumes.len() == 3).then_some(resumes)
    })
    .await;
    // `replayed` counts what the resume posted: the `resumed` frame's count, plus a
    // message sent before the resume had marked its connection live (the next send
    // may race that mark), which the resume delivers itself.
    let mut resumes: Vec<(u64, u64)> = resumes;
    resumes.sort_unstable();
    let asked: Vec<u64> = resumes.iter().map(|(last_seq, _)| *last_seq).collect();
    assert_eq!(asked, [0, 1, 3], "{resumes:?}");
    for ((_, replayed), framed) in resumes.iter().zip([0, 2, 1]) {
        assert!((framed..=framed + 1).contains(replayed), "{resumes:?}");
    }
    assert!(harness.server.metrics().total("MessagesReplayed") >= 3);
    harness.server.shutdown().await;
}

#[tokio::test]
async fn serve_on_sqlite_replays_a_gap_in_order() {
    a_gap_is_replayed_in_order_and_clients_that_never_resume_see_todays_messages(Harness::sqlite(120).await).await;
}

#[tokio::test]
async fn serve_on_dynamodb_replays_a_gap_in_order() {
    a_gap_is_replayed_in_order_and_clients_that_never_resume_see_todays_messages(Harness::dynamodb(120).await).await;
}

#[tokio::test]
async fn a_send_racing_a_resume_loses_nothing_and_repeats_nothing() {
    let harness = Arc::new(Harness::sqlite(120).await);
    let mut anchor = harness.connect().await;
    resume(&mut anchor, 0).await;
    next(&mut anchor).await;
    harness.live(1).await;
    const MESSAGES: u64 = 150;
    let sender = {
        let harness = harness.clone();
        tokio::spawn(async move {
            for n in 1..=MESSAGES {
                harness.send(n).await;
            }
        })
    };
    // Each client reads as a browser does, while the messages come.
    let anchored = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.last() != Some(&MESSAGES) {
            match tokio::time::timeout(Duration::from_secs(9), next(&mut anchor)).await {
                Ok(frame) => seen.push(frame["seq"].as_u64().unwrap_or_else(|| panic!("anchor got {frame}"))),
                Err(_) => panic!("the anchor stalled after {seen:?}"),
            }
        }
        seen
    });
    // Resume in the middle of the stream of sends, from nothing.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut late = harness.connect().await;
    resume(&mut late, 0).await;
    let mut seqs = Vec::new();
    let mut replayed = None;
    while seqs.last() != Some(&MESSAGES) {
        let frame = match tokio::time::timeout(Duration::from_secs(9), next(&mut late)).await {
            Ok(frame) => frame,
            Err(_) => panic!("stalled after {seqs:?} (replayed {replayed:?})"),
        };
        match frame["type"].as_str() {
            Some("resumed") => replayed = Some(frame["data"]["replayed"].as_u64().unwrap()),
            Some("delivery") => {
                assert!(replayed.is_some(), "deliveries come after `resumed`");
                assert_eq!(frame["data"]["n"], frame["seq"]);
                seqs.push(frame["seq"].as_u64().unwrap());
            }
            _ => {} // messages posted before the resume marked the connection: a resuming client ignores them
        }
    }
    sender.await.unwrap();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<u64>>(), "every message once, in order");
    let replayed = replayed.unwrap();
    assert!(replayed > 0 && replayed < MESSAGES, "the resume came in the middle ({replayed} replayed)");
    assert_eq!(anchored.await.unwrap(), (1..=MESSAGES).collect::<Vec<u64>>());
}

#[tokio::test]
async fn an_expired_window_fails_with_the_oldest_kept_and_is_recorded() {
    let harness = Harness::sqlite(1).await;
    harness.send(1).await;
    harness.send(2).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    harness.send(3).await;
    let mut client = harness.connect().await;
    resume(&mut client, 0).await;
    assert_eq!(next(&mut client).await, json!({"type":"resume_failed","data":{"reason":"expired","oldestSeq":3}}));
    resume(&mut client, 2).await;
    assert_eq!(next(&mut client).await, json!({"type":"resumed","data":{"lastSeq":2,"replayed":1}}));
    assert_eq!(next(&mut client).await, delivery(3));
    assert_eq!(harness.server.metrics().count_by("ResumeFailures", "expired"), 1);
    let user = UserId::parse(USER).unwrap();
    eventually(Duration::from_secs(5), "the failed resume in the history", || async {
        let history = harness.store.user_history(&user, Default::default(), PageRequest::first(100)).await.unwrap().items;
        history
            .iter()
            .any(|event| {
                event.kind() == EventKind::Resumed
                    && matches!(&event.event, ConnectionEvent::Resumed { failure: Some(reason), .. } if reason == "expired")
            })
            .then_some(())
    })
    .await;
    harness.server.shutdown().await;
}

#[tokio::test]
async fn a_message_that_cannot_be_kept_is_refused_and_numbers_nothing() {
    let (store, counter) = crate::dynamodb_local::fresh_store().await;
    // The user has no live connection: nothing is posted, whatever the endpoint.
    let gateway = ManagementApiGateway::from_client(management_client("http://127.0.0.1:9/local"));
    let user = UserId::parse(USER).unwrap();
    let recovery = Recovery { outbox: &store, window: chrono::TimeDelta::seconds(120), metrics: None };
    let send = |data: Vec<u8>| {
        let (store, gateway, user) = (&store, &gateway, &user);
        async move { send_to_user(store, store, gateway, user, &data, 90, Timestamp::now(), Some(recovery)).await }
    };
    let too_large = json!({ "text": "x".repeat(wsledger::domain::protocol::MAX_MESSAGE_BYTES) }).to_string();
    for (data, why) in [(too_large.into_bytes(), "too large"), (vec![0xff, 0xfe, b'{'], "UTF-8")] {
        counter.reset();
        match send(data).await {
            Err(SendError::Refused(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("refused because {why}, not {other:?}"),
        }
        assert!(counter.snapshot().is_empty(), "a refused message costs no request: {:?}", counter.snapshot());
    }
    assert!(store.head(&user).await.unwrap().is_none(), "nothing was numbered");
    let report = send(br#"{"n":1}"#.to_vec()).await.unwrap();
    assert_eq!(report.seq, Some(1), "the next message is the first");
}

#[tokio::test]
async fn senders_in_several_processes_number_without_gaps_or_repeats() {
    let path = temp_db();
    let store = wsledger::adapters::sqlite::SqliteStore::open(&path).unwrap();
    let harness = Harness::start(Backend::Sqlite(store.clone()), Arc::new(store), 120).await;
    let mut client = harness.connect().await;
    resume(&mut client, 0).await;
    next(&mut client).await;
    let endpoint = format!("http://{}/local", harness.server.local_addr());
    let processes = (0..4).map(|process| {
        let (path, endpoint) = (path.clone(), endpoint.clone());
        async move {
            let mut seqs = Vec::new();
            for index in 0..5 {
                let data = json!({ "process": process, "index": index }).to_string();
                let output = wsledger_send(&path, &endpoint, USER, &data).await;
                let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
                assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
                let seq = stdout
                    .trim()
                    .rsplit_once("(seq ")
                    .and_then(|(_, seq)| seq.trim_end_matches(')').parse::<u64>().ok());
                seqs.push(seq.unwrap_or_else(|| panic!("no seq in {stdout:?}")));
            }
            seqs
        }
    });
    let mut seqs: Vec<u64> = futures::future::join_all(processes).await.into_iter().flatten().collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "20 sends from 4 processes: 1 to 20, each once");
    let mut delivered = BTreeSet::new();
    while delivered.len() < 20 {
        let frame = next(&mut client).await;
        assert_eq!(frame["type"], "delivery");
        assert!(delivered.insert(frame["seq"].as_u64().unwrap()), "no repeat: {frame}");
    }
    harness.server.shutdown().await;
}

#[tokio::test]
async fn the_handler_bootstrap_replays_through_the_management_api() {
    use crate::lambda_runtime_api::{Outcome, RuntimeApi, websocket_event};
    let (store, _) = crate::dynamodb_local::fresh_store().await;
    let api = crate::management_api::ManagementApi::start(&[]).await;
    // The fixtures' authorizer context names this user.
    let user = UserId::parse("3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17").unwrap();
    let window = chrono::TimeDelta::seconds(120);
    for n in 1..=3 {
        wsledger::recovery::keep(&store, &user, &json!({ "n": n }).to_string(), Timestamp::now(), window)
            .await
            .unwrap();
    }
    let runtime = RuntimeApi::start().await;
    let mut env = crate::dynamodb_local::bootstrap_env(store.tables());
    env.push(("WEBSOCKET_API_ENDPOINT", api.endpoint.clone()));
    let _handler = runtime.spawn(&wsledger_testkit::bootstrap_bin("connection-handler"), &env);
    let default = include_str!("../fixtures/apigw/default.json");
    let connected_at = Timestamp::now().epoch_millis() - 1_000;
    let invoke = |body: &str| {
        let event =
            websocket_event(default, "ResumingLambda1=", connected_at, Timestamp::now().epoch_millis(), Some(body));
        async {
            match runtime.invoke(event).await {
                Outcome::Response(response) => response,
                Outcome::Error(error) => panic!("{error}"),
            }
        }
    };
    let response = invoke(r#"{"type":"resume","data":{"lastSeq":1}}"#).await;
    assert_eq!(response["statusCode"], 200, "{response}");
    assert!(response.get("body").is_none_or(Value::is_null), "no route response: the frames went through @connections");
    let posted: Vec<Value> = api.calls.lock().unwrap().posted["ResumingLambda1="]
        .iter()
        .map(|body| serde_json::from_slice(body).unwrap())
        .collect();
    assert_eq!(posted, vec![json!({"type":"resumed","data":{"lastSeq":1,"replayed":2}}), delivery(2), delivery(3)]);
    let future = invoke(r#"{"type":"resume","data":{"lastSeq":7}}"#).await;
    let frame: Value = serde_json::from_str(future["body"].as_str().unwrap()).unwrap();
    assert_eq!((frame["type"].as_str(), frame["code"].as_str()), (Some("error"), Some("invalid_field")));
    assert_eq!(api.calls.lock().unwrap().posted["ResumingLambda1="].len(), 3, "a future lastSeq changes nothing");
    let history = store
        .connection_history(&wsledger::domain::ConnectionId::parse("ResumingLambda1=").unwrap(), PageRequest::default())
        .await
        .unwrap()
        .items;
    assert!(
        history.iter().any(|event| event.event == ConnectionEvent::Resumed { last_seq: 1, replayed: 2, failure: None }),
        "{history:?}"
    );
}
