//! `wsledger serve` against slow and hostile clients and its operator's Ctrl-C:
//! clients that stop reading, slowloris sockets, foreign `Host`s, a corrupted
//! view row, a second `serve` on the same file. Real sockets throughout.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use wsledger::domain::{ConnectionStatus, DisconnectReason, UserId};
use wsledger::local::{Limits, ServeConfig};
use wsledger::ports::{PageRequest, ViewStore};

use crate::serve::{App, next_text, test_config};
use crate::sqlite::temp_db;

type RawClient = tokio_tungstenite::WebSocketStream<TcpStream>;

/// A WebSocket client whose socket takes at most 4 KiB before the server must wait.
async fn small_buffer_client(address: SocketAddr, user: &str) -> RawClient {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4 * 1024).unwrap();
    socket.connect(&address.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(socket.into()).unwrap();
    let (client, response) =
        tokio_tungstenite::client_async(format!("ws://{address}/?userId={user}"), stream).await.unwrap();
    assert_eq!(response.status(), 101);
    client
}

/// Sends 8 KB text messages (each echoed back at the same size) without reading,
/// until the client's own writes stall: the server has stopped reading it because
/// its replies cannot leave.
async fn flood_until_stalled(client: &mut RawClient) -> usize {
    let content = "x".repeat(8 * 1024);
    let frame = json!({ "type": "text_message", "data": { "content": content, "sessionId": "flood" } }).to_string();
    for sent in 0..20_000 {
        match tokio::time::timeout(Duration::from_millis(500), client.send(Message::Text(frame.clone().into()))).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the server closed before the client stalled: {error}"),
            Err(_) => return sent,
        }
    }
    panic!("20,000 messages of 8 KB were taken without reading a reply");
}

/// The Management API client, without the SDK's retries: a 429 must reach the test.
fn management(address: SocketAddr, access_key: &str, secret: &str) -> aws_sdk_apigatewaymanagement::Client {
    let config = aws_sdk_apigatewaymanagement::Config::builder()
        .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{address}"))
        .region(aws_sdk_apigatewaymanagement::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(
            access_key, secret, None, None, "test",
        ))
        .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_apigatewaymanagement::Client::from_conf(config)
}

async fn ping_round_trip(client: &mut crate::serve::Client) -> Duration {
    let started = Instant::now();
    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(next_text(client).await, json!({"type": "pong"}));
    started.elapsed()
}

/// A client that stops reading is closed by the limits (or the write timeout),
/// `$disconnect` is recorded, posts to it are refused at once with
/// `LimitExceededException`, and other clients do not notice.
#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_recorded() {
    let write_timeout = Duration::from_secs(10);
    let limits =
        Limits { idle_timeout: Duration::from_secs(2), max_duration: Duration::from_secs(4), ..Limits::default() };
    let app = App::start_config(temp_db(), ServeConfig { limits, write_timeout, ..test_config() }).await;
    let address = app.server.local_addr();
    let mut other = app.connect("user-bystander").await;
    let mut stuck = small_buffer_client(address, "user-stuck").await;
    let views = app.views_when("user-stuck", |views| views.len() == 1).await;
    let connection_id = views[0].connection_id.to_string();

    let sent = flood_until_stalled(&mut stuck).await;
    eprintln!("the client stalled after {sent} messages of 8 KB");

    // While it is wedged: posts answer at once, and soon with 429.
    let sdk = management(address, "local", "local");
    let mut throttled = false;
    for _ in 0..200 {
        let started = Instant::now();
        let result = sdk.post_to_connection().connection_id(&connection_id).data(Blob::new("notice")).send().await;
        assert!(started.elapsed() < Duration::from_secs(1), "a post waited {:?}", started.elapsed());
        if let Err(error) = result {
            match error.into_service_error() {
                PostToConnectionError::LimitExceededException(_) => {
                    throttled = true;
                    break;
                }
                other => panic!("expected LimitExceededException, got {other:?}"),
            }
        }
    }
    assert!(throttled, "posts to a client that does not read are refused with LimitExceededException");
    let round_trip = ping_round_trip(&mut other).await;
    assert!(round_trip < Duration::from_secs(1), "another client's ping took {round_trip:?}");

    let views = app.views_when("user-stuck", |views| views[0].status == ConnectionStatus::Disconnected).await;
    let view = &views[0];
    let lifetime = view.disconnected_at.unwrap().epoch_millis() - view.created_at.epoch_millis();
    eprintln!("closed {lifetime} ms after connecting (status {:?})", view.disconnect_status_code);
    assert!(
        lifetime <= (limits.max_duration + write_timeout + Duration::from_secs(1)).as_millis() as i64,
        "closed after {lifetime} ms"
    );
    assert_eq!(
        view.disconnect_status_code,
        Some(1001),
        "the idle or maximum-duration limit won over the blocked write"
    );
    // The client's socket ends (reset) once it reads again.
    let drained =
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = stuck.next().await {} });
    assert!(drained.await.is_ok(), "the server closed the TCP connection");
    ping_round_trip(&mut other).await;
    app.server.shutdown().await;
}

/// With generous limits, the write timeout ends a client that stopped reading.
#[tokio::test]
async fn the_write_timeout_closes_a_client_that_stopped_reading() {
    let write_timeout = Duration::from_secs(1);
    let app = App::start_config(temp_db(), ServeConfig { write_timeout, ..test_config() }).await;
    let mut stuck = small_buffer_client(app.server.local_addr(), "user-slow-reader").await;
    app.views_when("user-slow-reader", |views| views.len() == 1).await;
    flood_until_stalled(&mut stuck).await;
    let views = app.views_when("user-slow-reader", |views| views[0].status == ConnectionStatus::Disconnected).await;
    assert_eq!(views[0].disconnect_reason, Some(DisconnectReason::Kicked));
    assert_eq!(views[0].disconnect_status_code, Some(1006));
    assert!(views[0].disconnect_detail.as_deref().unwrap_or_default().contains("write timeout"), "{views:?}");
    app.server.shutdown().await;
}

/// Writes a raw HTTP/1.1 request and returns the status code of the answer.
async fn raw_status(address: SocketAddr, request: &str) -> u16 {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn post(path: &str, host: &str, headers: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: 2\r\nConnection: close\r\n\r\nhi")
}

/// DNS rebinding reads nothing: the HTTP API answers only its own names.
#[tokio::test]
async fn foreign_hosts_are_refused_and_the_management_token_is_required() {
    let config = ServeConfig { management_token: Some("s3cret".into()), ..test_config() };
    let app = App::start_config(temp_db(), config).await;
    let address = app.server.local_addr();
    let _client = app.connect("user-exposure").await;
    let views = app.views_when("user-exposure", |views| views.len() == 1).await;
    // Connection ids are base64: '/' and '+' must be escaped in a path.
    let escaped = views[0].connection_id.as_str().replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let at_connections = format!("/@connections/{escaped}");
    let port = address.port();

    assert_eq!(raw_status(address, &get("/api/connections", &address.to_string())).await, 200);
    assert_eq!(raw_status(address, &get("/api/connections", &format!("localhost:{port}"))).await, 200);
    assert_eq!(raw_status(address, &get("/api/connections", "evil.test")).await, 421);
    assert_eq!(raw_status(address, &get("/api/connections", &format!("evil.test:{port}"))).await, 421);
    assert_eq!(raw_status(address, &get("/api/stream", "evil.test")).await, 421);
    let bearer = "Authorization: Bearer s3cret\r\n";
    assert_eq!(raw_status(address, &post(&at_connections, "evil.test", bearer)).await, 421);
    assert_eq!(raw_status(address, &post(&at_connections, &address.to_string(), "")).await, 401);
    assert_eq!(
        raw_status(address, &post(&at_connections, &address.to_string(), "Authorization: Bearer nope\r\n")).await,
        403
    );
    assert_eq!(raw_status(address, &post(&at_connections, &address.to_string(), bearer)).await, 200);
    // The AWS SDKs sign their requests: the token is the access key id and the
    // secret, and the signature is verified.
    let connection_id = views[0].connection_id.to_string();
    management(address, "s3cret", "s3cret").get_connection().connection_id(&connection_id).send().await.unwrap();
    for (key, secret) in [("local", "local"), ("s3cret", "local"), ("s3cret", "")] {
        let refused = management(address, key, secret).get_connection().connection_id(&connection_id).send().await;
        let status = refused.unwrap_err().raw_response().map(|response| response.status().as_u16());
        assert_eq!(status, Some(403), "{key}/{secret}");
    }
    // A signature of zeros with the token as key id (the key id alone is no credential).
    let zeros = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=s3cret/{}/us-east-1/execute-api/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature={}\r\nX-Amz-Date: {}\r\n",
        chrono::Utc::now().format("%Y%m%d"),
        "0".repeat(64),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    );
    assert_eq!(raw_status(address, &post(&at_connections, &address.to_string(), &zeros)).await, 403);
    // The WebSocket endpoint stays open to any origin, as API Gateway's is.
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{address}/?userId=user-any-origin"
    ))
    .unwrap();
    request.headers_mut().insert("Origin", "https://elsewhere.test".parse().unwrap());
    tokio_tungstenite::connect_async(request).await.expect("any origin may connect");
    app.server.shutdown().await;
}

/// Hundreds of sockets that dribble their headers are closed by the header
/// timeout, while a normal client connects and talks; a keep-alive connection that
/// idles is closed too; over `max_connections`, a handshake gets 503.
#[tokio::test]
async fn slowloris_sockets_are_closed_and_normal_clients_still_connect() {
    let fd_limit = wsledger::local::raise_fd_limit();
    assert!(fd_limit >= 2_000, "the test needs 2,000 file descriptors; the hard limit is {fd_limit}");
    let header_timeout = Duration::from_secs(2);
    let app = App::start_config(temp_db(), ServeConfig { header_read_timeout: header_timeout, ..test_config() }).await;
    let address = app.server.local_addr();
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..500 {
        slow.spawn(async move {
            let mut stream = TcpStream::connect(address).await.unwrap();
            let started = Instant::now();
            stream.write_all(b"GET /api/connections HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
            let mut buffer = [0u8; 1_024];
            loop {
                tokio::select! {
                    read = stream.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => continue,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if stream.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(30), "a slow socket was never closed");
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = app.connect("user-normal").await;
    let round_trip = ping_round_trip(&mut client).await;
    eprintln!("ping among 500 slowloris sockets: {round_trip:?}");

    let mut longest = Duration::ZERO;
    while let Some(lifetime) = slow.join_next().await {
        longest = longest.max(lifetime.unwrap());
    }
    eprintln!("the slowest of 500 slowloris sockets was closed after {longest:?}");
    // The timeout plus scheduling slack on a busy two-core machine.
    assert!(longest < header_timeout + Duration::from_secs(3), "a slow socket lived {longest:?}");
    ping_round_trip(&mut client).await;

    // Keep-alive: one request answered, then silence: closed by the same timeout.
    let mut stream = TcpStream::connect(address).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"GET /api/connections HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(closed.is_ok(), "an idle keep-alive connection stays open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "answered first");
    assert!(started.elapsed() < header_timeout + Duration::from_secs(2), "{:?}", started.elapsed());
    app.server.shutdown().await;
}

#[tokio::test]
async fn over_max_connections_a_handshake_gets_503() {
    let app = App::start_config(temp_db(), ServeConfig { max_connections: 2, ..test_config() }).await;
    let _first = app.connect("user-cap").await;
    let _second = app.connect("user-cap").await;
    match tokio_tungstenite::connect_async(app.url("?userId=user-cap")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    assert!(app.server.refused_connections() >= 1);
    drop(_second);
    wsledger_testkit::eventually(Duration::from_secs(5), "a freed slot admitting the next client", || async {
        tokio_tungstenite::connect_async(app.url("?userId=user-cap")).await.ok()
    })
    .await;
    app.server.shutdown().await;
}

/// A view row that cannot be decoded neither stops the projector nor the listings;
/// the connection's next event re-folds its view from the whole history.
#[tokio::test]
async fn a_corrupted_view_row_does_not_stop_the_projector() {
    let app = App::start().await;
    let address = app.server.local_addr();
    let mut damaged = app.connect("user-damaged").await;
    let views = app.views_when("user-damaged", |views| views.len() == 1).await;
    let connection_id = views[0].connection_id.clone();
    let created_at = views[0].created_at;
    let sqlite = rusqlite::Connection::open(&app.path).unwrap();
    let changed = sqlite
        .execute(
            "UPDATE views SET item = '{\"connectionId\": 7, \"status\": \"?\"' WHERE connection_id = ?1",
            [connection_id.as_str()],
        )
        .unwrap();
    assert_eq!(changed, 1);

    let user = UserId::parse("user-damaged").unwrap();
    assert!(app.store.list_by_user(&user, None, PageRequest::default()).await.unwrap().items.is_empty());
    assert_eq!(raw_status(address, &get("/api/connections", "localhost")).await, 200);
    // New connections are still projected.
    let _after = app.connect("user-after-damage").await;
    app.views_when("user-after-damage", |views| views.len() == 1).await;
    assert!(app.store.corrupt_views() >= 1, "the bad row was counted");

    // The damaged connection's next event writes its view again, folded from its whole history.
    damaged.close(None).await.unwrap();
    let views = app.views_when("user-damaged", |views| views.len() == 1 && !views[0].is_connected()).await;
    assert_eq!(views[0].created_at, created_at);
    assert_eq!(views[0].ip_address.as_deref(), Some("127.0.0.1"), "re-folded from the Connected event");
    assert_eq!(app.store.get(&connection_id).await.unwrap().unwrap().view, views[0]);
    app.server.shutdown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real binary, started and read until its banner is out.
async fn spawn_serve(path: &Path, port: u16) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--store", &format!("sqlite:{}", path.display())])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
        match line {
            Some(line) if line.contains("warning: --auth dev") => break,
            Some(_) => continue,
            None => panic!("serve exited before its banner"),
        }
    }
    // Keep reading so a full pipe never blocks the server.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

fn interrupt(child: &tokio::process::Child) {
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGINT) };
}

/// One Ctrl-C ends `serve` cleanly within 5 s even with a dashboard stream and a
/// client that does not read.
#[tokio::test]
async fn ctrl_c_exits_within_five_seconds_with_open_streams() {
    let path = temp_db();
    let port = free_port();
    let mut child = spawn_serve(&path, port).await;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut events = reqwest::get(format!("http://{address}/api/stream")).await.unwrap();
    assert_eq!(events.status(), 200);
    let mut stuck = small_buffer_client(address, "user-ctrl-c").await;
    flood_until_stalled(&mut stuck).await;

    let started = Instant::now();
    interrupt(&child);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.expect("exits within 5 s").unwrap();
    eprintln!("serve exited {:?} after one SIGINT", started.elapsed());
    assert!(status.success(), "{status:?}");
    let ended = tokio::time::timeout(Duration::from_secs(1), async { while let Ok(Some(_)) = events.chunk().await {} });
    assert!(ended.await.is_ok(), "the SSE stream ended");
    let store = wsledger::adapters::sqlite::SqliteStore::open(&path).unwrap();
    let views =
        store.list_by_user(&UserId::parse("user-ctrl-c").unwrap(), None, PageRequest::default()).await.unwrap().items;
    assert_eq!(views[0].status, ConnectionStatus::Disconnected, "$disconnect recorded and projected before exit");
}

/// A second Ctrl-C exits at once, even when the first one's shutdown is stuck (here:
/// on the store, locked by another process). On a loaded machine the first
/// shutdown has once been seen to end before the second signal came; the scenario
/// is then played again (three times at most) rather than judged.
#[tokio::test]
async fn a_second_ctrl_c_exits_at_once() {
    for attempt in 1..=3 {
        let path = temp_db();
        let port = free_port();
        let mut child = spawn_serve(&path, port).await;
        let (_client, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/?userId=user-twice")).await.unwrap();
        let store = wsledger::adapters::sqlite::SqliteStore::open(&path).unwrap();
        let user = UserId::parse("user-twice").unwrap();
        wsledger_testkit::eventually(Duration::from_secs(5), "the connection projected", || async {
            (!store.list_by_user(&user, None, PageRequest::default()).await.unwrap().items.is_empty()).then_some(())
        })
        .await;
        // Another writer holds the database: the $disconnect append waits on it.
        let blocker = rusqlite::Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

        interrupt(&child);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("attempt {attempt}: the first shutdown ended before the second signal ({status:?})");
            blocker.execute_batch("ROLLBACK").unwrap();
            continue;
        }
        let started = Instant::now();
        interrupt(&child);
        let status =
            tokio::time::timeout(Duration::from_secs(1), child.wait()).await.expect("exits within 1 s").unwrap();
        eprintln!("serve exited {:?} after the second SIGINT: {status:?}", started.elapsed());
        assert_eq!(status.code(), Some(130), "an interrupted shutdown exits with 130: {status:?}");
        blocker.execute_batch("ROLLBACK").unwrap();
        return;
    }
    panic!("in three attempts the first shutdown never waited on the locked store");
}

/// One `serve` per store file; the read-only commands keep working beside it.
#[tokio::test]
async fn a_second_serve_on_the_same_file_refuses_to_start() {
    let path = temp_db();
    let mut first = spawn_serve(&path, free_port()).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", &format!("sqlite:{}", path.display())])
        .output();
    let second = tokio::time::timeout(Duration::from_secs(20), second).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains(&format!("process {}", first.id().unwrap())), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let reader = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["connections", "--store", &format!("sqlite:{}", path.display())])
        .output()
        .await
        .unwrap();
    assert!(reader.status.success(), "{}", String::from_utf8_lossy(&reader.stderr));
    interrupt(&first);
    assert!(first.wait().await.unwrap().success());
}

/// `--listen` beyond loopback without a token for `@connections` does not start.
#[tokio::test]
async fn listening_beyond_loopback_needs_a_management_token() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--listen", "0.0.0.0:0", "--store", &format!("sqlite:{}", temp_db().display())])
        .env_remove("WSLEDGER_DASHBOARD_TOKEN")
        .env_remove("WSLEDGER_MANAGEMENT_TOKEN")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("--management-token") && stderr.contains("--insecure-management"), "{stderr}");
}
