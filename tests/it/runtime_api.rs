//! `local::runtime_api`: functions run as Lambda runs them, here a foreign
//! bootstrap (Node.js, `tests/fixtures/bootstraps/echo.js`) speaking the Runtime API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wsledger::local::runtime_api::{FunctionPool, FunctionSpec, InvokeError, LogTarget};

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
