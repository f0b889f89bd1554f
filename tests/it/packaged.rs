//! The packaged bootstraps (built by `scripts/package` with cargo-lambda, as `sam
//! build` builds them) each answer one invocation of a fixture event through a
//! Lambda Runtime API, with DynamoDB Local behind them.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::authorizer_lambda::{CLIENT_ID, SigningKey, USER_POOL_ID, claims};
use crate::dynamodb_local;
use crate::lambda_runtime_api::{Outcome, RuntimeApi};

fn bootstrap(name: &str) -> String {
    let dir = std::env::var("WSLEDGER_BOOTSTRAP_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        panic!("WSLEDGER_BOOTSTRAP_DIR is not set: run scripts/test, which packages the bootstraps with scripts/package first")
    });
    let path = dir.join(name).join("bootstrap");
    assert!(path.is_file(), "{} is missing: run scripts/package", path.display());
    path.display().to_string()
}

async fn invoke(runtime: &RuntimeApi, event: Value) -> Value {
    match runtime.invoke(event).await {
        Outcome::Response(response) => response,
        Outcome::Error(error) => panic!("the function failed: {error}"),
    }
}

#[tokio::test]
async fn each_packaged_bootstrap_answers_its_fixture() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let env = dynamodb_local::bootstrap_env(store.tables());

    let runtime = RuntimeApi::start().await;
    let _handler = runtime.spawn(&bootstrap("connection-handler"), &env);
    let mut connect: Value = serde_json::from_str(include_str!("../fixtures/apigw/connect.json")).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    connect["requestContext"]["connectedAt"] = json!(now);
    connect["requestContext"]["requestTimeEpoch"] = json!(now);
    connect["requestContext"]["connectionId"] = json!("PackagedCFJIAM=");
    assert_eq!(invoke(&runtime, connect).await["statusCode"], 200);

    let runtime = RuntimeApi::start().await;
    let key = SigningKey::generate("packaged-key");
    let jwks = std::env::temp_dir().join(format!("wsledger-packaged-jwks-{}.json", ulid::Ulid::generate()));
    std::fs::write(&jwks, json!({ "keys": [key.jwk.clone()] }).to_string()).unwrap();
    let authorizer_env = vec![
        ("USER_POOL_ID", USER_POOL_ID.to_owned()),
        ("USER_POOL_CLIENT_ID", CLIENT_ID.to_owned()),
        ("JWKS_FILE", jwks.display().to_string()),
    ];
    let _authorizer = runtime.spawn(&bootstrap("authorizer"), &authorizer_env);
    let request = json!({
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc123defg/prod/$connect",
        "headers": {},
        "queryStringParameters": { "token": key.sign(&claims(json!({}))) },
        "requestContext": { "routeKey": "$connect", "eventType": "CONNECT", "connectionId": "PackagedCFJIAM=" }
    });
    let answer = invoke(&runtime, request).await;
    assert_eq!(answer["policyDocument"]["Statement"][0]["Effect"], "Allow", "{answer}");
    std::fs::remove_file(jwks).ok();

    let runtime = RuntimeApi::start().await;
    let _projector = runtime.spawn(&bootstrap("projector"), &env);
    let answer = invoke(&runtime, json!({ "Records": [] })).await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }));
}

/// The packaged connection handler run by `serve`'s Runtime API module, as
/// `serve --lambda` runs functions: a cold start, then the warm process.
#[tokio::test]
async fn the_packaged_handler_runs_in_a_function_pool() {
    use std::time::Duration;
    use wsledger::local::runtime_api::{FunctionPool, FunctionSpec, LogTarget};

    let (store, _) = dynamodb_local::fresh_store().await;
    let environment =
        dynamodb_local::bootstrap_env(store.tables()).into_iter().map(|(key, value)| (key.to_owned(), value)).collect();
    let pool = FunctionPool::new(FunctionSpec {
        name: "ConnectionHandlerFunction".into(),
        bootstrap: bootstrap("connection-handler").into(),
        environment,
        timeout: Duration::from_secs(10),
        memory_mb: 256,
        idle_stop: Duration::from_secs(60),
        logs: LogTarget::Terminal,
    });
    let now = chrono::Utc::now().timestamp_millis();
    let fixture = include_str!("../fixtures/apigw/connect.json");
    let connect = crate::lambda_runtime_api::websocket_event(fixture, "PoolCFJIAMCL=", now, now, None);
    assert_eq!(pool.invoke(connect).await.unwrap()["statusCode"], 200);
    let again = crate::lambda_runtime_api::websocket_event(fixture, "Pool2CFJIAMC=", now, now + 1, None);
    assert_eq!(pool.invoke(again).await.unwrap()["statusCode"], 200);
    assert_eq!(pool.idle_processes(), 1, "one warm process served both");
    pool.stop().await;
}
