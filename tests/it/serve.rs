//! `wsledger serve` from the outside: real WebSocket clients (tokio-tungstenite), the
//! Rust Management API client, and the real binary for signals and restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::{ConnectionEvent, ConnectionInfo, ConnectionStatus, DisconnectReason, EventKind, UserId};
use wsledger::local::{Backend, Limits, ServeConfig, Server};
use wsledger::ports::{EventStore, PageRequest, ViewStore};

use crate::sqlite::temp_db;
use wsledger_testkit::eventually;

pub type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct App {
    pub server: Server,
    pub store: SqliteStore,
    pub path: PathBuf,
}

/// The configuration the fixtures start from: a free loopback port, and the sweep
/// out of the way (the fixtures run for seconds).
pub fn test_config() -> ServeConfig {
    ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sweep_interval: Duration::from_secs(3_600),
        ..ServeConfig::default()
    }
}

impl App {
    pub async fn start_config(path: PathBuf, config: ServeConfig) -> Self {
        let store = SqliteStore::open(&path).unwrap();
        let server = Server::start(config, Backend::Sqlite(store.clone())).await.unwrap();
        Self { server, store, path }
    }

    async fn start_with(path: PathBuf, limits: Limits) -> Self {
        Self::start_config(path, ServeConfig { limits, ..test_config() }).await
    }

    pub async fn start() -> Self {
        Self::start_with(temp_db(), Limits::default()).await
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/{query}", self.server.local_addr())
    }

    pub async fn connect(&self, user: &str) -> Client {
        let mut request = self.url(&format!("?userId={user}")).into_client_request().unwrap();
        request.headers_mut().insert("User-Agent", "wsledger-test/1.0".parse().unwrap());
        let (client, response) = tokio_tungstenite::connect_async(request).await.expect("the handshake succeeds");
        assert_eq!(response.status(), 101);
        client
    }

    /// The views of `user`, once `ready` holds for them (the projector runs in the background).
    pub async fn views_when(&self, user: &str, ready: impl Fn(&[ConnectionInfo]) -> bool) -> Vec<ConnectionInfo> {
        let user_id = UserId::parse(user).unwrap();
        eventually(Duration::from_secs(5), &format!("the views of {user} becoming ready"), || async {
            let views = self.store.list_by_user(&user_id, None, PageRequest::default()).await.unwrap().items;
            ready(&views).then_some(views)
        })
        .await
    }
}

/// `text` percent-encoded for a query string (every byte but the unreserved ones).
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// `wsledger send` to `user` with `data` on the SQLite store at `path`, through the
/// `@connections` of `endpoint`.
pub async fn wsledger_send(path: &Path, endpoint: &str, user: &str, data: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["send", "--store", &format!("sqlite:{}", path.display()), "--user", user])
        .args(["--data", data])
        .args(["--websocket-endpoint", endpoint])
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_REGION", "us-east-1")
        .output()
        .await
        .unwrap()
}

pub async fn next_text(client: &mut Client) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("a frame within 5 s") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("a JSON frame"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

pub async fn next_close(client: &mut Client) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await.expect("a close within 5 s") {
            Some(Ok(Message::Close(frame))) => return frame,
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("expected a close frame, got {error}"),
            None => return None,
        }
    }
}

#[tokio::test]
async fn a_connection_lives_and_dies_in_the_ledger() {
    let app = App::start().await;
    let mut client = app.connect("user123").await;
    let views = app.views_when("user123", |views| views.len() == 1).await;
    let view = &views[0];
    assert_eq!(view.status, ConnectionStatus::Connected);
    assert_eq!(view.ip_address.as_deref(), Some("127.0.0.1"), "the real peer address");
    assert_eq!(view.user_agent.as_deref(), Some("wsledger-test/1.0"));
    assert_eq!(view.connection_id.as_str().len(), 16, "API Gateway's id format");

    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut client).await, json!({"type": "pong"}));
    client.send(Message::Text("{oops".into())).await.unwrap();
    let error = next_text(&mut client).await;
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some("invalid_json")));
    client
        .send(Message::Text(
            r#"{"type":"text_message","data":{"content":"Hello, AI!","sessionId":"chat-session-123"}}"#.into(),
        ))
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await["type"], "text_response");

    client.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).await.unwrap();
    let views = app.views_when("user123", |views| views[0].status == ConnectionStatus::Disconnected).await;
    assert_eq!(views[0].disconnect_reason, Some(DisconnectReason::Client));
    assert_eq!(views[0].disconnect_status_code, Some(1000));
    let history = app.store.connection_history(&views[0].connection_id, PageRequest::default()).await.unwrap().items;
    let kinds: Vec<EventKind> = history.iter().map(|event| event.kind()).collect();
    assert!(kinds.contains(&EventKind::Connected) && kinds.contains(&EventKind::Disconnected), "{kinds:?}");
    app.server.shutdown().await;
}

#[tokio::test]
async fn a_connect_without_a_user_is_refused_at_the_handshake() {
    let app = App::start().await;
    match tokio_tungstenite::connect_async(app.url("")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let response = reqwest::get(format!("http://{}/", app.server.local_addr())).await.unwrap();
    assert_eq!(response.status(), 200, "a plain GET gets the dashboard (426 with --no-dashboard)");
    app.server.shutdown().await;
}

pub fn management_client(endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_apigatewaymanagement::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new("local", "local", None, None, "t"))
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

/// Posts a notice to `connection_id` through the SDK, checks that `client` gets it,
/// and returns what `GetConnection` says (its source address checked: loopback).
pub async fn post_notice_and_get(
    sdk: &aws_sdk_apigatewaymanagement::Client,
    connection_id: &str,
    client: &mut Client,
) -> aws_sdk_apigatewaymanagement::operation::get_connection::GetConnectionOutput {
    sdk.post_to_connection()
        .connection_id(connection_id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(r#"{"type":"notice"}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(next_text(client).await, json!({"type": "notice"}));
    let info = sdk.get_connection().connection_id(connection_id).send().await.unwrap();
    assert_eq!(info.identity().and_then(|identity| identity.source_ip()), Some("127.0.0.1"));
    info
}

fn is_gone<E: aws_sdk_apigatewaymanagement::error::ProvideErrorMetadata>(error: &E) -> bool {
    error.code() == Some("GoneException")
}

#[tokio::test]
async fn the_management_api_posts_gets_and_deletes_with_the_rust_sdk() {
    let app = App::start().await;
    let mut client = app.connect("user-mgmt").await;
    let views = app.views_when("user-mgmt", |views| views.len() == 1).await;
    let connection_id = views[0].connection_id.to_string();
    for endpoint in [format!("http://{}", app.server.local_addr()), format!("http://{}/local", app.server.local_addr())]
    {
        let info = post_notice_and_get(&management_client(&endpoint), &connection_id, &mut client).await;
        assert_eq!(info.identity().and_then(|identity| identity.user_agent()), Some("wsledger-test/1.0"));
        assert!(info.connected_at().is_some() && info.last_active_at().is_some());
    }
    let sdk = management_client(&format!("http://{}/local", app.server.local_addr()));
    sdk.delete_connection().connection_id(&connection_id).send().await.unwrap();
    let close = next_close(&mut client).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Normal);
    let gone = sdk
        .post_to_connection()
        .connection_id(&connection_id)
        .data(aws_sdk_apigatewaymanagement::primitives::Blob::new("late"))
        .send()
        .await
        .unwrap_err();
    assert!(is_gone(&gone), "{gone:?}");
    let unknown = sdk.get_connection().connection_id("NoSuchConnIdXY=").send().await.unwrap_err();
    assert!(is_gone(&unknown), "{unknown:?}");
    let views = app.views_when("user-mgmt", |views| views[0].status == ConnectionStatus::Disconnected).await;
    assert_eq!(views[0].disconnect_reason, Some(DisconnectReason::Kicked));
    app.server.shutdown().await;
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let app = App::start().await;
    let mut client = app.connect("user-big").await;
    let big = format!(r#"{{"type":"text_message","data":{{"sessionId":"s","content":"{}"}}}}"#, "x".repeat(200 * 1024));
    client.send(Message::Text(big.into())).await.unwrap();
    let close = next_close(&mut client).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Size, "1009");
    let views = app.views_when("user-big", |views| views.first().is_some_and(|view| !view.is_connected())).await;
    assert_eq!(views[0].disconnect_status_code, Some(1009));
    app.server.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_with_1001() {
    let limits = Limits { idle_timeout: Duration::from_millis(300), ..Limits::default() };
    let app = App::start_with(temp_db(), limits).await;
    let mut client = app.connect("user-idle").await;
    let close = next_close(&mut client).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Away, "1001");
    let views = app.views_when("user-idle", |views| views.first().is_some_and(|view| !view.is_connected())).await;
    assert_eq!(views[0].disconnect_reason, Some(DisconnectReason::Idle));
    app.server.shutdown().await;
}

#[tokio::test]
async fn shutdown_records_disconnects_and_a_restart_keeps_history() {
    let app = App::start().await;
    let _first = app.connect("user-restart").await;
    let _second = app.connect("user-restart").await;
    app.views_when("user-restart", |views| views.len() == 2).await;
    let path = app.path.clone();
    app.server.shutdown().await;

    // Everything was flushed before shutdown returned: read without a server.
    let store = SqliteStore::open(&path).unwrap();
    let user = UserId::parse("user-restart").unwrap();
    let views = store.list_by_user(&user, None, PageRequest::default()).await.unwrap().items;
    assert_eq!(views.len(), 2);
    assert!(views.iter().all(|view| view.disconnect_reason == Some(DisconnectReason::Kicked)), "{views:?}");

    let restarted = App::start_with(path.clone(), Limits::default()).await;
    let history = restarted.store.user_history(&user, Default::default(), PageRequest::default()).await.unwrap().items;
    assert_eq!(history.iter().filter(|event| event.kind() == EventKind::Connected).count(), 2);
    assert!(
        history
            .iter()
            .all(|event| !matches!(event.event, ConnectionEvent::Disconnected { reason: DisconnectReason::Gone, .. }))
    );
    restarted.server.shutdown().await;
}

/// The real binary: start, connect, SIGINT, exit 0 with disconnects recorded.
#[tokio::test]
async fn ctrl_c_closes_connections_and_exits_cleanly() {
    let path = temp_db();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--store", &format!("sqlite:{}", path.display())])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut banner = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap() {
        let done = line.contains("warning: --auth dev");
        banner.push(line);
        if done {
            break;
        }
    }
    let banner = banner.join("\n");
    assert!(banner.contains(&format!("listening on 127.0.0.1:{port}")), "{banner}");
    assert!(banner.contains(&format!("ws://127.0.0.1:{port}/?userId=user123")), "{banner}");
    assert!(banner.contains("@connections"), "{banner}");

    let (mut client, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/?userId=user-sigint")).await.unwrap();
    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut client).await, json!({"type": "pong"}));
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
    let close = next_close(&mut client).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Away);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    assert_disconnected(&path, "user-sigint").await;
}

async fn assert_disconnected(path: &Path, user: &str) {
    let store = SqliteStore::open(path).unwrap();
    let views = store.list_by_user(&UserId::parse(user).unwrap(), None, PageRequest::default()).await.unwrap().items;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].status, ConnectionStatus::Disconnected, "projected before exit");
}

/// Where `scripts/test` installs npm packages.
pub fn node_modules() -> PathBuf {
    let tools = std::env::var("WSLEDGER_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".cache/wsledger/tools")
    });
    tools.join("node_modules")
}

/// Runs the classic README's Node client (`tests/node/seed_client.js`) against
/// `url`; returns the types of the messages it received, in order.
pub async fn run_seed_client(url: &str) -> Vec<String> {
    let modules = node_modules();
    assert!(
        modules.join("ws").is_dir(),
        "the npm package ws is missing under {}: run the tests through scripts/test, which installs it",
        modules.display()
    );
    let output = tokio::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/seed_client.js"))
        .arg(url)
        .env("NODE_PATH", &modules)
        .output()
        .await
        .expect("node runs (Node.js is needed for this test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("Connected to WebSocket"), "{stdout}");
    let received: Vec<Value> = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    received.iter().filter_map(|message| message["type"].as_str().map(str::to_owned)).collect()
}

/// The message types the seed client receives: its README's session.
pub const SEED_SESSION: [&str; 5] = ["voice_started", "voice_data_received", "voice_ended", "text_response", "pong"];

/// The classic README's Node client, unchanged but for the URL, against `serve`.
#[tokio::test]
async fn the_seed_readme_client_works_as_written() {
    let app = App::start().await;
    assert_eq!(run_seed_client(&app.url("?userId=user123")).await, SEED_SESSION);
    let views = app.views_when("user123", |views| views.first().is_some_and(|view| !view.is_connected())).await;
    let history = app.store.connection_history(&views[0].connection_id, PageRequest::default()).await.unwrap().items;
    for kind in [EventKind::Connected, EventKind::VoiceStarted, EventKind::VoiceEnded, EventKind::Disconnected] {
        assert_eq!(history.iter().filter(|event| event.kind() == kind).count(), 1, "{kind}");
    }
    app.server.shutdown().await;
}

/// The same client traffic through `serve` on SQLite and on DynamoDB Local (with
/// the stream poller) reads the same, but for ids and times.
#[tokio::test]
async fn serve_on_both_stores_records_the_same_history() {
    async fn traffic(server: &Server) {
        let base = format!("ws://{}", server.local_addr());
        for user in ["both-a", "both-b"] {
            let mut request = format!("{base}/?userId={user}").into_client_request().unwrap();
            request.headers_mut().insert("User-Agent", "both-stores/1".parse().unwrap());
            let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            for message in [
                r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-session-123"}}"#,
                r#"{"type":"voice_end","data":{"sessionId":"voice-session-123"}}"#,
                r#"{"type":"ping"}"#,
            ] {
                client.send(Message::Text(message.into())).await.unwrap();
                next_text(&mut client).await;
            }
            client.close(None).await.unwrap();
            let _ = next_close(&mut client).await;
        }
    }
    fn shape(events: &[wsledger::domain::EventEnvelope]) -> Vec<String> {
        events
            .iter()
            .map(|event| {
                let mut item = serde_json::to_value(wsledger::adapters::stored::EventItem::from(event)).unwrap();
                let object = item.as_object_mut().unwrap();
                for volatile in ["connectionId", "eventId", "at", "connectedAt", "requestId", "expiresAt"] {
                    object.remove(volatile);
                }
                item.to_string()
            })
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect()
    }
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sweep_interval: Duration::from_secs(3_600),
        ..ServeConfig::default()
    };
    let sqlite = SqliteStore::open(temp_db()).unwrap();
    let sqlite_server = Server::start(config.clone(), Backend::Sqlite(sqlite.clone())).await.unwrap();
    let (dynamodb, _) = crate::dynamodb_local::fresh_store().await;
    let streams = crate::dynamodb_local::streams_client();
    let dynamodb_server = Server::start(config, Backend::DynamoDb { store: dynamodb.clone(), streams }).await.unwrap();
    traffic(&sqlite_server).await;
    traffic(&dynamodb_server).await;
    sqlite_server.shutdown().await;
    for user in ["both-a", "both-b"] {
        let user_id = UserId::parse(user).unwrap();
        let on_sqlite = sqlite.user_history(&user_id, Default::default(), PageRequest::default()).await.unwrap().items;
        let on_dynamodb =
            dynamodb.user_history(&user_id, Default::default(), PageRequest::default()).await.unwrap().items;
        assert_eq!(on_sqlite.len(), on_dynamodb.len(), "{user}");
        assert_eq!(shape(&on_sqlite), shape(&on_dynamodb), "{user}");
        assert!(on_sqlite.len() >= 4, "{on_sqlite:?}");
    }
    // The DynamoDB views follow through the stream poller.
    let user_id = UserId::parse("both-a").unwrap();
    eventually(Duration::from_secs(10), "the poller projecting the DynamoDB ledger", || async {
        let views = dynamodb.list_by_user(&user_id, None, PageRequest::default()).await.unwrap().items;
        views.first().is_some_and(|view| !view.is_connected()).then_some(())
    })
    .await;
    dynamodb_server.shutdown().await;
}

/// `--auth jwt`: the authorizer's verification on `?token=`; the user is the token's `sub`.
#[tokio::test]
async fn jwt_auth_admits_valid_tokens_only() {
    use crate::authorizer_lambda::{CLIENT_ID, SigningKey, USER_POOL_ID, claims};
    use wsledger::auth::{AuthConfig, JwksSource, JwtVerifier};

    let key = SigningKey::generate("serve-key");
    let jwks = std::env::temp_dir().join(format!("wsledger-serve-jwks-{}.json", ulid::Ulid::generate()));
    std::fs::write(&jwks, json!({ "keys": [key.jwk.clone()] }).to_string()).unwrap();
    let mut auth = AuthConfig::cognito(USER_POOL_ID, Some(CLIENT_ID.to_owned())).unwrap();
    auth.jwks = JwksSource::File(jwks.clone());
    let store = SqliteStore::open(temp_db()).unwrap();
    let config = ServeConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        auth: wsledger::local::AuthMode::Jwt(std::sync::Arc::new(JwtVerifier::new(auth))),
        sweep_interval: Duration::from_secs(3_600),
        ..ServeConfig::default()
    };
    let server = Server::start(config, Backend::Sqlite(store.clone())).await.unwrap();
    let base = format!("ws://{}/", server.local_addr());

    let token = key.sign(&claims(json!({})));
    let (mut client, _) =
        tokio_tungstenite::connect_async(format!("{base}?token={token}")).await.expect("a valid token connects");
    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_text(&mut client).await, json!({"type": "pong"}));
    let sub = UserId::parse("3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17").unwrap();
    eventually(Duration::from_secs(5), "a view of the token's sub", || async {
        (!store.list_by_user(&sub, None, PageRequest::default()).await.unwrap().items.is_empty()).then_some(())
    })
    .await;

    let status = |result: Result<_, WsError>| match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Ok(_) => 101,
        Err(other) => panic!("{other}"),
    };
    assert_eq!(status(tokio_tungstenite::connect_async(base.clone()).await), 401, "no token");
    let expired = key.sign(&claims(json!({ "exp": chrono::Utc::now().timestamp() - 3_600 })));
    assert_eq!(status(tokio_tungstenite::connect_async(format!("{base}?token={expired}")).await), 403);
    assert_eq!(
        status(tokio_tungstenite::connect_async(format!("{base}?userId=someone")).await),
        401,
        "no ?userId= in jwt mode"
    );
    server.shutdown().await;
    std::fs::remove_file(jwks).ok();
}

/// The `$connect` race: API Gateway answers 410 to a post made while a
/// connection's `$connect` still runs, and the post records a gone observation. The
/// client then talks: its view is connected again, and `wsledger send --user`
/// (through `serve`'s own `@connections`) reaches it.
#[tokio::test]
async fn a_gone_observation_during_connect_is_overridden_by_the_client_talking() {
    use wsledger::delivery::{Delivery, Recipient, deliver};
    use wsledger::ports::{ConnectionGateway, GatewayConnection, GatewayError};

    /// What API Gateway answers to a post during `$connect`.
    struct DuringConnect;

    #[async_trait::async_trait]
    impl ConnectionGateway for DuringConnect {
        async fn post(&self, _: &wsledger::domain::ConnectionId, _: &[u8]) -> Result<(), GatewayError> {
            Err(GatewayError::Gone)
        }
        async fn get(&self, _: &wsledger::domain::ConnectionId) -> Result<GatewayConnection, GatewayError> {
            Err(GatewayError::Gone)
        }
        async fn delete(&self, _: &wsledger::domain::ConnectionId) -> Result<(), GatewayError> {
            Err(GatewayError::Gone)
        }
    }

    let app = App::start().await;
    let mut client = app.connect("user-race").await;
    let views = app.views_when("user-race", |views| views.len() == 1).await;
    let recipient = Recipient::from(&views[0]);
    let delivered =
        deliver(&DuringConnect, &app.store, &recipient, b"{}", 90, wsledger::domain::Timestamp::now()).await.unwrap();
    assert_eq!(delivered, Delivery::Gone);
    let views = app.views_when("user-race", |views| views[0].status == ConnectionStatus::Disconnected).await;
    assert_eq!(views[0].disconnect_reason, Some(DisconnectReason::Gone), "the observation shows until life");

    tokio::time::sleep(Duration::from_millis(5)).await;
    client
        .send(Message::Text(r#"{"type":"text_message","data":{"content":"still here","sessionId":"s"}}"#.into()))
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await["type"], "text_response");
    let views = app.views_when("user-race", |views| views[0].status == ConnectionStatus::Connected).await;
    assert_eq!(views[0].disconnect_reason, None);
    let history = app.store.connection_history(&views[0].connection_id, PageRequest::default()).await.unwrap().items;
    let kinds: Vec<EventKind> = history.iter().map(|event| event.kind()).collect();
    assert_eq!(kinds, [EventKind::Connected, EventKind::Disconnected, EventKind::Activity], "both in the history");

    let endpoint = format!("http://{}", app.server.local_addr());
    let output = wsledger_send(&app.path, &endpoint, "user-race", r#"{"type":"notice"}"#).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(next_text(&mut client).await, json!({"type": "notice"}), "send --user reached it");
    app.server.shutdown().await;
}
