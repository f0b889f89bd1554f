//! Reading a SAM template, resource kind by resource kind.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_yaml::Value;

use super::intrinsics::Resolver;
use super::{Authorizer, Function, IdentitySource, LambdaApp, LocalValues, RouteSpec, ScheduleTrigger, StreamTrigger};

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
    fn routes(&mut self, integrations: &HashMap<String, String>) -> Result<BTreeMap<String, RouteSpec>, String> {
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
            routes.insert(key, RouteSpec { function: function.clone(), route_response: false, authorized });
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
                    let input = event_properties.get("Input").map(|value| self.resolver.text(value)).transpose()?;
                    schedules.push(ScheduleTrigger {
                        function: id.to_owned(),
                        schedule: schedule.unwrap_or_default(),
                        input,
                    });
                }
                other => self.unsupported.push(format!("event {name} of {id} ({})", other.unwrap_or("no type"))),
            }
        }
        Ok(())
    }
}
