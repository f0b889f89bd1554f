//! `template.yaml` against `migrations/`: the deployed tables are the migrated ones,
//! and the template wires what the design needs.

use std::collections::BTreeSet;

use serde_yaml::Value;
use wsledger::dynamodb_tables::TableDefinition;

fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    let resource = &template["Resources"][name];
    assert!(!resource.is_null(), "no resource {name}");
    resource
}

fn text(value: &Value) -> String {
    value.as_str().map(str::to_owned).unwrap_or_else(|| format!("{value:?}"))
}

fn keys(value: &Value) -> Vec<(String, String)> {
    value
        .as_sequence()
        .expect("a key schema")
        .iter()
        .map(|key| (text(&key["AttributeName"]), text(&key["KeyType"])))
        .collect()
}

fn assert_table_matches(template: &Value, logical_id: &str, definition: &TableDefinition) {
    let properties = &resource(template, logical_id)["Properties"];
    assert_eq!(text(&properties["BillingMode"]), definition.billing_mode, "{logical_id} billing");
    let attributes: BTreeSet<(String, String)> = properties["AttributeDefinitions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|attribute| (text(&attribute["AttributeName"]), text(&attribute["AttributeType"])))
        .collect();
    let expected: BTreeSet<(String, String)> = definition
        .attribute_definitions
        .iter()
        .map(|attribute| (attribute.attribute_name.clone(), attribute.attribute_type.clone()))
        .collect();
    assert_eq!(attributes, expected, "{logical_id} attribute definitions");
    let expected_keys: Vec<(String, String)> =
        definition.key_schema.iter().map(|key| (key.attribute_name.clone(), key.key_type.clone())).collect();
    assert_eq!(keys(&properties["KeySchema"]), expected_keys, "{logical_id} key schema");

    let indexes = properties["GlobalSecondaryIndexes"].as_sequence().cloned().unwrap_or_default();
    assert_eq!(indexes.len(), definition.global_secondary_indexes.len(), "{logical_id} index count");
    for expected in &definition.global_secondary_indexes {
        let index = indexes
            .iter()
            .find(|index| text(&index["IndexName"]) == expected.index_name)
            .unwrap_or_else(|| panic!("{logical_id} has no index {}", expected.index_name));
        let expected_keys: Vec<(String, String)> =
            expected.key_schema.iter().map(|key| (key.attribute_name.clone(), key.key_type.clone())).collect();
        assert_eq!(keys(&index["KeySchema"]), expected_keys, "{}", expected.index_name);
        assert_eq!(text(&index["Projection"]["ProjectionType"]), expected.projection.projection_type);
    }
    let stream = properties["StreamSpecification"]["StreamViewType"].as_str();
    assert_eq!(stream, definition.stream_view_type(), "{logical_id} stream");
    let ttl = &properties["TimeToLiveSpecification"];
    let ttl_attribute = (ttl["Enabled"].as_bool() == Some(true)).then(|| text(&ttl["AttributeName"]));
    assert_eq!(ttl_attribute.as_deref(), definition.ttl_attribute(), "{logical_id} TTL");
}

#[test]
fn the_template_tables_are_the_migrations() {
    let template = template();
    assert_table_matches(&template, "EventsTable", &TableDefinition::events("e"));
    assert_table_matches(&template, "ConnectionsTable", &TableDefinition::connections("c"));
    assert_table_matches(&template, "OutboxTable", &TableDefinition::outbox("o"));
    let point_in_time = &resource(&template, "EventsTable")["Properties"]["PointInTimeRecoverySpecification"];
    assert_eq!(point_in_time["PointInTimeRecoveryEnabled"].as_bool(), Some(true));
}

#[test]
fn the_template_wires_functions_authorizer_stream_and_sweep() {
    let template = template();
    let globals = &template["Globals"]["Function"];
    assert_eq!(text(&globals["Runtime"]), "provided.al2023");
    assert_eq!(text(&globals["LoggingConfig"]["LogFormat"]), "JSON");
    for (function, binary) in [
        ("ConnectionHandlerFunction", "connection-handler"),
        ("AuthorizerFunction", "authorizer"),
        ("ProjectorFunction", "projector"),
    ] {
        let metadata = &resource(&template, function)["Metadata"];
        assert_eq!(text(&metadata["BuildMethod"]), "rust-cargolambda", "{function}");
        assert_eq!(text(&metadata["BuildProperties"]["Binary"]), binary, "{function}");
    }
    let variables = &globals["Environment"]["Variables"];
    for variable in [
        "EVENTS_TABLE_NAME",
        "CONNECTIONS_TABLE_NAME",
        "USER_POOL_ID",
        "IDENTITY_POOL_ID",
        "WEBSOCKET_API_ENDPOINT",
        "ACTIVITY_INTERVAL_SECS",
        "RETENTION_DAYS",
    ] {
        assert!(!variables[variable].is_null(), "{variable} is set");
    }

    let connect = &resource(&template, "ConnectRoute")["Properties"];
    assert_eq!(text(&connect["RouteKey"]), "$connect");
    assert_eq!(text(&connect["AuthorizationType"]), "CUSTOM");
    let authorizer = &resource(&template, "Authorizer")["Properties"];
    assert_eq!(text(&authorizer["AuthorizerType"]), "REQUEST");
    assert_eq!(text(&authorizer["IdentitySource"][0]), "route.request.querystring.token");
    assert_eq!(text(&resource(&template, "DefaultRouteResponse")["Properties"]["RouteResponseKey"]), "$default");

    let projector = &resource(&template, "ProjectorFunction")["Properties"];
    let stream = &projector["Events"]["Stream"]["Properties"];
    assert_eq!(text(&stream["FunctionResponseTypes"][0]), "ReportBatchItemFailures");
    assert_eq!(stream["BisectBatchOnFunctionError"].as_bool(), Some(true));
    assert_eq!(stream["ParallelizationFactor"].as_u64(), Some(1));
    assert!(stream["MaximumRetryAttempts"].as_u64().is_some_and(|retries| retries <= 20));
    assert!(stream["MaximumRecordAgeInSeconds"].as_u64().is_some_and(|age| age <= 86_400));
    assert!(stream["MaximumBatchingWindowInSeconds"].as_u64().is_some_and(|window| window <= 5));
    assert_eq!(text(&stream["DestinationConfig"]["OnFailure"]["Type"]), "SQS");
    assert_eq!(text(&projector["Events"]["Sweep"]["Type"]), "Schedule");

    // execute-api:ManageConnections only where the Management API is used: the
    // sweep's GET, and a resume's replay (POST only).
    let policies =
        |function: &str| serde_yaml::to_string(&resource(&template, function)["Properties"]["Policies"]).unwrap();
    let manages = |function: &str| policies(function).contains("execute-api:ManageConnections");
    assert!(manages("ProjectorFunction"));
    assert!(manages("ConnectionHandlerFunction"));
    let handler = policies("ConnectionHandlerFunction");
    assert!(handler.contains("/POST/@connections/*") && !handler.contains("/GET/") && !handler.contains("/DELETE/"));
    assert!(!manages("AuthorizerFunction"));

    for output in ["WebSocketUrl", "ConnectionsEndpoint"] {
        assert!(!template["Outputs"][output].is_null(), "output {output}");
    }
}

/// Handled failures have alarms: on the functions' own metrics, in the namespace
/// the functions write to, for the function that writes each.
#[test]
fn alarms_watch_the_handled_failures() {
    let template = template();
    let globals = &template["Globals"]["Function"]["Environment"]["Variables"];
    assert!(text(&globals["METRICS_NAMESPACE"]).contains("MetricsNamespace"), "the functions write to the namespace");
    for (alarm, metric, function) in [
        ("JwksFetchFailuresAlarm", "JwksFetchFailures", "AuthorizerFunction"),
        ("UnavailableAlarm", "Unavailable", "ConnectionHandlerFunction"),
        ("PoisonRecordsAlarm", "PoisonRecords", "ProjectorFunction"),
        ("FailedRecordsAlarm", "FailedRecords", "ProjectorFunction"),
        ("ProjectionLagAlarm", "ProjectionLagMs", "ProjectorFunction"),
    ] {
        let properties = &resource(&template, alarm)["Properties"];
        assert_eq!(text(&properties["MetricName"]), metric, "{alarm}");
        assert!(text(&properties["Namespace"]).contains("MetricsNamespace"), "{alarm}");
        assert!(text(&properties["Dimensions"]).contains(function), "{alarm} watches {function}");
    }
    let spike = text(&resource(&template, "DeniedSpikeAlarm")["Properties"]["Metrics"]);
    assert!(spike.contains("Denied") && spike.contains("Allowed") && spike.contains("AuthorizerFunction"), "{spike}");
}
