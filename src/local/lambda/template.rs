//! What `serve --lambda` reads from a SAM template: the WebSocket API (route
//! selection, routes and their integrations, route responses, the `$connect`
//! authorizer and its identity sources) and each Lambda function (artifact, timeout,
//! memory, environment from `Globals` and its own), with the intrinsic functions of
//! those values resolved for a local run: parameters (defaults, then
//! `--parameter-overrides`), conditions, `!Ref`/`!GetAtt`/`!Sub` of the tables to the
//! local table names, and the Management API endpoint to `serve`'s own.
//!
//! Whatever the emulator does not do (another route integration type, an HTTP API,
//! a function in another runtime, an event source other than a DynamoDB stream or a
//! schedule) is named in [`LambdaApp::unsupported`], never silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_yaml::Value;

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
pub struct Route {
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
    pub routes: BTreeMap<String, Route>,
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

/// Reads `yaml` (a SAM template) with `local`'s values.
pub fn read(yaml: &str, local: &LocalValues) -> Result<LambdaApp, String> {
    let template: Value = serde_yaml::from_str(yaml).map_err(|error| format!("the template is not YAML: {error}"))?;
    let resources = template.get("Resources").and_then(Value::as_mapping).ok_or("the template has no Resources")?;
    let mut reader = Reader { resources, resolver: Resolver::new(&template, local)?, unsupported: Vec::new() };
    let route_selection = reader.websocket_api()?;
    let integrations = reader.integrations()?;
    let routes = reader.routes(&integrations)?;
    let authorizer = reader.authorizer()?;
    let globals = template.get("Globals").and_then(|globals| globals.get("Function")).cloned().unwrap_or(Value::Null);
    let (functions, streams, schedules) = reader.functions(&globals)?;
    for (key, route) in &routes {
        if !functions.contains_key(&route.function) {
            reader.unsupported.push(format!("route {key}: its function {} does not run locally", route.function));
        }
    }
    Ok(LambdaApp {
        route_selection,
        routes,
        authorizer,
        functions,
        streams,
        schedules,
        unsupported: reader.unsupported,
        region: local.region.clone(),
    })
}

/// The functions of a template and their triggers.
type FunctionsAndTriggers = (BTreeMap<String, Function>, Vec<StreamTrigger>, Vec<ScheduleTrigger>);

/// A template being read: its resources, the resolver of its intrinsic functions,
/// and what it asks that the emulator does not do.
struct Reader<'t> {
    resources: &'t serde_yaml::Mapping,
    resolver: Resolver<'t>,
    unsupported: Vec<String>,
}

fn props(resource: &Value) -> Value {
    resource.get("Properties").cloned().unwrap_or(Value::Null)
}

impl<'t> Reader<'t> {
    /// The resources of type `wanted`, with their logical ids.
    fn of_type(&self, wanted: &str) -> Vec<(String, &'t Value)> {
        self.resources
            .iter()
            .filter(|(_, resource)| resource.get("Type").and_then(Value::as_str) == Some(wanted))
            .filter_map(|(id, resource)| Some((id.as_str()?.to_owned(), resource)))
            .collect()
    }

    /// The one WebSocket API (its id goes to the resolver); its route selection expression.
    fn websocket_api(&mut self) -> Result<Option<String>, String> {
        let apis = self.of_type("AWS::ApiGatewayV2::Api");
        let websocket: Vec<_> = apis
            .iter()
            .filter(|(_, api)| props(api).get("ProtocolType").and_then(Value::as_str) == Some("WEBSOCKET"))
            .collect();
        let (api_id, api) = match websocket.as_slice() {
            [one] => (one.0.clone(), props(one.1)),
            [] => return Err("the template has no AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET".into()),
            _ => return Err("the template has more than one WebSocket API; serve emulates one".into()),
        };
        if apis.len() > websocket.len() {
            self.unsupported.push("HTTP APIs (AWS::ApiGatewayV2::Api with ProtocolType HTTP)".to_owned());
        }
        self.resolver.api_id = Some(api_id);
        api.get("RouteSelectionExpression").map(|expression| self.resolver.text(expression)).transpose()
    }

    /// Integrations: logical id -> the function they invoke.
    fn integrations(&mut self) -> Result<HashMap<String, String>, String> {
        let mut integrations = HashMap::new();
        for (id, integration) in self.of_type("AWS::ApiGatewayV2::Integration") {
            let properties = props(integration);
            let kind = properties.get("IntegrationType").and_then(Value::as_str).unwrap_or_default();
            let uri = properties.get("IntegrationUri").map(|uri| self.resolver.function_in(uri)).transpose()?.flatten();
            match (kind, uri) {
                ("AWS_PROXY", Some(function)) => {
                    integrations.insert(id, function);
                }
                _ => self.unsupported.push(format!("integration {id} ({kind} not to a function of the template)")),
            }
        }
        Ok(integrations)
    }

    /// Routes by key, with their route responses.
    fn routes(&mut self, integrations: &HashMap<String, String>) -> Result<BTreeMap<String, Route>, String> {
        let mut route_ids = HashMap::new();
        let mut routes = BTreeMap::new();
        for (id, route) in self.of_type("AWS::ApiGatewayV2::Route") {
            let properties = props(route);
            let key = properties.get("RouteKey").map(|key| self.resolver.text(key)).transpose()?.unwrap_or_default();
            let target = properties.get("Target").map(|target| self.resolver.text(target)).transpose()?;
            let Some(function) = target
                .as_deref()
                .and_then(|target| target.strip_prefix("integrations/"))
                .and_then(|integration| integrations.get(integration))
            else {
                self.unsupported.push(format!("route {key} ({id}) without a Lambda proxy integration"));
                continue;
            };
            let authorized = properties.get("AuthorizationType").and_then(Value::as_str) == Some("CUSTOM");
            route_ids.insert(id, key.clone());
            routes.insert(key, Route { function: function.clone(), route_response: false, authorized });
        }
        for (id, response) in self.of_type("AWS::ApiGatewayV2::RouteResponse") {
            let route = props(response).get("RouteId").map(|route| self.resolver.text(route)).transpose()?;
            match route.and_then(|route| route_ids.get(&route)).and_then(|key| routes.get_mut(key)) {
                Some(route) => route.route_response = true,
                None => self.unsupported.push(format!("route response {id} of a route the emulator does not serve")),
            }
        }
        Ok(routes)
    }

    /// The `$connect` authorizer, if any (at most one, of type REQUEST).
    fn authorizer(&mut self) -> Result<Option<Authorizer>, String> {
        let mut authorizers = self.of_type("AWS::ApiGatewayV2::Authorizer");
        if authorizers.len() > 1 {
            return Err("the template has more than one authorizer; serve emulates one on $connect".into());
        }
        let Some((id, authorizer)) = authorizers.pop() else { return Ok(None) };
        let properties = props(authorizer);
        if properties.get("AuthorizerType").and_then(Value::as_str) != Some("REQUEST") {
            return Err(format!("authorizer {id}: only REQUEST authorizers exist for WebSocket APIs"));
        }
        let function = properties
            .get("AuthorizerUri")
            .map(|uri| self.resolver.function_in(uri))
            .transpose()?
            .flatten()
            .ok_or_else(|| format!("authorizer {id} does not invoke a function of the template"))?;
        let mut identity_sources = Vec::new();
        for source in properties.get("IdentitySource").and_then(Value::as_sequence).into_iter().flatten() {
            let text = self.resolver.text(source)?;
            match IdentitySource::parse(&text) {
                Some(source) => identity_sources.push(source),
                None => self.unsupported.push(format!("identity source {text} (query strings and headers are)")),
            }
        }
        Ok(Some(Authorizer { function, identity_sources }))
    }

    /// The `provided.*` functions (Globals, then their own properties) and their
    /// stream and schedule triggers.
    fn functions(&mut self, globals: &Value) -> Result<FunctionsAndTriggers, String> {
        let mut functions = BTreeMap::new();
        let (mut streams, mut schedules) = (Vec::new(), Vec::new());
        for (id, function) in self.of_type("AWS::Serverless::Function") {
            let properties = props(function);
            let setting = |name: &str| properties.get(name).or_else(|| globals.get(name)).cloned();
            let runtime = setting("Runtime").map(|value| self.resolver.text(&value)).transpose()?.unwrap_or_default();
            if !runtime.starts_with("provided") {
                self.unsupported
                    .push(format!("function {id} in runtime {runtime} (only provided.al2023 and provided.al2 run)"));
                continue;
            }
            let timeout = Duration::from_secs(self.number(&id, setting("Timeout"), 3)?);
            let memory_mb = u32::try_from(self.number(&id, setting("MemorySize"), 128)?).unwrap_or(u32::MAX);
            let environment = self.environment([globals, &properties])?;
            let binary = function
                .get("Metadata")
                .and_then(|metadata| metadata.get("BuildProperties"))
                .and_then(|properties| properties.get("Binary"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            self.triggers(&id, &properties, &mut streams, &mut schedules)?;
            functions.insert(id.clone(), Function { logical_id: id, binary, runtime, timeout, memory_mb, environment });
        }
        Ok((functions, streams, schedules))
    }

    /// A whole number setting of function `id`, or `default`.
    fn number(&self, id: &str, value: Option<Value>, default: u64) -> Result<u64, String> {
        match value {
            None => Ok(default),
            Some(value) => self.resolver.text(&value)?.parse().map_err(|_| format!("{id}: not a number")),
        }
    }

    /// A function's environment: the Globals' variables, then its own
    /// (`AWS::NoValue` removes one).
    fn environment(&self, scopes: [&Value; 2]) -> Result<BTreeMap<String, String>, String> {
        let mut environment = BTreeMap::new();
        for variables in scopes
            .into_iter()
            .filter_map(|scope| scope.get("Environment").and_then(|env| env.get("Variables")))
            .filter_map(Value::as_mapping)
        {
            for (name, value) in variables {
                let name = name.as_str().unwrap_or_default().to_owned();
                match self.resolver.resolve(value)? {
                    Some(value) => environment.insert(name, value),
                    None => environment.remove(&name),
                };
            }
        }
        Ok(environment)
    }

    /// Function `id`'s `Events`: DynamoDB stream and schedule triggers.
    fn triggers(
        &mut self,
        id: &str,
        properties: &Value,
        streams: &mut Vec<StreamTrigger>,
        schedules: &mut Vec<ScheduleTrigger>,
    ) -> Result<(), String> {
        for (name, event) in properties.get("Events").and_then(Value::as_mapping).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            let event_properties = event.get("Properties").cloned().unwrap_or(Value::Null);
            match event.get("Type").and_then(Value::as_str) {
                Some("DynamoDB") => streams.push(StreamTrigger {
                    function: id.to_owned(),
                    batch_size: self.number(id, event_properties.get("BatchSize").cloned(), 100)? as usize,
                    batching_window: Duration::from_secs(self.number(
                        id,
                        event_properties.get("MaximumBatchingWindowInSeconds").cloned(),
                        0,
                    )?),
                    report_batch_item_failures: event_properties
                        .get("FunctionResponseTypes")
                        .and_then(Value::as_sequence)
                        .is_some_and(|types| types.iter().any(|kind| kind.as_str() == Some("ReportBatchItemFailures"))),
                }),
                Some("Schedule") => {
                    let schedule =
                        event_properties.get("Schedule").map(|value| self.resolver.text(value)).transpose()?;
                    schedules.push(ScheduleTrigger { function: id.to_owned(), schedule: schedule.unwrap_or_default() });
                }
                other => self.unsupported.push(format!("event {name} of {id} ({})", other.unwrap_or("no type"))),
            }
        }
        Ok(())
    }
}

/// Resolves intrinsic functions for a local run.
struct Resolver<'a> {
    local: &'a LocalValues,
    parameters: HashMap<String, String>,
    conditions: HashMap<String, Value>,
    /// Tables: logical id -> table name.
    tables: HashMap<String, String>,
    resource_types: HashMap<String, String>,
    api_id: Option<String>,
    /// The conditions being evaluated, outermost first: a name already here is a cycle.
    evaluating: std::cell::RefCell<Vec<String>>,
    /// How deep the intrinsic functions being resolved are nested.
    depth: std::cell::Cell<usize>,
}

/// How deep intrinsic functions may nest (CloudFormation's own templates stay far below).
const MAX_DEPTH: usize = 64;

impl<'a> Resolver<'a> {
    fn new(template: &Value, local: &'a LocalValues) -> Result<Self, String> {
        let declared = template.get("Parameters").and_then(Value::as_mapping);
        for name in local.parameters.keys() {
            if !declared.is_some_and(|declared| declared.contains_key(name.as_str())) {
                return Err(format!("--parameter-overrides names {name}, which is not a parameter of the template"));
            }
        }
        let mut parameters = HashMap::new();
        for (name, parameter) in template.get("Parameters").and_then(Value::as_mapping).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default().to_owned();
            let value = match (local.parameters.get(&name), parameter.get("Default")) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => {
                    scalar(default).ok_or_else(|| format!("parameter {name}: a default that is not text"))?
                }
                (None, None) => {
                    return Err(format!(
                        "parameter {name} has no default: give it with --parameter-overrides {name}=VALUE"
                    ));
                }
            };
            parameters.insert(name, value);
        }
        let conditions = template
            .get("Conditions")
            .and_then(Value::as_mapping)
            .map(|conditions| {
                conditions.iter().filter_map(|(name, value)| Some((name.as_str()?.to_owned(), value.clone()))).collect()
            })
            .unwrap_or_default();
        let mut resolver = Self {
            local,
            parameters,
            conditions,
            tables: HashMap::new(),
            resource_types: HashMap::new(),
            api_id: None,
            evaluating: std::cell::RefCell::default(),
            depth: std::cell::Cell::new(0),
        };
        for (id, resource) in template.get("Resources").and_then(Value::as_mapping).into_iter().flatten() {
            let id = id.as_str().unwrap_or_default().to_owned();
            let kind = resource.get("Type").and_then(Value::as_str).unwrap_or_default().to_owned();
            if kind == "AWS::DynamoDB::Table" {
                let name = match resource.get("Properties").and_then(|properties| properties.get("TableName")) {
                    Some(name) => resolver.text(name)?,
                    None => id.clone(),
                };
                resolver.tables.insert(id.clone(), name);
            }
            resolver.resource_types.insert(id, kind);
        }
        Ok(resolver)
    }

    /// A value as text; `!Ref AWS::NoValue` is an error here. `!Ref` and `${...}` of a
    /// resource that is not a table give its logical id (`Target: integrations/${X}`,
    /// `RouteId: !Ref X`).
    fn text(&self, value: &Value) -> Result<String, String> {
        self.resolve(value)?.ok_or_else(|| "AWS::NoValue where a value is needed".to_owned())
    }

    /// The logical id of the function an invocation ARN names (`${X.Arn}` in a `!Sub`
    /// or `!GetAtt X.Arn`), if it names one of the template's.
    fn function_in(&self, value: &Value) -> Result<Option<String>, String> {
        let text = match value {
            Value::Tagged(tagged) if tagged.tag == "!Sub" => tagged.value.as_str().unwrap_or_default().to_owned(),
            Value::Tagged(tagged) if tagged.tag == "!GetAtt" => {
                format!("${{{}}}", tagged.value.as_str().unwrap_or_default())
            }
            _ => return Ok(None),
        };
        Ok(references(&text).into_iter().find_map(|reference| {
            let id = reference.strip_suffix(".Arn")?;
            (self.resource_types.get(id).map(String::as_str) == Some("AWS::Serverless::Function"))
                .then(|| id.to_owned())
        }))
    }

    /// Runs `step` one level deeper, refusing past [`MAX_DEPTH`].
    fn nested<T>(&self, step: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
        let depth = self.depth.get() + 1;
        if depth > MAX_DEPTH {
            return Err(format!("intrinsic functions nested more than {MAX_DEPTH} deep"));
        }
        self.depth.set(depth);
        let result = step();
        self.depth.set(depth - 1);
        result
    }

    /// The condition `name` of the template's Conditions, evaluated; a condition
    /// that needs itself (directly or through others) is an error naming the cycle.
    fn named_condition(&self, name: &str) -> Result<bool, String> {
        let condition = self.conditions.get(name).ok_or_else(|| format!("no condition {name}"))?;
        if let Some(start) = self.evaluating.borrow().iter().position(|seen| seen == name) {
            let cycle = self.evaluating.borrow()[start..].join(" -> ");
            return Err(format!("the Conditions {cycle} -> {name} form a cycle"));
        }
        self.evaluating.borrow_mut().push(name.to_owned());
        let result = self.condition(condition);
        self.evaluating.borrow_mut().pop();
        result
    }

    /// A value with its intrinsic functions resolved; `None` for `AWS::NoValue`.
    fn resolve(&self, value: &Value) -> Result<Option<String>, String> {
        self.nested(|| self.resolve_here(value))
    }

    fn resolve_here(&self, value: &Value) -> Result<Option<String>, String> {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                match tag.as_str() {
                    "!Ref" => self.reference(tagged.value.as_str().unwrap_or_default()),
                    "!GetAtt" => Ok(Some(self.attribute(tagged.value.as_str().unwrap_or_default()))),
                    "!Sub" => self.substitute(&tagged.value).map(Some),
                    "!If" => {
                        let arms = arguments(&tagged.value, 3, "!If takes three values")?;
                        let name = arms[0].as_str().unwrap_or_default();
                        if self.named_condition(name)? { self.resolve(&arms[1]) } else { self.resolve(&arms[2]) }
                    }
                    "!Join" => {
                        let parts = arguments(&tagged.value, 2, "!Join takes two values")?;
                        let separator = parts[0].as_str().unwrap_or_default();
                        let mut joined = Vec::new();
                        for part in parts[1].as_sequence().into_iter().flatten() {
                            joined.extend(self.resolve(part)?);
                        }
                        Ok(Some(joined.join(separator)))
                    }
                    other => Err(format!("the intrinsic function {other} is not supported by serve --lambda")),
                }
            }
            other => scalar(other).map(Some).ok_or_else(|| format!("{other:?} is not text")),
        }
    }

    fn condition(&self, value: &Value) -> Result<bool, String> {
        self.nested(|| self.condition_here(value))
    }

    fn condition_here(&self, value: &Value) -> Result<bool, String> {
        let Value::Tagged(tagged) = value else { return Err("a condition must be !Equals, !Not, !And or !Or".into()) };
        let operands = tagged.value.as_sequence().map(Vec::as_slice).unwrap_or_default();
        match tagged.tag.to_string().as_str() {
            "!Equals" if operands.len() == 2 => Ok(self.resolve(&operands[0])? == self.resolve(&operands[1])?),
            "!Not" if operands.len() == 1 => Ok(!self.condition(&operands[0])?),
            "!And" => operands.iter().try_fold(true, |all, operand| Ok(all && self.condition(operand)?)),
            "!Or" => operands.iter().try_fold(false, |any, operand| Ok(any || self.condition(operand)?)),
            "!Condition" => self.named_condition(tagged.value.as_str().unwrap_or_default()),
            other => Err(format!("the condition function {other} is not supported by serve --lambda")),
        }
    }

    fn reference(&self, name: &str) -> Result<Option<String>, String> {
        Ok(Some(match name {
            "AWS::NoValue" => return Ok(None),
            "AWS::Region" => self.local.region.clone(),
            "AWS::AccountId" => "000000000000".into(),
            "AWS::Partition" => "aws".into(),
            "AWS::StackName" => "wsledger-local".into(),
            "AWS::URLSuffix" => "amazonaws.com".into(),
            _ => match (self.parameters.get(name), self.tables.get(name)) {
                (Some(value), _) => value.clone(),
                (None, Some(table)) => table.clone(),
                (None, None) if self.resource_types.contains_key(name) => name.to_owned(),
                _ => return Err(format!("!Ref {name}: no parameter or resource of that name")),
            },
        }))
    }

    fn attribute(&self, path: &str) -> String {
        let (id, attribute) = path.split_once('.').unwrap_or((path, ""));
        let region = &self.local.region;
        match (self.tables.get(id), attribute) {
            (Some(table), "Arn") => format!("arn:aws:dynamodb:{region}:000000000000:table/{table}"),
            (Some(table), "StreamArn") => format!("arn:aws:dynamodb:{region}:000000000000:table/{table}/stream/local"),
            _ => format!("arn:aws:local:{region}:000000000000:{id}/{attribute}"),
        }
    }

    /// `!Sub`: `${Name}` and `${Resource.Attribute}`; a string naming the WebSocket
    /// API's endpoint becomes `serve`'s Management API endpoint.
    fn substitute(&self, value: &Value) -> Result<String, String> {
        let (text, variables) = match value {
            Value::String(text) => (text.clone(), None),
            Value::Sequence(parts) if parts.len() == 2 => {
                (parts[0].as_str().unwrap_or_default().to_owned(), parts[1].as_mapping().cloned())
            }
            _ => return Err("!Sub takes a string, or a string and a map".into()),
        };
        if let Some(api) = &self.api_id
            && text.contains(&format!("${{{api}}}.execute-api."))
        {
            return Ok(self.local.management_endpoint.clone());
        }
        let mut out = text.clone();
        for reference in references(&text) {
            let value = match variables.as_ref().and_then(|variables| variables.get(reference.as_str())) {
                Some(value) => self.text(value)?,
                None if reference.contains('.') => self.attribute(&reference),
                None => self
                    .reference(&reference)?
                    .ok_or_else(|| format!("${{{reference}}}: AWS::NoValue where a value is needed"))?,
            };
            out = out.replace(&format!("${{{reference}}}"), &value);
        }
        Ok(out)
    }
}

/// The `${...}` references of a `!Sub` string (not `${!Literal}`).
/// The arguments of an intrinsic function that takes exactly `count` of them
/// (`wrong`: the error otherwise).
fn arguments<'v>(value: &'v Value, count: usize, wrong: &str) -> Result<&'v [Value], String> {
    value.as_sequence().map(Vec::as_slice).filter(|arguments| arguments.len() == count).ok_or_else(|| wrong.to_owned())
}

fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            found.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    found
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("../../../template.yaml");

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
        let schedule = |text: &str| ScheduleTrigger { function: "F".into(), schedule: text.into() }.interval();
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
