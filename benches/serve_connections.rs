//! `wsledger serve` under many connections: resident memory per idle connection,
//! and ping round trips per second, beside a bare Node.js `ws` server that only
//! answers pings (the reference), measured the same way in the same run.
//!
//! `cargo bench --bench serve_connections` holds `WSLEDGER_BENCH_CONNECTIONS` idle
//! connections (default 10,000) against each server (a separate process, so its
//! RSS is its own), opened from several loopback source addresses (127.0.0.2,
//! 127.0.0.3, ...) so the client never runs out of ephemeral ports, then runs ping
//! round trips over 200 of them for 5 seconds. The count is capped by this
//! process's file-descriptor limit (one descriptor per client socket), and the
//! bench says so when it caps. The servers alternate for `WSLEDGER_BENCH_ROUNDS`
//! rounds (default 2), each in a fresh process. Beside the round trips per second
//! (bounded by the client, which shares the machine's cores), it reports the
//! server's CPU time per round trip, which the client does not bound. Under `cargo test` it does the same with 100
//! connections and no reference, to keep the harness working.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A bare `ws` server: `{"type":"pong"}` for every `{"type":"ping"}`, nothing else.
const NODE_SERVER: &str = r#"
const { WebSocketServer } = require('ws');
const server = new WebSocketServer({ host: '127.0.0.1', port: Number(process.argv[1]) });
server.on('connection', (socket) => socket.on('message', () => socket.send('{"type":"pong"}')));
server.on('listening', () => console.log('listening'));
"#;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// The process's user plus system CPU time so far (`/proc/PID/stat`, clock ticks).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it start past the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&index| fields.get(index)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

/// Raises this process's open-file soft limit to its hard limit; returns the latter.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_max
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Opens one WebSocket to `server` from `source`.
async fn connect(server: SocketAddr, source: Ipv4Addr, path: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.into(), 0)).expect("a loopback source address");
    let stream = socket.connect(server).await.expect("connect");
    let url = format!("ws://{server}{path}");
    tokio_tungstenite::client_async(url, stream).await.expect("the WebSocket handshake").0
}

struct Figures {
    connect_time: Duration,
    baseline_kib: u64,
    loaded_kib: u64,
    per_connection: f64,
    round_trips_per_second: f64,
    /// The server's CPU time (user + system) per round trip while pinging.
    cpu_per_round_trip: Duration,
    p50: Duration,
    p99: Duration,
}

async fn measure(
    server: SocketAddr,
    path: &str,
    pid: u32,
    connections: usize,
    pingers: usize,
    ping_for: Duration,
) -> Figures {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline_kib = rss_kib(pid);
    let started = Instant::now();
    let sources: Vec<Ipv4Addr> = (2..6).map(|last| Ipv4Addr::new(127, 0, 0, last)).collect();
    let clients: Vec<Client> = futures::stream::iter(0..connections)
        .map(|index| connect(server, sources[index % sources.len()], path))
        .buffer_unordered(128)
        .collect()
        .await;
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded_kib = rss_kib(pid);
    let per_connection = (loaded_kib.saturating_sub(baseline_kib) as f64 * 1024.0) / connections as f64;

    let mut clients = clients;
    let pinging: Vec<_> = clients.drain(..pingers.min(connections)).collect();
    let cpu_before = cpu_time(pid);
    let deadline = Instant::now() + ping_for;
    let tasks: Vec<_> = pinging
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
                    loop {
                        match client.next().await {
                            Some(Ok(Message::Text(text))) if text.contains("pong") => break,
                            Some(Ok(_)) => continue,
                            other => panic!("no pong: {other:?}"),
                        }
                    }
                    latencies.push(sent.elapsed());
                }
                (client, latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut pinged = Vec::new();
    for task in tasks {
        let (client, mut measured) = task.await.unwrap();
        latencies.append(&mut measured);
        pinged.push(client);
    }
    let cpu_used = cpu_time(pid).saturating_sub(cpu_before);
    latencies.sort();
    assert!(!latencies.is_empty(), "no ping was answered");
    drop(pinged);
    drop(clients);
    Figures {
        connect_time,
        baseline_kib,
        loaded_kib,
        per_connection,
        round_trips_per_second: latencies.len() as f64 / ping_for.as_secs_f64(),
        cpu_per_round_trip: cpu_used / latencies.len().max(1) as u32,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

fn print(name: &str, connections: usize, figures: &Figures) {
    println!("{name}");
    println!("  connections held:      {connections} (opened in {:.1} s)", figures.connect_time.as_secs_f64());
    println!(
        "  server RSS:            {} KiB idle -> {} KiB with the connections",
        figures.baseline_kib, figures.loaded_kib
    );
    println!("  RSS per connection:    {:.0} bytes", figures.per_connection);
    println!("  ping round trips:      {:.0} per second", figures.round_trips_per_second);
    println!("  server CPU per round trip: {:.1} µs (user + system)", figures.cpu_per_round_trip.as_secs_f64() * 1e6);
    println!(
        "  round trip p50 / p99:  {:.2} ms / {:.2} ms",
        figures.p50.as_secs_f64() * 1e3,
        figures.p99.as_secs_f64() * 1e3
    );
}

/// Waits for a line containing `banner` on the child's standard output, then keeps
/// draining it so a full pipe never blocks the server.
async fn wait_for_banner(child: &mut tokio::process::Child, banner: &str) {
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains(banner) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(matches!(found, Ok(true)), "the server did not print {banner:?}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let requested: usize = if benchmarking {
        std::env::var("WSLEDGER_BENCH_CONNECTIONS").ok().and_then(|count| count.parse().ok()).unwrap_or(10_000)
    } else {
        100
    };
    let (pingers, ping_for) =
        if benchmarking { (200, Duration::from_secs(5)) } else { (20, Duration::from_millis(500)) };
    let fd_limit = raise_fd_limit();
    let connections = requested.min(fd_limit.saturating_sub(256) as usize);
    if connections < requested {
        println!(
            "{requested} connections asked for; {connections} opened: this process may hold {fd_limit} files \
             (RLIMIT_NOFILE hard limit), one per client socket"
        );
    }
    let rounds: usize = if benchmarking {
        std::env::var("WSLEDGER_BENCH_ROUNDS").ok().and_then(|count| count.parse().ok()).unwrap_or(2).max(1)
    } else {
        1
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        println!("release binaries, clients in this process, 2 worker threads; {rounds} rounds, the servers alternating");
        for round in 1..=rounds {
            let wsledger = measure_wsledger(connections, pingers, ping_for).await;
            print(&format!("round {round}: wsledger serve --store sqlite"), connections, &wsledger);
            if !benchmarking {
                return;
            }
            let reference = measure_node(connections, pingers, ping_for).await;
            print(&format!("round {round}: bare Node.js {} with ws (the reference)", node_version()), connections, &reference);
            println!(
                "round {round}: wsledger / Node: {:.2}x the memory per connection, {:.2}x the ping round trips, {:.2}x the server CPU per round trip",
                wsledger.per_connection / reference.per_connection,
                wsledger.round_trips_per_second / reference.round_trips_per_second,
                wsledger.cpu_per_round_trip.as_secs_f64() / reference.cpu_per_round_trip.as_secs_f64().max(1e-9)
            );
        }
    });
}

async fn measure_wsledger(connections: usize, pingers: usize, ping_for: Duration) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let port = free_port();
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--store", &format!("sqlite:{}", db.display())])
        .args(["--sweep-interval", "3600"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("wsledger serve starts");
    wait_for_banner(&mut server, "warning: --auth dev").await;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = server.id().unwrap();
    let figures = measure(address, "/?userId=bench-user", pid, connections, pingers, ping_for).await;
    // SAFETY: SIGINT to the child we started.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let _ = tokio::time::timeout(Duration::from_secs(60), server.wait()).await;
    figures
}

async fn measure_node(connections: usize, pingers: usize, ping_for: Duration) -> Figures {
    let tools = std::env::var("WSLEDGER_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/wsledger/tools"));
    let port = free_port();
    let mut node = tokio::process::Command::new("node")
        .args(["-e", NODE_SERVER, &port.to_string()])
        .env("NODE_PATH", tools.join("node_modules"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts (scripts/test installs the ws package)");
    wait_for_banner(&mut node, "listening").await;
    let pid = node.id().unwrap();
    let figures = measure(SocketAddr::from(([127, 0, 0, 1], port)), "/", pid, connections, pingers, ping_for).await;
    let _ = node.kill().await;
    figures
}

fn node_version() -> String {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}
