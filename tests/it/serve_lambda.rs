//! `serve` with `ServeConfig::lambda`: the routes and the `$connect` authorizer of a
//! template run as Lambda functions, here a foreign bootstrap (Node.js,
//! `tests/fixtures/bootstraps/echo.js`) for every function, behind real sockets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wsledger::local::ServeConfig;
use wsledger::local::lambda::routes::LambdaRoutes;
use wsledger::local::lambda::runtime_api::LogTarget;
use wsledger::local::lambda::template;

use crate::serve::{App, next_text, test_config};
use crate::sqlite::temp_db;

const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: provided.al2023
    Handler: bootstrap
    Timeout: 2
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      MemorySize: 128
      Environment:
        Variables:
          GREETING: from-template
  AuthFunction:
    Type: AWS::Serverless::Function
  Api:
    Type: AWS::ApiGatewayV2::Api
    Properties:
      ProtocolType: WEBSOCKET
      RouteSelectionExpression: "$request.body.action"
  Integration:
    Type: AWS::ApiGatewayV2::Integration
    Properties:
      ApiId: !Ref Api
      IntegrationType: AWS_PROXY
      IntegrationUri: !Sub "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${EchoFunction.Arn}/invocations"
  Authorizer:
    Type: AWS::ApiGatewayV2::Authorizer
    Properties:
      ApiId: !Ref Api
      AuthorizerType: REQUEST
      AuthorizerUri: !Sub "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/${AuthFunction.Arn}/invocations"
      IdentitySource:
        - route.request.querystring.token
  ConnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $connect
      AuthorizationType: CUSTOM
      AuthorizerId: !Ref Authorizer
      Target: !Sub "integrations/${Integration}"
  DefaultRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $default
      Target: !Sub "integrations/${Integration}"
  DefaultResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties:
      ApiId: !Ref Api
      RouteId: !Ref DefaultRoute
      RouteResponseKey: $default
  SendRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: sendmessage
      Target: !Sub "integrations/${Integration}"
  SendResponse:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties:
      ApiId: !Ref Api
      RouteId: !Ref SendRoute
      RouteResponseKey: $default
  DisconnectRoute:
    Type: AWS::ApiGatewayV2::Route
    Properties:
      ApiId: !Ref Api
      RouteKey: $disconnect
      Target: !Sub "integrations/${Integration}"
"#;

/// `serve` on an embedded store with the template's routes, every function the
/// echo bootstrap (cargo-lambda's layout: ARTIFACTS/{LogicalId}/bootstrap).
async fn start() -> (App, Arc<LambdaRoutes>, tempfile::TempDir) {
    start_with(TEMPLATE, test_config()).await
}

async fn start_with(template_text: &str, config: ServeConfig) -> (App, Arc<LambdaRoutes>, tempfile::TempDir) {
    let artifacts = tempfile::tempdir().unwrap();
    let echo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/bootstraps/echo.js");
    for function in ["EchoFunction", "AuthFunction", "ScheduledFunction"] {
        std::fs::create_dir_all(artifacts.path().join(function)).unwrap();
        std::os::unix::fs::symlink(echo, artifacts.path().join(function).join("bootstrap")).unwrap();
    }
    let local = template::LocalValues {
        parameters: HashMap::new(),
        region: "eu-west-1".into(),
        management_endpoint: "http://127.0.0.1:1/local".into(),
    };
    let app = template::read(template_text, &local).unwrap();
    assert!(app.unsupported.is_empty(), "{:?}", app.unsupported);
    let routes = Arc::new(LambdaRoutes::start(app, artifacts.path(), LogTarget::Terminal, 10).unwrap());
    let config = ServeConfig { lambda: Some(routes.clone()), ..config };
    (App::start_config(temp_db(), config).await, routes, artifacts)
}

/// The handshake's HTTP status, or 101.
async fn handshake(app: &App, query: &str, authorization: Option<&str>) -> u16 {
    let mut request = format!("ws://{}/{query}", app.server.local_addr()).into_client_request().unwrap();
    if let Some(value) = authorization {
        request.headers_mut().insert("authorization", value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("the handshake failed otherwise: {other}"),
    }
}

#[tokio::test]
async fn identity_sources_are_checked_before_the_authorizer_runs() {
    let (app, routes, _artifacts) = start().await;
    assert_eq!(handshake(&app, "", None).await, 401, "no token anywhere");
    assert_eq!(
        handshake(&app, "", Some("Bearer good")).await,
        401,
        "a header does not stand in for the query string the template lists"
    );
    assert_eq!(routes.pool("AuthFunction").unwrap().idle_processes(), 0, "the authorizer never ran");
    assert_eq!(handshake(&app, "?token=bad", None).await, 403, "the authorizer's Deny");
    assert_eq!(handshake(&app, "?token=good", None).await, 101);
    routes.stop().await;
    app.server.shutdown().await;
}

#[tokio::test]
async fn routes_invoke_their_functions_and_answer_through_their_route_responses() {
    let (app, routes, _artifacts) = start().await;
    let url = format!("ws://{}/?token=good", app.server.local_addr());
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();

    client.send(Message::Text(r#"{"action":"sendmessage","text":"hi"}"#.into())).await.unwrap();
    let reply = next_text(&mut client).await;
    assert_eq!(reply["route"], "sendmessage");
    assert_eq!(reply["user"], "user-from-token", "the authorizer's context reaches the route");
    assert_eq!(reply["greeting"], "from-template", "the function's environment from the template");
    let pid = reply["pid"].clone();

    client.send(Message::Text(r#"{"hello":1}"#.into())).await.unwrap();
    let reply = next_text(&mut client).await;
    assert_eq!((reply["route"].as_str(), &reply["pid"]), (Some("$default"), &pid), "the warm process");

    // The function's timeout is 2 s: API Gateway's error message comes back.
    client.send(Message::Text(r#"{"action":"sendmessage","sleepMs":5000}"#.into())).await.unwrap();
    let reply: Value = tokio::time::timeout(Duration::from_secs(10), next_text(&mut client)).await.unwrap();
    assert_eq!(reply["message"], "Internal server error", "{reply}");
    assert!(reply["connectionId"].is_string() && reply["requestId"].is_string(), "{reply}");

    client.send(Message::Text(r#"{"action":"sendmessage"}"#.into())).await.unwrap();
    let reply = next_text(&mut client).await;
    assert_ne!(reply["pid"], pid, "the timed-out process was replaced");
    let pid = reply["pid"].clone();

    // A statusCode outside 100-599 (65736 would wrap to 200 as a u16) is a function error.
    for status in ["65736", "42", "-1", "\"200\""] {
        let message = format!(r#"{{"action":"sendmessage","statusCode":{status}}}"#);
        client.send(Message::Text(message.into())).await.unwrap();
        let reply = next_text(&mut client).await;
        assert_eq!(reply["message"], "Internal server error", "{status}: {reply}");
    }
    client.send(Message::Text(r#"{"action":"sendmessage"}"#.into())).await.unwrap();
    let reply = next_text(&mut client).await;
    assert_eq!(
        reply,
        json!({ "route": "sendmessage", "user": "user-from-token", "greeting": "from-template", "pid": pid })
    );
    routes.stop().await;
    app.server.shutdown().await;
}

/// `wsledger serve --lambda` refuses, in one line that says what to do, what it
/// cannot run.
#[tokio::test]
async fn the_cli_says_what_lambda_mode_needs() {
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
            .arg("serve")
            .args(args)
            .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
    assert!(run(&["--lambda", "--template", template]).contains("--store dynamodb"));
    let no_endpoint = run(&["--lambda", "--template", template, "--store", "dynamodb"]);
    assert!(no_endpoint.contains("DynamoDB Local") && no_endpoint.contains("--endpoint-url"), "{no_endpoint}");
    let on_dynamodb =
        ["--lambda", "--template", template, "--store", "dynamodb", "--endpoint-url", "http://127.0.0.1:9"];
    let with = |more: &[&str]| run(&[on_dynamodb.as_slice(), more].concat());
    let missing = with(&["--artifacts", "/nonexistent", "--parameter-overrides", "UserPoolId=us-east-1_Local"]);
    assert!(missing.contains("no bootstrap for") && missing.contains("scripts/package"), "{missing}");
    let unknown = with(&["--parameter-overrides", "Nope=1"]);
    assert!(unknown.contains("Nope"), "{unknown}");

    // Templates that would hang, escape --artifacts, or send requests off this
    // machine: one line each, a non-zero exit, and quickly.
    let project = include_str!("../../template.yaml");
    let dir = tempfile::tempdir().unwrap();
    let variant = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let cyclic = variant(
        "cyclic.yaml",
        project
            .replacen("Conditions:\n", "Conditions:\n  LoopA: !Condition LoopB\n  LoopB: !Condition LoopA\n", 1)
            .replacen("!If [HasClientId,", "!If [LoopA,", 1),
    );
    let escaping = variant("escaping.yaml", project.replacen("Binary: authorizer", "Binary: ../../../bin", 1));
    let remote = variant(
        "remote.yaml",
        project.replacen(
            "MAX_CONNECTIONS_PER_USER: !Ref MaxConnectionsPerUser",
            "MAX_CONNECTIONS_PER_USER: !Ref MaxConnectionsPerUser\n          AWS_ENDPOINT_URL_DYNAMODB: https://dynamodb.us-east-1.amazonaws.com",
            1,
        ),
    );
    let overrides = ["--parameter-overrides", "UserPoolId=us-east-1_Local", "--artifacts", "/nonexistent"];
    for (template, expected) in [
        (&cyclic, "LoopA -> LoopB -> LoopA form a cycle"),
        (&escaping, "is not a plain folder name"),
        (&remote, "is not on this machine"),
    ] {
        let started = std::time::Instant::now();
        let args = ["--lambda", "--template", template, "--store", "dynamodb", "--endpoint-url", "http://127.0.0.1:9"];
        let stderr = run(&[args.as_slice(), &overrides].concat());
        assert!(stderr.contains(expected), "{template}: {stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "{template}: no hang");
    }
}

/// Without `--artifacts` and with no bootstraps built, `serve --lambda` builds them
/// with `cargo lambda build --release` first, saying so (here a stand-in `cargo` on
/// PATH records the call and leaves bootstraps where cargo-lambda would).
#[tokio::test]
async fn missing_artifacts_are_built_with_cargo_lambda_first() {
    use tokio::io::AsyncBufReadExt;

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake_cargo = bin.join("cargo");
    std::fs::write(
        &fake_cargo,
        "#!/bin/sh\necho \"$@\" > \"$FAKE_CARGO_LOG\"\nprev=\"\"\nfor arg in \"$@\"; do\n  \
         if [ \"$prev\" = \"--lambda-dir\" ]; then out=\"$arg\"; fi\n  \
         if [ \"$prev\" = \"--bin\" ]; then mkdir -p \"$out/$arg\"; printf '#!/bin/sh\\n' > \"$out/$arg/bootstrap\"; \
         chmod +x \"$out/$arg/bootstrap\"; fi\n  prev=\"$arg\"\ndone\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake_cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = dir.path().join("cargo.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let template = concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml");
    let (store, _) = crate::dynamodb_local::fresh_store().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--lambda", "--template", template, "--store", "dynamodb"])
        .args(["--parameter-overrides", "UserPoolId=us-east-1_Local"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--stream-checkpoint")
        .arg(dir.path().join("checkpoint.json"))
        .current_dir(dir.path())
        .envs(crate::dynamodb_local::bootstrap_env(store.tables()))
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .env("FAKE_CARGO_LOG", &log)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
        let listening = line.contains("listening on");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill().await;
    let seen = seen.join("\n");
    assert!(seen.contains("building:") && seen.contains("cargo lambda"), "{seen}");
    let call = std::fs::read_to_string(&log).expect("cargo was called");
    assert!(call.starts_with("lambda build --release --lambda-dir"), "{call}");
    for binary in ["authorizer", "connection-handler", "projector"] {
        assert!(call.contains(&format!("--bin {binary}")), "{call}");
        assert!(dir.path().join("target/lambda").join(binary).join("bootstrap").is_file());
    }
    assert!(seen.contains("listening on"), "serve started with the built artifacts: {seen}");

    // The same, with DynamoDB not running: one line at start that says so.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(["serve", "--lambda", "--template", template, "--store", "dynamodb"])
        .args(["--endpoint-url", "http://127.0.0.1:9", "--parameter-overrides", "UserPoolId=us-east-1_Local"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--artifacts")
        .arg(dir.path().join("target/lambda"))
        .envs([("AWS_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("unreachable") && stderr.contains("DynamoDB Local"), "{stderr}");
}

/// A function with a schedule is invoked with EventBridge's scheduled event; a
/// `cron(...)` schedule runs at `serve`'s sweep interval.
#[tokio::test]
async fn a_scheduled_function_gets_scheduled_events() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let scheduled = format!(
        "{}\n  ScheduledFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n      Environment:\n        \
         Variables:\n          SCHEDULE_LOG: {}\n      Events:\n        Sweep:\n          Type: Schedule\n          \
         Properties:\n            Schedule: cron(0/5 * * * ? *)\n",
        TEMPLATE.trim_end(),
        log.path().display()
    );
    let config = ServeConfig { sweep_interval: Duration::from_millis(300), ..test_config() };
    let (app, routes, _artifacts) = start_with(&scheduled, config).await;
    let (pools, interval) = routes.scheduled_functions(Duration::from_millis(300));
    assert_eq!((pools.len(), interval), (1, Duration::from_millis(300)), "cron falls back to the sweep interval");
    // The events name the local run's region, as the functions' AWS_REGION does.
    wsledger_testkit::eventually(Duration::from_secs(10), "two scheduled events", || async {
        let noted = std::fs::read_to_string(log.path()).unwrap_or_default();
        (noted.lines().filter(|line| line.starts_with("aws.events eu-west-1 ")).count() >= 2).then_some(())
    })
    .await;
    routes.stop().await;
    app.server.shutdown().await;
}

/// A template whose `$connect` uses no authorizer: `serve --auth` says who
/// connects, as without `--lambda`, and the routes still run as functions.
#[tokio::test]
async fn without_an_authorizer_on_connect_serve_auth_decides() {
    let open = TEMPLATE.replace("      AuthorizationType: CUSTOM\n      AuthorizerId: !Ref Authorizer\n", "");
    assert_ne!(open, TEMPLATE);
    let (app, routes, _artifacts) = start_with(&open, test_config()).await;
    assert!(routes.connect_authorizer().is_none());
    let url = format!("ws://{}/?userId=user-dev", app.server.local_addr());
    let (mut client, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    client.send(Message::Text(r#"{"action":"sendmessage"}"#.into())).await.unwrap();
    let reply = next_text(&mut client).await;
    assert_eq!((reply["route"].as_str(), reply["user"].as_str()), (Some("sendmessage"), Some("user-dev")));
    routes.stop().await;
    app.server.shutdown().await;
}
