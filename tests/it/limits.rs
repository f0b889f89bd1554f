//! `MAX_CONNECTIONS_PER_USER` under a burst: many `$connect`s of one user at once,
//! with no projector running (as in the first second of a burst on AWS), through
//! four real `connection-handler` processes on DynamoDB Local and through `serve`'s
//! real sockets. With limit N, at most N are accepted, whatever the concurrency.

use std::time::Duration;

use futures::future::join_all;
use serde_json::Value;
use wsledger::adapters::dynamodb::{DynamoDbStore, TableNames};
use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::lease::{Lease, UserLeases};
use wsledger::domain::{ConnectionId, Timestamp, UserId};
use wsledger::handler::HandlerConfig;
use wsledger::local::ServeConfig;
use wsledger::policy::Policies;
use wsledger::ports::LeaseStore;

use crate::dynamodb_local::{self, ACCESS_KEY, REGION, SECRET_KEY};
use crate::lambda_runtime_api::{Outcome, RuntimeApi, websocket_event};
use crate::serve::{App, test_config};
use crate::sqlite::temp_db;

const CONNECT: &str = include_str!("../fixtures/apigw/connect.json");
const DISCONNECT: &str = include_str!("../fixtures/apigw/disconnect.json");
/// The fixtures' user (their authorizer context).
const USER: &str = "3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17";
const LIMIT: usize = 3;

async fn handler_processes(store: &DynamoDbStore, count: usize) -> Vec<(RuntimeApi, tokio::process::Child)> {
    let TableNames { events, connections, .. } = store.tables().clone();
    let mut processes = Vec::new();
    for _ in 0..count {
        let runtime = RuntimeApi::start().await;
        let process = runtime.spawn(
            &wsledger_testkit::bootstrap_bin("connection-handler"),
            &[
                ("EVENTS_TABLE_NAME", events.clone()),
                ("CONNECTIONS_TABLE_NAME", connections.clone()),
                ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local::endpoint().to_owned()),
                ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
                ("AWS_REGION", REGION.to_owned()),
                ("MAX_CONNECTIONS_PER_USER", LIMIT.to_string()),
            ],
        );
        runtime.initialized().await;
        processes.push((runtime, process));
    }
    processes
}

fn status(outcome: Outcome) -> i64 {
    match outcome {
        Outcome::Response(response) => response["statusCode"].as_i64().unwrap_or(0),
        Outcome::Error(error) => panic!("the handler failed: {error}"),
    }
}

/// 16 `$connect`s of one user at once over the processes; the connection ids accepted.
async fn burst(processes: &[(RuntimeApi, tokio::process::Child)], now: i64, tag: &str) -> Vec<String> {
    let connects = (0..16).map(|index| {
        let connection_id = format!("Burst{tag}{index:04}=");
        let event: Value = websocket_event(CONNECT, &connection_id, now, now, None);
        let (runtime, _) = &processes[index % processes.len()];
        async move { (connection_id, status(runtime.invoke(event).await)) }
    });
    let answers = join_all(connects).await;
    for (_, status) in &answers {
        assert!(*status == 200 || *status == 429, "a $connect is accepted or refused: {status}");
    }
    answers.into_iter().filter(|(_, status)| *status == 200).map(|(id, _)| id).collect()
}

#[tokio::test]
async fn a_burst_of_one_users_connects_through_four_handler_processes_accepts_at_most_the_limit() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let processes = handler_processes(&store, 4).await;
    let now = Timestamp::now().epoch_millis();
    let accepted = burst(&processes, now, "A").await;
    assert_eq!(accepted.len(), LIMIT, "accepted: {accepted:?}");

    // One leaves: exactly one more of the next burst gets in.
    let disconnect = websocket_event(DISCONNECT, &accepted[0], now, now + 1_000, None);
    assert_eq!(status(processes[0].0.invoke(disconnect).await), 200);
    let accepted_after = burst(&processes, now + 2_000, "B").await;
    assert_eq!(accepted_after.len(), 1, "accepted after one left: {accepted_after:?}");

    // A ghost (a lease past its end, its $disconnect never came) holds no slot.
    let user = UserId::parse(USER).unwrap();
    let (mut leases, version) = store.leases(&user).await.unwrap().expect("the user's leases are stored");
    assert_eq!(leases.live(Timestamp::from_epoch_millis(now + 2_000)).count(), LIMIT);
    for lease in &mut leases.leases {
        lease.live_until = Timestamp::from_epoch_millis(now + 2_500);
    }
    store.put_leases(&leases, Some(version)).await.unwrap();
    let accepted_later = burst(&processes, now + 3_000, "C").await;
    assert_eq!(accepted_later.len(), LIMIT, "ghost leases do not count: {accepted_later:?}");
}

/// `serve`'s configuration with the limit on.
fn limited_config() -> ServeConfig {
    let policies = Policies { max_connections_per_user: LIMIT as u32, ..Policies::default() };
    ServeConfig { handler: HandlerConfig { policies, ..HandlerConfig::default() }, ..test_config() }
}

/// `count` handshakes to `url` at once; the clients accepted (every other one must
/// be refused with 429).
async fn handshake_burst(url: &str, count: usize) -> Vec<crate::serve::Client> {
    let results = join_all((0..count).map(|_| tokio_tungstenite::connect_async(url))).await;
    let mut clients = Vec::new();
    for result in results {
        match result {
            Ok((client, _)) => clients.push(client),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
            Err(other) => panic!("a handshake is accepted or refused with 429: {other}"),
        }
    }
    clients
}

#[tokio::test]
async fn a_burst_of_one_users_handshakes_on_serve_accepts_at_most_the_limit() {
    let app = App::start_config(temp_db(), limited_config()).await;
    let mut clients = handshake_burst(&app.url("?userId=user-burst"), 12).await;
    assert_eq!(clients.len(), LIMIT);

    // One closes; its slot is free again once its $disconnect is handled.
    let mut leaving = clients.pop().unwrap();
    leaving.close(None).await.unwrap();
    drop(leaving);
    let user = UserId::parse("user-burst").unwrap();
    wsledger_testkit::eventually(Duration::from_secs(10), "the lease is released", || async {
        let (leases, _) = LeaseStore::leases(&app.store, &user).await.unwrap().unwrap();
        (leases.live(Timestamp::now()).count() == LIMIT - 1).then_some(())
    })
    .await;
    assert_eq!(handshake_burst(&app.url("?userId=user-burst"), 4).await.len(), 1);
    app.server.shutdown().await;
}

/// The same burst on `serve --store dynamodb` (the leases on DynamoDB Local, the
/// stream poller and the projector running).
#[tokio::test]
async fn a_burst_of_one_users_handshakes_on_serve_with_dynamodb_accepts_at_most_the_limit() {
    use wsledger::local::{Backend, Server};
    let (store, _) = dynamodb_local::fresh_store().await;
    let streams = dynamodb_local::streams_client();
    let backend = Backend::DynamoDb { store: store.clone(), streams };
    let server = Server::start(limited_config(), backend).await.unwrap();
    let url = format!("ws://{}/?userId=user-burst-dynamodb", server.local_addr());
    let clients = handshake_burst(&url, 12).await;
    assert_eq!(clients.len(), LIMIT);
    let user = UserId::parse("user-burst-dynamodb").unwrap();
    let (leases, _) = store.leases(&user).await.unwrap().unwrap();
    assert_eq!(leases.live(Timestamp::now()).count(), LIMIT);
    server.shutdown().await;
}

#[tokio::test]
async fn the_lease_stores_write_conditionally() {
    let (dynamodb, _) = dynamodb_local::fresh_store().await;
    let sqlite = SqliteStore::open(temp_db()).unwrap();
    let memory = wsledger::adapters::memory::MemoryStore::new();
    let stores: [&dyn LeaseStore; 3] = [&dynamodb, &sqlite, &memory];
    for store in stores {
        let user = UserId::parse("user-lease@example.com").unwrap();
        assert!(store.leases(&user).await.unwrap().is_none());
        let mut leases = UserLeases::new(user.clone());
        leases.leases.push(Lease {
            connection_id: ConnectionId::parse("Lease0001=").unwrap(),
            live_until: Timestamp::from_epoch_millis(1_795_734_000_123),
        });
        assert_eq!(store.put_leases(&leases, None).await.unwrap(), 1);
        assert!(matches!(store.put_leases(&leases, None).await, Err(wsledger::ports::StoreError::Conflict(_))));
        assert!(matches!(store.put_leases(&leases, Some(7)).await, Err(wsledger::ports::StoreError::Conflict(_))));
        assert_eq!(store.put_leases(&leases, Some(1)).await.unwrap(), 2);
        assert_eq!(store.leases(&user).await.unwrap(), Some((leases, 2)));
    }
}
