//! What `serve --lambda` reads from a SAM template: the WebSocket API (route
//! selection, routes and their integrations, route responses, the `$connect`
//! authorizer and its identity sources) and each Lambda function (artifact, timeout,
//! memory, environment from `Globals` and its own), with the intrinsic functions of
//! those values resolved for a local run: parameters (defaults, then
//! `--parameter-overrides`), conditions, `!Ref`/`!GetAtt`/`!Sub` of the tables to the
//! local table names, and the Management API endpoint to `serve`'s own.
//!
//! The types live here; `read` reads a template resource kind by resource kind, and
//! `intrinsics` resolves the intrinsic functions of its values.
//!
//! Whatever the emulator does not do (another route integration type, an HTTP API,
//! a function in another runtime, an event source other than a DynamoDB stream or a
//! schedule) is named in [`LambdaApp::unsupported`], never silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

mod intrinsics;
mod read;

pub use read::read;

/// Where a `$connect` authorizer reads its identity: API Gateway refuses a
/// `$connect` that lacks any of them with 401, before the authorizer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// `route.request.querystring.NAME`
    Query(String),
    /// `route.request.header.NAME` (case-insensitive)
    Header(String),
}

impl IdentitySource {
    fn parse(text: &str) -> Option<Self> {
        if let Some(name) = text.strip_prefix("route.request.querystring.") {
            return Some(IdentitySource::Query(name.to_owned()));
        }
        text.strip_prefix("route.request.header.").map(|name| IdentitySource::Header(name.to_ascii_lowercase()))
    }

    /// Whether a request with this query and these headers (names in lower case)
    /// carries this source, non-empty.
    pub fn present(&self, query: &HashMap<String, String>, headers: &HashMap<String, String>) -> bool {
        let value = match self {
            IdentitySource::Query(name) => query.get(name),
            IdentitySource::Header(name) => headers.get(name),
        };
        value.is_some_and(|value| !value.trim().is_empty())
    }
}

/// The `$connect` authorizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorizer {
    /// The logical id of its function.
    pub function: String,
    pub identity_sources: Vec<IdentitySource>,
}

/// One route of the WebSocket API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The logical id of the function its integration invokes.
    pub function: String,
    /// Whether the integration's answer is sent back to the client (a route
    /// response exists).
    pub route_response: bool,
    pub authorized: bool,
}

/// One Lambda function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary` (cargo-lambda's layout).
    pub binary: Option<String>,
    pub runtime: String,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// Resolved, `Globals` first, the function's own over them.
    pub environment: BTreeMap<String, String>,
}

/// A DynamoDB stream trigger of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTrigger {
    pub function: String,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
}

/// A schedule trigger of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleTrigger {
    pub function: String,
    /// `rate(...)` or `cron(...)`, as written.
    pub schedule: String,
    /// The schedule's `Input`: the event the function gets instead of EventBridge's
    /// "Scheduled Event" (JSON text, as in the template).
    pub input: Option<String>,
}

impl ScheduleTrigger {
    /// How often a `rate(N unit)` schedule fires; `None` for `cron(...)` (which
    /// `serve` does not emulate: the caller falls back to its own interval).
    pub fn interval(&self) -> Option<Duration> {
        let inner = self.schedule.trim().strip_prefix("rate(")?.strip_suffix(')')?;
        let (count, unit) = inner.trim().split_once(' ')?;
        let count: u64 = count.parse().ok().filter(|count| *count > 0)?;
        let seconds = match unit.trim() {
            "minute" | "minutes" => 60,
            "hour" | "hours" => 3_600,
            "day" | "days" => 86_400,
            _ => return None,
        };
        Some(Duration::from_secs(count * seconds))
    }
}

/// The WebSocket API and functions of a template, resolved for a local run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaApp {
    /// `$request.body.action`, say; `None`: every message goes to `$default`.
    pub route_selection: Option<String>,
    pub routes: BTreeMap<String, RouteSpec>,
    pub authorizer: Option<Authorizer>,
    pub functions: BTreeMap<String, Function>,
    pub streams: Vec<StreamTrigger>,
    pub schedules: Vec<ScheduleTrigger>,
    /// What the template asks for that the emulator does not do, one entry each.
    pub unsupported: Vec<String>,
    /// The region the local run stands in (`AWS::Region`, the functions'
    /// `AWS_REGION`, scheduled events' `region`).
    pub region: String,
}

impl LambdaApp {
    /// The logical ids of the functions the API, the stream and the schedules
    /// invoke: the ones `serve --lambda` runs, once each, in order.
    pub fn invoked_functions(&self) -> Vec<&str> {
        let mut invoked: Vec<&str> = self.routes.values().map(|route| route.function.as_str()).collect();
        invoked.extend(self.authorizer.as_ref().map(|authorizer| authorizer.function.as_str()));
        invoked.extend(self.streams.iter().map(|stream| stream.function.as_str()));
        invoked.extend(self.schedules.iter().map(|schedule| schedule.function.as_str()));
        invoked.sort_unstable();
        invoked.dedup();
        invoked
    }
}

/// What the local run substitutes for the cloud's values.
#[derive(Debug, Clone, Default)]
pub struct LocalValues {
    /// `--parameter-overrides`, over the parameters' defaults.
    pub parameters: HashMap<String, String>,
    /// `AWS::Region`.
    pub region: String,
    /// `serve`'s own Management API endpoint (`http://127.0.0.1:PORT/STAGE`): what a
    /// value naming the WebSocket API's endpoint becomes.
    pub management_endpoint: String,
}

/// Parses `Key=Value` pairs (and SAM's `ParameterKey=K,ParameterValue=V`).
pub fn parse_parameter_overrides(pairs: &[String]) -> Result<HashMap<String, String>, String> {
    let mut parameters = HashMap::new();
    for pair in pairs.iter().flat_map(|pair| pair.split_whitespace()) {
        if let Some(rest) = pair.strip_prefix("ParameterKey=") {
            let (key, value) = rest
                .split_once(",ParameterValue=")
                .ok_or_else(|| format!("{pair:?}: expected ParameterKey=K,ParameterValue=V"))?;
            parameters.insert(key.to_owned(), value.to_owned());
            continue;
        }
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("{pair:?}: expected Key=Value"))?;
        if key.is_empty() {
            return Err(format!("{pair:?}: the parameter has no name"));
        }
        parameters.insert(key.to_owned(), value.to_owned());
    }
    Ok(parameters)
}

/// `sam local`'s `--env-vars` file: `{"LogicalId": {"VAR": "value"}, "Parameters":
/// {"VAR": "value"}}`; the variables under `Parameters` go to every function.
/// Values may be strings, numbers or booleans.
pub fn apply_env_vars(app: &mut LambdaApp, json: &str) -> Result<(), String> {
    let file: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|error| format!("the --env-vars file is not a JSON object: {error}"))?;
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        serde_json::Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    };
    let apply = |function: &mut Function, variables: &serde_json::Value, scope: &str| -> Result<(), String> {
        let variables = variables.as_object().ok_or_else(|| format!("--env-vars: {scope} is not an object"))?;
        for (name, value) in variables {
            let value = text(value).ok_or_else(|| format!("--env-vars: {scope}.{name} is not a string"))?;
            function.environment.insert(name.clone(), value);
        }
        Ok(())
    };
    if let Some(shared) = file.get("Parameters") {
        for function in app.functions.values_mut() {
            apply(function, shared, "Parameters")?;
        }
    }
    for (logical_id, variables) in file.iter().filter(|(key, _)| key.as_str() != "Parameters") {
        let function = app
            .functions
            .get_mut(logical_id)
            .ok_or_else(|| format!("--env-vars names {logical_id}, which is not a function of the template"))?;
        apply(function, variables, logical_id)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../../../template.yaml");

    fn local() -> LocalValues {
        LocalValues {
            parameters: HashMap::from([
                ("EventsTableName".into(), "local-events".into()),
                ("UserPoolId".into(), "us-east-1_Local".into()),
            ]),
            region: "us-east-1".into(),
            management_endpoint: "http://127.0.0.1:8080/prod".into(),
        }
    }

    #[test]
    fn the_projects_template_reads_as_deployed() {
        let app = read(TEMPLATE, &local()).unwrap();
        assert_eq!(app.route_selection.as_deref(), Some("$request.body.action"));
        assert_eq!(app.routes.keys().collect::<Vec<_>>(), ["$connect", "$default", "$disconnect"]);
        assert!(app.routes.values().all(|route| route.function == "ConnectionHandlerFunction"));
        assert!(app.routes["$default"].route_response && !app.routes["$connect"].route_response);
        assert!(app.routes["$connect"].authorized && !app.routes["$default"].authorized);
        let authorizer = app.authorizer.as_ref().unwrap();
        assert_eq!(authorizer.function, "AuthorizerFunction");
        assert_eq!(authorizer.identity_sources, [IdentitySource::Query("token".into())]);

        let handler = &app.functions["ConnectionHandlerFunction"];
        assert_eq!(handler.binary.as_deref(), Some("connection-handler"));
        assert_eq!((handler.timeout, handler.memory_mb), (Duration::from_secs(29), 512));
        assert_eq!(handler.environment["EVENTS_TABLE_NAME"], "local-events", "an override");
        assert_eq!(handler.environment["CONNECTIONS_TABLE_NAME"], "wsledger-connections", "a default");
        assert_eq!(handler.environment["WEBSOCKET_API_ENDPOINT"], "http://127.0.0.1:8080/prod", "serve's own");
        assert!(handler.environment.contains_key("MAX_LEDGER_EVENTS_PER_MINUTE"), "its own over Globals");
        assert!(
            !app.functions["AuthorizerFunction"].environment.contains_key("USER_POOL_CLIENT_ID"),
            "!If with an empty client id gives AWS::NoValue"
        );
        assert_eq!(app.functions["ProjectorFunction"].timeout, Duration::from_secs(120));
        let stream = &app.streams[0];
        assert_eq!(
            (stream.function.as_str(), stream.batch_size, stream.batching_window, stream.report_batch_item_failures),
            ("ProjectorFunction", 100, Duration::from_secs(1), true)
        );
        assert_eq!(app.schedules[0].function, "ProjectorFunction");
        assert_eq!(app.schedules[0].interval(), Some(Duration::from_secs(300)), "{}", app.schedules[0].schedule);
        let schedule =
            |text: &str| ScheduleTrigger { function: "F".into(), schedule: text.into(), input: None }.interval();
        assert_eq!(schedule("rate(1 hour)"), Some(Duration::from_secs(3_600)));
        assert_eq!(schedule("cron(0 12 * * ? *)"), None);
        assert_eq!(schedule("rate(0 minutes)"), None);
        assert!(app.unsupported.is_empty(), "{:?}", app.unsupported);
    }

    #[test]
    fn a_client_id_parameter_turns_the_condition_on() {
        let mut values = local();
        values.parameters.insert("UserPoolClientId".into(), "client-1".into());
        let app = read(TEMPLATE, &values).unwrap();
        assert_eq!(app.functions["AuthorizerFunction"].environment["USER_POOL_CLIENT_ID"], "client-1");
    }

    #[test]
    fn identity_sources_are_checked_as_api_gateway_checks_them() {
        let sources = [IdentitySource::Query("token".into()), IdentitySource::Header("authorization".into())];
        let query = HashMap::from([("token".to_owned(), "t".to_owned())]);
        let headers = HashMap::from([("authorization".to_owned(), "Bearer t".to_owned())]);
        let empty = HashMap::new();
        assert!(sources.iter().all(|source| source.present(&query, &headers)));
        assert!(!sources[0].present(&empty, &headers), "a header does not stand in for the query string");
        assert!(!sources[1].present(&query, &empty));
        let blank = HashMap::from([("token".to_owned(), " ".to_owned())]);
        assert!(!sources[0].present(&blank, &empty), "an empty source is missing");
        assert_eq!(
            IdentitySource::parse("route.request.header.Authorization"),
            Some(IdentitySource::Header("authorization".into()))
        );
    }

    #[test]
    fn what_the_emulator_does_not_do_is_named() {
        let python = "Resources:\n  PythonFunction:\n    Type: AWS::Serverless::Function\n    Properties:\n      Runtime: python3.12\n      Handler: app.handler\n";
        let extra = TEMPLATE.replacen("Resources:\n", python, 1);
        let app = read(&extra, &local()).unwrap();
        assert_eq!(app.unsupported.len(), 1, "{:?}", app.unsupported);
        assert!(app.unsupported[0].contains("PythonFunction") && app.unsupported[0].contains("python3.12"));
    }

    #[test]
    fn bad_overrides_and_env_vars_are_clear_errors() {
        assert_eq!(
            parse_parameter_overrides(&["A=1 ParameterKey=B,ParameterValue=2".into()]).unwrap(),
            HashMap::from([("A".into(), "1".into()), ("B".into(), "2".into())])
        );
        assert!(parse_parameter_overrides(&["novalue".into()]).unwrap_err().contains("Key=Value"));
        let mut values = local();
        values.parameters.insert("NoSuchParameter".into(), "x".into());
        assert!(read(TEMPLATE, &values).unwrap_err().contains("NoSuchParameter"));

        let mut app = read(TEMPLATE, &local()).unwrap();
        apply_env_vars(
            &mut app,
            r#"{"Parameters": {"RUST_LOG": "debug"}, "AuthorizerFunction": {"JWKS_URL": "http://127.0.0.1:9/jwks.json", "RETRIES": 3}}"#,
        )
        .unwrap();
        assert_eq!(app.functions["AuthorizerFunction"].environment["JWKS_URL"], "http://127.0.0.1:9/jwks.json");
        assert_eq!(app.functions["AuthorizerFunction"].environment["RETRIES"], "3");
        assert_eq!(app.functions["ProjectorFunction"].environment["RUST_LOG"], "debug");
        assert!(apply_env_vars(&mut app, r#"{"Nope": {}}"#).unwrap_err().contains("Nope"));
        assert!(apply_env_vars(&mut app, "[1]").is_err());
    }

    /// The template with `conditions` added to its Conditions and the authorizer's
    /// `USER_POOL_CLIENT_ID` set to `value`.
    fn with_conditions(conditions: &[(&str, String)], value: &str) -> String {
        let declared: String = conditions.iter().map(|(name, body)| format!("  {name}: {body}\n")).collect();
        TEMPLATE.replacen("Conditions:\n", &format!("Conditions:\n{declared}"), 1).replacen(
            "USER_POOL_CLIENT_ID: !If [HasClientId, !Ref UserPoolClientId, !Ref AWS::NoValue]",
            &format!("USER_POOL_CLIENT_ID: {value}"),
            1,
        )
    }

    #[test]
    fn a_cycle_of_conditions_or_nesting_without_end_is_one_clear_error() {
        let cycle = with_conditions(
            &[("LoopA", "!Condition LoopB".into()), ("LoopB", "!Not [!Condition LoopA]".into())],
            "!If [LoopA, yes, no]",
        );
        let error = read(&cycle, &local()).unwrap_err();
        assert!(error.contains("LoopA -> LoopB -> LoopA form a cycle"), "{error}");
        let itself = with_conditions(&[("Me", "!Condition Me".into())], "!If [Me, yes, no]");
        assert!(read(&itself, &local()).unwrap_err().contains("Me -> Me form a cycle"));
        let deep = format!("{}!Equals [a, a]{}", "!Not [".repeat(100), "]".repeat(100));
        let nested = with_conditions(&[("Deep", deep)], "!If [Deep, yes, no]");
        let error = read(&nested, &local()).unwrap_err();
        assert!(error.contains("nested more than 64 deep") || error.contains("not YAML"), "{error}");
    }

    fn intrinsic() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let condition = prop::sample::select(vec!["C0", "C1", "C2", "HasClientId", "Nope"]);
        let leaf = prop_oneof![
            Just("plain".to_owned()),
            Just("!Ref AWS::Region".to_owned()),
            Just("!Ref EventsTableName".to_owned()),
            Just("!Ref NoSuchThing".to_owned()),
            Just("!Ref AWS::NoValue".to_owned()),
            Just("!GetAtt EventsTable.Arn".to_owned()),
            Just("!Sub \"${AWS::Region}-${EventsTable.Arn}-${EventsTableName}\"".to_owned()),
            Just("!Sub \"${Missing}\"".to_owned()),
            Just("!Sub [\"${A}\", {A: !Ref AWS::Region}]".to_owned()),
            condition.clone().prop_map(|name| format!("!Condition {name}")),
            Just("!Unknown x".to_owned()),
        ];
        leaf.prop_recursive(6, 64, 4, move |inner| {
            prop_oneof![
                (condition.clone(), inner.clone(), inner.clone())
                    .prop_map(|(name, a, b)| format!("!If [{name}, {a}, {b}]")),
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|parts| format!("!Join [\"-\", [{}]]", parts.join(", "))),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("!Equals [{a}, {b}]")),
                inner.clone().prop_map(|a| format!("!Not [{a}]")),
                prop::collection::vec(inner.clone(), 0..3).prop_map(|parts| format!("!And [{}]", parts.join(", "))),
                prop::collection::vec(inner, 0..3).prop_map(|parts| format!("!Or [{}]", parts.join(", "))),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Any template of intrinsic functions, with conditions that may name each
        /// other in cycles, reads to an app or to an error: no panic, no hang.
        #[test]
        fn random_intrinsic_functions_never_panic_or_hang(
            c0 in intrinsic(), c1 in intrinsic(), c2 in intrinsic(), value in intrinsic(),
        ) {
            let template = with_conditions(&[("C0", c0), ("C1", c1), ("C2", c2)], &value);
            let _ = read(&template, &local());
        }
    }
}
