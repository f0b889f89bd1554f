//! `local::lambda::runtime_api`: functions run as Lambda runs them, here a foreign
//! bootstrap (Node.js, `tests/fixtures/bootstraps/echo.js`) speaking the Runtime API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wsledger::local::lambda::runtime_api::{FunctionPool, FunctionSpec, InvokeError, LogTarget};

fn spec(name: &str) -> FunctionSpec {
    FunctionSpec {
        name: name.into(),
        bootstrap: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bootstraps/echo.js")),
        environment: vec![("GREETING".into(), "hello".into())],
        timeout: Duration::from_secs(3),
        memory_mb: 512,
        idle_stop: Duration::from_secs(60),
        logs: LogTarget::Terminal,
        metrics: None,
        max_concurrency: 10,
    }
}

fn pid(answer: &Value) -> u64 {
    answer["pid"].as_u64().expect("the bootstrap answers with its pid")
}

#[tokio::test]
async fn a_cold_start_then_the_warm_process_answers_with_the_functions_environment() {
    let pool = FunctionPool::new(spec("echo"));
    let started = chrono::Utc::now().timestamp_millis();
    let first = pool.invoke(json!({ "n": 1 })).await.unwrap();
    assert_eq!(first["event"], json!({ "n": 1 }));
    assert_eq!((first["memory"].as_str(), first["greeting"].as_str()), (Some("512"), Some("hello")));
    let deadline = first["deadline"].as_i64().unwrap();
    assert!((started + 2_000..=started + 10_000).contains(&deadline), "the deadline is the timeout from now");
    let second = pool.invoke(json!({ "n": 2 })).await.unwrap();
    assert_eq!(pid(&second), pid(&first), "the warm process is reused");
    assert_eq!(pool.idle_processes(), 1);
    pool.stop().await;
}

#[tokio::test]
async fn concurrent_invocations_get_a_process_each() {
    let pool = FunctionPool::new(spec("echo-concurrent"));
    let invoke = |pool: Arc<FunctionPool>| async move { pool.invoke(json!({ "sleepMs": 300 })).await.unwrap() };
    let (a, b) = tokio::join!(invoke(pool.clone()), invoke(pool.clone()));
    assert_ne!(pid(&a), pid(&b));
    assert_eq!(pool.idle_processes(), 2);
    pool.stop().await;
}

#[tokio::test]
async fn an_overrun_is_a_timeout_and_the_process_is_killed() {
    let pool = FunctionPool::new(FunctionSpec { timeout: Duration::from_millis(500), ..spec("echo-slow") });
    let warm = pool.invoke(json!({})).await.unwrap();
    let error = pool.invoke(json!({ "sleepMs": 5_000 })).await.unwrap_err();
    assert!(matches!(error, InvokeError::Timeout { .. }), "{error}");
    let pid_alive = std::path::Path::new(&format!("/proc/{}", pid(&warm))).exists();
    assert!(!pid_alive, "the overrunning process is gone");
    let after = pool.invoke(json!({})).await.unwrap();
    assert_ne!(pid(&after), pid(&warm), "the next invocation is a cold start");
    pool.stop().await;
}

#[tokio::test]
async fn function_and_init_errors_are_reported_as_lambda_reports_them() {
    let pool = FunctionPool::new(spec("echo-failing"));
    let error = pool.invoke(json!({ "fail": "no such thing" })).await.unwrap_err();
    match error {
        InvokeError::Function { error, .. } => assert_eq!(error["errorMessage"], "no such thing"),
        other => panic!("expected a function error, got {other}"),
    }
    assert!(pool.invoke(json!({})).await.is_ok(), "a function error keeps the process warm");
    pool.stop().await;

    let environment = vec![("FAIL_INIT".to_owned(), "the table is missing".to_owned())];
    let broken = FunctionPool::new(FunctionSpec { environment, ..spec("echo-broken") });
    let error = broken.invoke(json!({})).await.unwrap_err();
    assert!(matches!(&error, InvokeError::Init { detail, .. } if detail.contains("the table is missing")), "{error}");
    assert_eq!(broken.idle_processes(), 0);
}

#[tokio::test]
async fn an_idle_process_is_stopped() {
    let pool = FunctionPool::new(FunctionSpec { idle_stop: Duration::from_millis(200), ..spec("echo-idle") });
    let first = pool.invoke(json!({})).await.unwrap();
    wsledger_testkit::eventually(Duration::from_secs(5), "the idle process stopping", || async {
        (pool.idle_processes() == 0).then_some(())
    })
    .await;
    let second = pool.invoke(json!({})).await.unwrap();
    assert_ne!(pid(&second), pid(&first));
    pool.stop().await;
}

#[tokio::test]
async fn a_missing_bootstrap_is_a_start_error() {
    let pool = FunctionPool::new(FunctionSpec { bootstrap: PathBuf::from("/nonexistent/bootstrap"), ..spec("none") });
    let error = pool.invoke(json!({})).await.unwrap_err();
    assert!(matches!(error, InvokeError::Start { .. }), "{error}");
}

#[tokio::test]
async fn a_functions_output_can_go_to_a_file_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let pool = FunctionPool::new(FunctionSpec { logs: LogTarget::Dir(dir.path().to_owned()), ..spec("EchoLogs") });
    pool.invoke(json!({})).await.unwrap();
    let log = dir.path().join("EchoLogs.log");
    wsledger_testkit::eventually(Duration::from_secs(5), "the function's log line", || async {
        std::fs::read_to_string(&log).ok().filter(|text| text.contains("initialized"))
    })
    .await;
    pool.stop().await;
}

/// The address of a process's Runtime API, read as another local process would:
/// from its environment in `/proc`.
fn runtime_api_of(pid: u64) -> String {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("the process's environment is readable");
    environ
        .split(|byte| *byte == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix("AWS_LAMBDA_RUNTIME_API=").map(str::to_owned))
        .expect("AWS_LAMBDA_RUNTIME_API is set")
}

#[tokio::test]
async fn a_rogue_poller_beside_the_bootstrap_receives_nothing_and_the_bootstrap_misses_nothing() {
    let pool = FunctionPool::new(spec("echo-guarded"));
    let first = pool.invoke(json!({ "n": 0 })).await.unwrap();
    let address = runtime_api_of(pid(&first));
    // Any HTTP answer at all (even a refusal) means the rogue was served.
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stolen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rogue = {
        let (answered, stolen, attempts) = (answered.clone(), stolen.clone(), attempts.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
            loop {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let url = format!("http://{address}/2018-06-01/runtime/invocation/next");
                if let Ok(response) = client.get(&url).send().await {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if response.headers().contains_key("lambda-runtime-aws-request-id") {
                        stolen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for n in 1..=10 {
        let answer = pool.invoke(json!({ "n": n })).await.expect("the bootstrap answers every invocation");
        assert_eq!(answer["event"]["n"], n);
        assert_eq!(pid(&answer), pid(&first), "the same warm process");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rogue.abort();
    assert!(attempts.load(std::sync::atomic::Ordering::Relaxed) >= 10, "the rogue kept trying");
    assert_eq!(stolen.load(std::sync::atomic::Ordering::Relaxed), 0, "the rogue took an invocation");
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 0, "the rogue got an HTTP answer");
    pool.stop().await;
}

#[tokio::test]
async fn browsers_are_refused_request_ids_are_random_and_one_next_waits_at_a_time() {
    use wsledger::local::lambda::runtime_api::{RuntimeApiServer, RuntimeOutcome};
    let server = RuntimeApiServer::start("guarded").await.unwrap();
    // This test process plays the function.
    server.admit(std::process::id());
    let base = format!("http://{}/2018-06-01/runtime", server.address());
    let client = reqwest::Client::new();
    for (name, value) in [("Origin", "https://evil.example"), ("Sec-Fetch-Mode", "no-cors")] {
        let answer = client.get(format!("{base}/invocation/next")).header(name, value).send().await.unwrap();
        assert_eq!(answer.status(), 403, "{name}");
    }
    let waiting = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move { client.get(format!("{base}/invocation/next")).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = client.get(format!("{base}/invocation/next")).send().await.unwrap();
    assert_eq!(second.status(), 409, "a second waiter is refused");

    let invoke = tokio::spawn(async move {
        let outcome = server.invoke(json!({ "hello": 1 }), Duration::from_secs(5), Duration::from_secs(5)).await;
        (server, outcome)
    });
    let first = waiting.await.unwrap();
    let id = first.headers()["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "a version 4 UUID: {id}");
    let answered = client.post(format!("{base}/invocation/{id}/response")).body("{\"ok\":true}").send().await.unwrap();
    assert_eq!(answered.status(), 202);
    let (server, outcome) = invoke.await.unwrap();
    assert!(matches!(outcome, RuntimeOutcome::Response(value) if value == json!({"ok": true})));

    // A response over 6 MB fails the invocation at once, as Lambda does.
    let invoke = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let outcome = server.invoke(json!({}), Duration::from_secs(20), Duration::from_secs(20)).await;
        (outcome, started.elapsed())
    });
    let next = client.get(format!("{base}/invocation/next")).send().await.unwrap();
    let id = next.headers()["lambda-runtime-aws-request-id"].to_str().unwrap().to_owned();
    let huge = vec![b'x'; 6 * 1024 * 1024 + 1];
    let answered = client.post(format!("{base}/invocation/{id}/response")).body(huge).send().await;
    assert!(answered.is_err() || answered.unwrap().status() == 413);
    let (outcome, elapsed) = invoke.await.unwrap();
    match outcome {
        RuntimeOutcome::Error(error) => assert_eq!(error["errorType"], "Function.ResponseSizeTooLarge"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(10), "not the function's timeout: {elapsed:?}");
}

#[tokio::test]
async fn past_its_concurrency_an_invocation_is_throttled_not_queued() {
    let pool = FunctionPool::new(FunctionSpec { max_concurrency: 2, ..spec("echo-throttled") });
    let invoke = |pool: Arc<FunctionPool>| async move { pool.invoke(json!({ "sleepMs": 500 })).await };
    let results = futures::future::join_all((0..4).map(|_| invoke(pool.clone()))).await;
    let throttled =
        results.iter().filter(|result| matches!(result, Err(InvokeError::Throttled { limit: 2, .. }))).count();
    assert_eq!((results.len() - throttled, throttled), (2, 2), "{results:?}");
    pool.stop().await;
}
