//! `wsledger serve` under many connections: resident memory per idle connection,
//! and ping round trips per second.
//!
//! `cargo bench --bench serve_connections` holds 10,000 idle connections against the
//! release binary (a separate process, so its RSS is its own) and then runs ping
//! round trips over 200 of them. Under `cargo test` it does the same with 100
//! connections, to keep the harness working.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * fraction).round() as usize]
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let (connections, pingers, ping_for) =
        if benchmarking { (10_000, 200, Duration::from_secs(5)) } else { (100, 20, Duration::from_millis(500)) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let dir = std::env::temp_dir().join("wsledger-bench");
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join(format!("{}.db", ulid::Ulid::generate()));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--store", &format!("sqlite:{}", db.display())])
            .args(["--sweep-interval", "3600"])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("wsledger serve starts");
        let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("warning: --auth dev") {
                break;
            }
        }
        let pid = server.id().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = rss_kib(pid);

        let started = Instant::now();
        let url = format!("ws://127.0.0.1:{port}/?userId=bench-user");
        let clients: Vec<_> = futures::stream::iter(0..connections)
            .map(|_| {
                let url = url.clone();
                async move { tokio_tungstenite::connect_async(url).await.expect("connect").0 }
            })
            .buffer_unordered(128)
            .collect()
            .await;
        let connect_time = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let loaded = rss_kib(pid);
        let per_connection = (loaded.saturating_sub(baseline) as f64 * 1024.0) / connections as f64;

        let mut clients = clients;
        let pinging: Vec<_> = clients.drain(..pingers.min(connections)).collect();
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
        latencies.sort();
        let round_trips = latencies.len();
        println!("wsledger serve --store sqlite (release), clients in another process");
        println!("connections held:        {connections} (opened in {:.1} s)", connect_time.as_secs_f64());
        println!("server RSS:              {baseline} KiB idle -> {loaded} KiB with the connections");
        println!("RSS per connection:      {per_connection:.0} bytes");
        println!(
            "ping round trips:        {:.0} per second over {} connections ({round_trips} in {:.1} s)",
            round_trips as f64 / ping_for.as_secs_f64(),
            pingers.min(connections),
            ping_for.as_secs_f64()
        );
        println!(
            "round trip p50 / p99:    {:.2} ms / {:.2} ms",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
        assert!(round_trips > 0);
        drop(pinged);
        drop(clients);
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let _ = tokio::time::timeout(Duration::from_secs(30), server.wait()).await;
        let _ = std::fs::remove_file(&db);
    });
}
