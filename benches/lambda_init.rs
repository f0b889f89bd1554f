//! Lambda cold starts: each packaged bootstrap started under the test Runtime API,
//! timed from process start to its first `GET /runtime/invocation/next` (the end
//! of its init) and to its first answered invocation, beside the floor: the
//! smallest `lambda_runtime` function (`testkit/minimal-lambda`), built the same
//! way and started the same way in the same run.
//!
//! The bootstraps come from `scripts/package` (`$WSLEDGER_BOOTSTRAP_DIR`); DynamoDB
//! Local is behind them, on loopback. Each bootstrap logs its init phases
//! (`init done`, `phases`); the bench prints their medians, so the table says
//! where init time goes.
//!
//! `cargo bench --bench lambda_init`: 11 cold starts of each (the figures are
//! medians), after DynamoDB Local has served a few hundred requests. Under `cargo test`: one of each, checking that every bootstrap gets
//! through init and answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use wsledger_testkit::dynamodb_local;
use wsledger_testkit::lambda_runtime_api::{Outcome, RuntimeApi, websocket_event};

const CONNECT: &str = include_str!("../tests/fixtures/apigw/connect.json");

fn bootstrap(name: &str) -> String {
    let dir = std::env::var("WSLEDGER_BOOTSTRAP_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        panic!(
            "WSLEDGER_BOOTSTRAP_DIR is not set: run scripts/test, or scripts/package and set it to its output folder"
        )
    });
    let path = dir.join(name).join("bootstrap");
    assert!(path.is_file(), "{} is missing: run scripts/package", path.display());
    path.display().to_string()
}

/// One cold start: to the first `next`, to the first answer, and the phases the
/// bootstrap logged.
struct Start {
    to_next: Duration,
    to_answer: Duration,
    phases: Vec<(String, f64)>,
}

async fn cold_start(binary: &str, env: &[(&str, String)], event: Value) -> Start {
    let runtime = RuntimeApi::start().await;
    let mut env = env.to_vec();
    env.push(("RUST_LOG", "info".to_owned()));
    let started = Instant::now();
    let mut child = runtime.spawn_piped(binary, &env);
    runtime.initialized().await;
    let to_next = started.elapsed();
    let outcome = runtime.invoke(event).await;
    let to_answer = started.elapsed();
    if let Outcome::Error(error) = &outcome {
        panic!("{binary} failed its first invocation: {error}");
    }
    child.start_kill().unwrap();
    let mut phases = Vec::new();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
        let Ok(log) = serde_json::from_str::<Value>(&line) else { continue };
        if log["fields"]["message"] == "init done" {
            let listed = log["fields"]["phases"].as_str().unwrap_or_default();
            for phase in listed.split_whitespace() {
                let (name, ms) = phase.split_once('=').expect("name=milliseconds");
                phases.push((name.to_owned(), ms.parse().expect("milliseconds")));
            }
        }
    }
    let _ = child.wait().await;
    Start { to_next, to_answer, phases }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

/// Requests DynamoDB Local serves before the cold starts are timed: its JVM compiles
/// the code of each kind of request the first times it serves it, and a cold start
/// timed meanwhile measures the JIT, not the bootstrap (runs of the bench differed
/// by 2x without this).
const DYNAMODB_LOCAL_WARM_UP: usize = 300;

async fn warm_dynamodb_local(store: &wsledger::adapters::dynamodb::DynamoDbStore) {
    use wsledger::ports::{EventStore, PageRequest, ViewStore};
    let probe = wsledger::domain::ConnectionId::parse("bench-warm-up").unwrap();
    for _ in 0..DYNAMODB_LOCAL_WARM_UP {
        store.connection_history(&probe, PageRequest::first(1)).await.unwrap();
        store.get(&probe).await.unwrap();
    }
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let runs = if benchmarking { 11 } else { 1 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let (store, _) = dynamodb_local::fresh_store().await;
        let mut env = dynamodb_local::bootstrap_env(store.tables());
        // As the template sets it for every function: the handler then builds its
        // Management API client (a resume's replay) and the projector its (the sweep)
        // at init. Nothing is called at init.
        env.push(("WEBSOCKET_API_ENDPOINT", "https://abc123defg.execute-api.us-east-1.amazonaws.com/prod".to_owned()));
        if benchmarking {
            warm_dynamodb_local(&store).await;
        }
        let jwks = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(jwks.path(), json!({ "keys": [] }).to_string()).unwrap();
        let authorizer_env =
            vec![("USER_POOL_ID", "us-east-1_Bench".to_owned()), ("JWKS_FILE", jwks.path().display().to_string())];
        let authorizer_request = json!({
            "type": "REQUEST",
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc123defg/prod/$connect",
            "headers": {},
            "requestContext": { "routeKey": "$connect", "eventType": "CONNECT", "connectionId": "BenchCFJIAM=" }
        });

        println!("Lambda init, {runs} cold start(s) each, medians (DynamoDB Local on loopback)");
        println!("{:<36} {:>9} {:>11} {:>10}  init phases (ms)", "function", "size (B)", "to next ms", "answer ms");
        // The second connection-handler row trusts the platform's certificate store
        // (as every bootstrap did before), for the difference in the same run.
        let platform_roots = [
            ("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt".to_owned()),
            ("SSL_CERT_DIR", "/etc/ssl/certs".to_owned()),
        ];
        let functions =
            ["minimal-lambda", "connection-handler", "connection-handler (platform roots)", "projector", "authorizer"];
        for name in functions {
            let binary = bootstrap(name.split(' ').next().unwrap_or(name));
            let size = std::fs::metadata(&binary).unwrap().len();
            let mut starts = Vec::new();
            for run in 0..runs {
                let (fn_env, event) = match name {
                    "connection-handler" | "connection-handler (platform roots)" => {
                        let now = chrono::Utc::now().timestamp_millis();
                        let id = format!("Init{run}{}CFJIAM=", name.len());
                        let mut fn_env = env.clone();
                        if name.ends_with("(platform roots)") {
                            fn_env.extend(platform_roots.iter().cloned());
                        }
                        (fn_env, websocket_event(CONNECT, &id, now, now, None))
                    }
                    "projector" => (env.clone(), json!({ "Records": [] })),
                    "authorizer" => (authorizer_env.clone(), authorizer_request.clone()),
                    _ => (Vec::new(), json!({})),
                };
                starts.push(cold_start(&binary, &fn_env, event).await);
            }
            let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            let mut order = Vec::new();
            for start in &starts {
                for (phase, took) in &start.phases {
                    if !phases.contains_key(phase) {
                        order.push(phase.clone());
                    }
                    phases.entry(phase.clone()).or_default().push(*took);
                }
            }
            if name != "minimal-lambda" {
                assert!(!order.is_empty(), "{name} logged no `init done` line with its phases");
            }
            let listed: Vec<String> =
                order.iter().map(|phase| format!("{phase} {:.2}", median(phases[phase].clone()))).collect();
            println!(
                "{name:<36} {size:>9} {:>11.1} {:>10.1}  {}",
                median(starts.iter().map(|start| ms(start.to_next)).collect()),
                median(starts.iter().map(|start| ms(start.to_answer)).collect()),
                listed.join(", ")
            );
        }
    });
}
