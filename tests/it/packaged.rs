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
    use wsledger::local::lambda::runtime_api::{FunctionPool, FunctionSpec, LogTarget};

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
        metrics: None,
        max_concurrency: 10,
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

/// `serve --lambda` as a developer runs it: the project's `template.yaml`, the three
/// packaged bootstraps, DynamoDB Local, and `limits`.
struct LambdaServe {
    server: wsledger::local::Server,
    routes: std::sync::Arc<wsledger::local::lambda::routes::LambdaRoutes>,
    store: wsledger::adapters::dynamodb::DynamoDbStore,
    key: SigningKey,
    _jwks: tempfile::NamedTempFile,
}

impl LambdaServe {
    async fn start(limits: wsledger::local::Limits) -> Self {
        Self::start_with(limits, None).await
    }

    /// With `management_token`, `@connections` needs it, and the functions sign
    /// their own calls with the credentials `serve` gave them.
    async fn start_with(limits: wsledger::local::Limits, management_token: Option<&str>) -> Self {
        use std::collections::HashMap;
        use std::sync::Arc;
        use std::time::Duration;
        use wsledger::local::lambda::routes::LambdaRoutes;
        use wsledger::local::lambda::runtime_api::LogTarget;
        use wsledger::local::lambda::template;
        use wsledger::local::{Backend, ServeConfig, Server};

        let (store, _) = dynamodb_local::fresh_store().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}/local");
        let local = template::LocalValues {
            parameters: HashMap::from([
                ("UserPoolId".to_owned(), USER_POOL_ID.to_owned()),
                ("UserPoolClientId".to_owned(), CLIENT_ID.to_owned()),
                ("EventsTableName".to_owned(), store.tables().events.clone()),
                ("ConnectionsTableName".to_owned(), store.tables().connections.clone()),
            ]),
            region: "us-east-1".into(),
            management_endpoint: endpoint.clone(),
        };
        let mut app = template::read(include_str!("../../template.yaml"), &local).unwrap();
        let key = SigningKey::generate("lambda-mode-key");
        let jwks = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(jwks.path(), json!({ "keys": [key.jwk.clone()] }).to_string()).unwrap();
        let mut shared: HashMap<&str, String> = dynamodb_local::bootstrap_env(store.tables()).into_iter().collect();
        shared.insert(wsledger::adapters::apigw::ENDPOINT_ENV, endpoint);
        let env_vars = json!({
            "Parameters": shared,
            "AuthorizerFunction": { "JWKS_FILE": jwks.path().display().to_string() },
        });
        template::apply_env_vars(&mut app, &env_vars.to_string()).unwrap();
        let credentials = wsledger::local::lambda::routes::prepare_functions(
            &mut app,
            dynamodb_local::endpoint(),
            &format!("http://127.0.0.1:{port}/local"),
            dynamodb_local::ACCESS_KEY.to_owned(),
        );
        wsledger::local::lambda::routes::refuse_remote_endpoints(&app).unwrap();
        let artifacts = PathBuf::from(bootstrap("connection-handler")).parent().unwrap().parent().unwrap().to_owned();
        let routes = Arc::new(LambdaRoutes::start(app, &artifacts, LogTarget::Terminal, 10).unwrap());
        let config = ServeConfig {
            listen: ([127, 0, 0, 1], port).into(),
            stage: "local".into(),
            limits,
            sweep_interval: Duration::from_secs(3_600),
            lambda: Some(routes.clone()),
            management_token: management_token.map(str::to_owned),
            function_credentials: vec![credentials],
            ..ServeConfig::default()
        };
        let streams = dynamodb_local::streams_client();
        let server = Server::start(config, Backend::DynamoDb { store: store.clone(), streams }).await.unwrap();
        Self { server, routes, store, key, _jwks: jwks }
    }

    fn token(&self) -> String {
        self.key.sign(&claims(json!({})))
    }

    fn user(&self) -> wsledger::domain::UserId {
        wsledger::domain::UserId::parse(claims(json!({}))["sub"].as_str().unwrap()).unwrap()
    }

    async fn connect(&self) -> crate::serve::Client {
        let url = format!("ws://{}/?token={}", self.server.local_addr(), self.token());
        tokio_tungstenite::connect_async(url).await.unwrap().0
    }

    /// The user's views once `ready` holds (projected by the projector bootstrap).
    async fn views_when(
        &self,
        ready: impl Fn(&[wsledger::domain::ConnectionInfo]) -> bool,
    ) -> Vec<wsledger::domain::ConnectionInfo> {
        use wsledger::ports::{PageRequest, ViewStore};
        let user = self.user();
        wsledger_testkit::eventually(std::time::Duration::from_secs(20), "the views projected", || async {
            let views = self.store.list_by_user(&user, None, PageRequest::default()).await.unwrap().items;
            ready(&views).then_some(views)
        })
        .await
    }

    async fn stop(self) {
        self.server.shutdown().await;
        self.routes.stop().await;
    }
}

/// A JWT in the query string passes the real authorizer; the real handler answers a
/// ping and an error frame; the connection is recorded and the projector bootstrap
/// folds it into the view, which the dashboard's live stream shows; the same token
/// in a header only is refused with 401 before the authorizer runs, as the
/// template's identity source says.
#[tokio::test]
async fn serve_lambda_runs_the_template_with_the_packaged_bootstraps() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use wsledger::domain::ConnectionStatus;

    let serve = LambdaServe::start(wsledger::local::Limits::default()).await;
    let mut header_only = format!("ws://{}/", serve.server.local_addr()).into_client_request().unwrap();
    header_only.headers_mut().insert("authorization", format!("Bearer {}", serve.token()).parse().unwrap());
    match tokio_tungstenite::connect_async(header_only).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        other => panic!("expected 401, got {other:?}"),
    }

    // The dashboard's live stream sees the views the projector bootstrap writes.
    let mut events = reqwest::get(format!("http://{}/api/stream", serve.server.local_addr())).await.unwrap();
    assert_eq!(events.status(), 200);
    let mut client = serve.connect().await;
    let user = serve.user();
    let streamed = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut seen = String::new();
        while let Ok(Some(chunk)) = events.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(user.as_str()) {
                return true;
            }
        }
        false
    });
    assert!(matches!(streamed.await, Ok(true)), "the live stream showed the new connection");
    client.send(Message::Text(r#"{"type":"ping"}"#.into())).await.unwrap();
    assert_eq!(crate::serve::next_text(&mut client).await, json!({ "type": "pong" }));
    client.send(Message::Text("not json".into())).await.unwrap();
    let error = crate::serve::next_text(&mut client).await;
    assert_eq!(error["type"], "error", "the handler's error frame, through the route response: {error}");
    client.close(None).await.unwrap();
    serve.views_when(|views| views.first().is_some_and(|view| view.status == ConnectionStatus::Disconnected)).await;
    // What the functions counted (their EMF lines) is in serve's /metrics.
    let metrics_url = format!("http://{}/metrics", serve.server.local_addr());
    let metrics =
        wsledger_testkit::eventually(std::time::Duration::from_secs(10), "the functions' metrics", || async {
            let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            (text.contains("wsledger_messages_total") && text.contains("wsledger_allowed_total")).then_some(text)
        })
        .await;
    assert!(metrics.contains("wsledger_records_total"), "the projector's counters too: {metrics}");
    serve.stop().await;
}

/// `@connections` POST reaches the client, GET describes it, DELETE closes it and `$disconnect` runs in the
/// handler bootstrap; the idle limit closes with 1001, a 200 KB message with 1009;
/// shutdown records the rest.
#[tokio::test]
async fn serve_lambda_keeps_the_emulators_behaviour() {
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use wsledger::domain::DisconnectReason;

    let limits = wsledger::local::Limits { idle_timeout: Duration::from_secs(3), ..wsledger::local::Limits::default() };
    let serve = LambdaServe::start(limits).await;
    let mut kicked = serve.connect().await;
    let views = serve.views_when(|views| views.len() == 1).await;
    let connection_id = views[0].connection_id.to_string();
    let sdk = crate::serve::management_client(&format!("http://{}/local", serve.server.local_addr()));
    crate::serve::post_notice_and_get(&sdk, &connection_id, &mut kicked).await;
    sdk.delete_connection().connection_id(&connection_id).send().await.unwrap();
    assert_eq!(crate::serve::next_close(&mut kicked).await.expect("a close frame").code, CloseCode::Normal);
    let views = serve
        .views_when(|views| views.iter().any(|view| view.disconnect_reason == Some(DisconnectReason::Kicked)))
        .await;
    assert_eq!(views.len(), 1);

    let mut idle = serve.connect().await;
    let close = tokio::time::timeout(Duration::from_secs(10), crate::serve::next_close(&mut idle)).await.unwrap();
    assert_eq!(close.expect("a close frame").code, CloseCode::Away, "the idle limit");

    let mut oversized = serve.connect().await;
    {
        use futures::SinkExt;
        let big = "x".repeat(200 * 1024);
        let _ = oversized.send(tokio_tungstenite::tungstenite::Message::Text(big.into())).await;
    }
    let close = crate::serve::next_close(&mut oversized).await.expect("a close frame");
    assert_eq!(close.code, CloseCode::Size, "1009");

    let _open = serve.connect().await;
    serve.views_when(|views| views.len() == 4).await;
    let store = serve.store.clone();
    let user = serve.user();
    serve.stop().await;
    // Shutdown ran $disconnect in the handler bootstrap for the open connection.
    use wsledger::ports::{EventStore, PageRequest};
    let history = store.user_history(&user, wsledger::domain::TimeRange::ALL, PageRequest::first(100)).await.unwrap();
    let ended = history.items.iter().filter(|event| event.kind() == wsledger::domain::EventKind::Disconnected).count();
    assert_eq!(ended, 4, "every connection's end is in the ledger");
}

/// The classic README's Node client, unchanged but for the URL (a token, which the
/// template's authorizer needs), against `serve --lambda`.
#[tokio::test]
async fn the_seed_readme_client_works_in_lambda_mode() {
    let serve = LambdaServe::start(wsledger::local::Limits::default()).await;
    let url = format!("ws://{}/?token={}", serve.server.local_addr(), serve.token());
    assert_eq!(crate::serve::run_seed_client(&url).await, crate::serve::SEED_SESSION);
    serve.views_when(|views| views.first().is_some_and(|view| !view.is_connected())).await;
    serve.stop().await;
}

/// Reconnect recovery in Lambda mode: the packaged handler serves a `resume` by
/// posting `resumed` and the missed messages through `serve`'s `@connections`
/// while `serve` waits for its answer.
#[tokio::test]
async fn a_resume_replays_through_the_packaged_handler_in_lambda_mode() {
    use futures::{SinkExt, StreamExt};
    let serve = LambdaServe::start(wsledger::local::Limits::default()).await;
    let window = chrono::TimeDelta::seconds(120);
    for n in 1..=2 {
        let data = json!({ "n": n }).to_string();
        wsledger::recovery::keep(&serve.store, &serve.user(), &data, wsledger::domain::Timestamp::now(), window)
            .await
            .unwrap();
    }
    let mut client = serve.connect().await;
    let resume = json!({"type":"resume","data":{"lastSeq":0}}).to_string();
    client.send(tokio_tungstenite::tungstenite::Message::text(resume)).await.unwrap();
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(20), client.next()).await.unwrap();
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = frame {
            frames.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
        }
    }
    assert_eq!(
        frames,
        vec![
            json!({"type":"resumed","data":{"lastSeq":0,"replayed":2}}),
            json!({"type":"delivery","seq":1,"data":{"n":1}}),
            json!({"type":"delivery","seq":2,"data":{"n":2}}),
        ]
    );
    serve.stop().await;
}

/// With `--management-token`, the functions' own `@connections` calls succeed (they
/// sign with the credentials `serve` gave them, which it verifies), so the sweep
/// closes a ghost; a caller with the token as key id but another secret, or any
/// other key, is refused.
#[tokio::test]
async fn the_sweep_works_with_a_management_token() {
    use std::time::Duration;
    use wsledger::domain::{ConnectionEvent, ConnectionId, DisconnectReason, EventEnvelope, Timestamp};
    use wsledger::ports::EventStore;

    let serve = LambdaServe::start_with(wsledger::local::Limits::default(), Some("m4nage")).await;
    // A ghost: connected three hours ago, its $disconnect never came.
    let ghost_at = Timestamp::now().minus(chrono::TimeDelta::hours(3));
    let ghost = EventEnvelope::for_request(
        ConnectionId::parse("GhostOfLambdaMode=").unwrap(),
        serve.user(),
        "ghost",
        ghost_at,
        ghost_at,
        ConnectionEvent::Connected { ip_address: None, user_agent: None },
    );
    serve.store.append(&ghost).await.unwrap();
    serve.views_when(|views| views.iter().any(|view| view.is_connected())).await;

    let (pools, _) = serve.routes.scheduled_functions(Duration::from_secs(60));
    assert_eq!(pools.len(), 2, "the template schedules the sweep and the presence follow-up");
    assert_eq!(pools[1].1, serde_json::json!({ "wsledger": "presence" }), "the presence schedule's Input");
    let sweep = &pools[0];
    assert_eq!(sweep.1["detail-type"], "Scheduled Event");
    sweep.0.invoke(sweep.1.clone()).await.unwrap();
    let views =
        serve.views_when(|views| views.iter().any(|view| view.disconnect_reason == Some(DisconnectReason::Gone))).await;
    assert_eq!(views.len(), 1);

    let endpoint = format!("http://{}/local", serve.server.local_addr());
    let client = |key: &str, secret: &str| {
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_sdk_apigatewaymanagement::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new(key, secret, None, None, "t"))
            .retry_config(aws_sdk_apigatewaymanagement::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_apigatewaymanagement::Client::from_conf(config)
    };
    let ask = |client: aws_sdk_apigatewaymanagement::Client| async move {
        match client.get_connection().connection_id("GhostOfLambdaMode=").send().await {
            Ok(_) => 200,
            Err(error) => error.raw_response().map_or(0, |response| response.status().as_u16()),
        }
    };
    assert_eq!(ask(client("m4nage", "m4nage")).await, 410, "the token as key id and secret");
    assert_eq!(ask(client("m4nage", "zeros")).await, 403, "a signature made with another secret");
    assert_eq!(ask(client(dynamodb_local::ACCESS_KEY, "zeros")).await, 403, "the functions' key id alone");
    serve.stop().await;
}
