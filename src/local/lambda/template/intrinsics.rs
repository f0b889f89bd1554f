//! The intrinsic functions of a template's values, resolved for a local run:
//! parameters, conditions (a cycle among them is an error naming it), `!Ref`,
//! `!GetAtt`, `!Sub`, `!If`, `!Join`, nested at most 64 deep.

use std::collections::HashMap;

use serde_yaml::Value;

use super::LocalValues;

/// Resolves intrinsic functions for a local run.
pub(super) struct Resolver<'a> {
    local: &'a LocalValues,
    parameters: HashMap<String, String>,
    conditions: HashMap<String, Value>,
    /// Tables: logical id -> table name.
    tables: HashMap<String, String>,
    resource_types: HashMap<String, String>,
    pub(super) api_id: Option<String>,
    /// The conditions being evaluated, outermost first: a name already here is a cycle.
    evaluating: std::cell::RefCell<Vec<String>>,
    /// How deep the intrinsic functions being resolved are nested.
    depth: std::cell::Cell<usize>,
}

/// How deep intrinsic functions may nest (CloudFormation's own templates stay far below).
const MAX_DEPTH: usize = 64;

impl<'a> Resolver<'a> {
    pub(super) fn new(template: &Value, local: &'a LocalValues) -> Result<Self, String> {
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
    pub(super) fn text(&self, value: &Value) -> Result<String, String> {
        self.resolve(value)?.ok_or_else(|| "AWS::NoValue where a value is needed".to_owned())
    }

    /// The logical id of the function an invocation ARN names (`${X.Arn}` in a `!Sub`
    /// or `!GetAtt X.Arn`), if it names one of the template's.
    pub(super) fn function_in(&self, value: &Value) -> Result<Option<String>, String> {
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
    pub(super) fn resolve(&self, value: &Value) -> Result<Option<String>, String> {
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
