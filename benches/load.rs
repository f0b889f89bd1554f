//! A load harness: N WebSocket clients with a realistic mix against `serve`, on
//! SQLite and on DynamoDB Local (with the stream poller).
//!
//! Each client connects, runs a voice session of 20 chunks of 23 KiB audio (about
//! 31 KB frames, under API Gateway's 32 KB), sends 5 text messages and 10 pings,
//! ends the session and disconnects; every message waits for its reply. Reported:
//! messages per second, round trip p50/p99, ledger and view writes per 1,000
//! messages (DynamoDB requests counted by operation), projection lag p50/p99
//! (handshake done, with `Connected` appended, until the view is readable), and the
//! floor: one PutItem round trip on the same DynamoDB Local.
//!
//! `cargo bench --bench load` (50 clients); `cargo test` runs 4.

use wsledger_testkit::dynamodb_local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use wsledger::adapters::dynamodb::RequestCounter;
use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::UserId;
use wsledger::local::{Backend, ServeConfig, Server};
use wsledger::ports::{EventStore, PageRequest, ViewStore};

const VOICE_CHUNKS: usize = 20;
const TEXTS: usize = 5;
const PINGS: usize = 10;
/// voice_start, chunks, texts, pings, voice_end.
const MESSAGES_PER_CLIENT: usize = 1 + VOICE_CHUNKS + TEXTS + PINGS + 1;

#[derive(Default)]
struct Samples {
    round_trips: Vec<Duration>,
    lags: Vec<Duration>,
}

fn percentile(values: &mut [Duration], fraction: f64) -> f64 {
    values.sort();
    if values.is_empty() {
        return 0.0;
    }
    values[((values.len() - 1) as f64 * fraction).round() as usize].as_secs_f64() * 1e3
}

async fn client(address: SocketAddr, user: String, views: Arc<dyn ViewStore>, samples: Arc<Mutex<Samples>>) {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/?userId={user}")).await.unwrap();
    let connected = Instant::now();
    // Projection lag: poll until the view of this user's connection exists.
    let user_id = UserId::parse(user.as_str()).unwrap();
    let lag_views = views.clone();
    let lag = tokio::spawn(async move {
        loop {
            let listed = lag_views.list_by_user(&user_id, None, PageRequest::first(1)).await.unwrap();
            if !listed.items.is_empty() {
                return connected.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let audio = base64::engine::general_purpose::STANDARD.encode(vec![0x5au8; 23 * 1024]);
    let mut messages = vec![r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-1"}}"#.to_owned()];
    for _ in 0..VOICE_CHUNKS {
        messages.push(format!(r#"{{"type":"voice_data","data":{{"audioData":"{audio}","sessionId":"voice-1"}}}}"#));
    }
    for index in 0..TEXTS {
        messages
            .push(format!(r#"{{"type":"text_message","data":{{"content":"question {index}","sessionId":"chat-1"}}}}"#));
    }
    messages.extend(std::iter::repeat_n(r#"{"type":"ping"}"#.to_owned(), PINGS));
    messages.push(r#"{"type":"voice_end","data":{"sessionId":"voice-1"}}"#.to_owned());
    let mut round_trips = Vec::with_capacity(messages.len());
    for message in messages {
        let sent = Instant::now();
        socket.send(Message::Text(message.into())).await.unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Text(reply))) => {
                    assert!(!reply.contains(r#""type":"error""#), "{reply}");
                    break;
                }
                Some(Ok(_)) => continue,
                other => panic!("no reply: {other:?}"),
            }
        }
        round_trips.push(sent.elapsed());
    }
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    let lag = lag.await.unwrap();
    let mut samples = samples.lock().await;
    samples.round_trips.extend(round_trips);
    samples.lags.push(lag);
}

async fn run(
    label: &str,
    backend: Backend,
    views: Arc<dyn ViewStore>,
    clients: usize,
    counter: Option<RequestCounter>,
) {
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sweep_interval: Duration::from_secs(3_600),
        ..ServeConfig::default()
    };
    let server = Server::start(config, backend).await.unwrap();
    let address = server.local_addr();
    if let Some(counter) = &counter {
        counter.reset();
    }
    let samples = Arc::new(Mutex::new(Samples::default()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|index| tokio::spawn(client(address, format!("load-{label}-{index}"), views.clone(), samples.clone())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    server.shutdown().await;
    let messages = clients * MESSAGES_PER_CLIENT;
    let mut samples = samples.lock().await;
    println!("== serve on {label}: {clients} clients, {messages} messages in {:.2} s", elapsed.as_secs_f64());
    println!("messages per second:     {:.0}", messages as f64 / elapsed.as_secs_f64());
    println!(
        "round trip p50 / p99:    {:.2} ms / {:.2} ms",
        percentile(&mut samples.round_trips, 0.5),
        percentile(&mut samples.round_trips, 0.99)
    );
    println!(
        "projection lag p50 / p99: {:.2} ms / {:.2} ms",
        percentile(&mut samples.lags, 0.5),
        percentile(&mut samples.lags, 0.99)
    );
    if let Some(counter) = counter {
        let per_thousand = |operation: &str| counter.count(operation) as f64 * 1_000.0 / messages as f64;
        println!(
            "DynamoDB per 1,000 messages: PutItem {:.1}, GetItem {:.1}, Query {:.1}, Scan {:.1} (all requests: {:?})",
            per_thousand("PutItem"),
            per_thousand("GetItem"),
            per_thousand("Query"),
            per_thousand("Scan"),
            counter.snapshot()
        );
    }
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let clients = if benchmarking { 50 } else { 4 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join("wsledger-bench");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.db", ulid::Ulid::generate()));
        let sqlite = SqliteStore::open(&path).unwrap();
        run("sqlite", Backend::Sqlite(sqlite.clone()), Arc::new(sqlite.clone()), clients, None).await;
        let appended = sqlite.last_sequence().await.unwrap();
        println!(
            "ledger appends per 1,000 messages: {:.1} ({appended} events)",
            appended as f64 * 1_000.0 / (clients * MESSAGES_PER_CLIENT) as f64
        );
        let _ = std::fs::remove_file(&path);

        let (store, counter) = dynamodb_local::fresh_store().await;
        // The floor: one conditional PutItem round trip on the same DynamoDB Local.
        let probe = wsledger::domain::EventEnvelope::for_request(
            wsledger::domain::ConnectionId::parse("floor").unwrap(),
            UserId::parse("floor").unwrap(),
            "floor",
            wsledger::domain::Timestamp::now(),
            wsledger::domain::Timestamp::now(),
            wsledger::domain::ConnectionEvent::Activity { session_id: None, message_count: 1 },
        );
        let mut floor = Vec::new();
        for index in 0..200 {
            let mut event = probe.clone();
            event.event_id = wsledger::domain::EventId::derive(event.at, &format!("floor-{index}"), event.kind());
            let started = Instant::now();
            store.append(&event).await.unwrap();
            floor.push(started.elapsed());
        }
        println!("== floor: one PutItem round trip on DynamoDB Local: p50 {:.2} ms", percentile(&mut floor, 0.5));
        let backend = Backend::DynamoDb { store: store.clone(), streams: dynamodb_local::streams_client() };
        // The harness polls views for the lag on a client of its own, so the counter
        // sees only what serve itself sends.
        let polling =
            wsledger::adapters::dynamodb::DynamoDbStore::new(dynamodb_local::client().0, store.tables().clone());
        run("dynamodb-local", backend, Arc::new(polling), clients, Some(counter)).await;
    });
}
