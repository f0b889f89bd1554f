//! `wsledger migrate` as a user runs it, against DynamoDB Local.

use std::process::{Command, Output};

use aws_sdk_dynamodb::types::{KeySchemaElement, KeyType, ProjectionType, StreamViewType, TimeToLiveStatus};
use wsledger::adapters::dynamodb::{LIVE_INDEX, TIME_INDEX, TableNames, USER_CONNECTIONS_INDEX, USER_INDEX};

use crate::dynamodb_local::{self, ACCESS_KEY, REGION, SECRET_KEY};

fn wsledger(tables: &TableNames, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsledger"))
        .args(args)
        .env("EVENTS_TABLE_NAME", &tables.events)
        .env("CONNECTIONS_TABLE_NAME", &tables.connections)
        .env("OUTBOX_TABLE_NAME", &tables.outbox)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the wsledger binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn key_names(keys: &[KeySchemaElement]) -> Vec<(String, KeyType)> {
    keys.iter().map(|key| (key.attribute_name.clone(), key.key_type.clone())).collect()
}

#[tokio::test]
async fn migrate_creates_both_tables_and_a_second_run_changes_nothing() {
    let endpoint = dynamodb_local::endpoint();
    let tables = dynamodb_local::unique_tables();
    let first = wsledger(&tables, &["migrate", "--endpoint-url", endpoint]);
    assert!(first.status.success(), "stdout: {}\nstderr: {}", text(&first.stdout), text(&first.stderr));
    let stdout = text(&first.stdout);
    assert!(stdout.contains(&format!("{}: create the table", tables.events)), "{stdout}");
    assert!(stdout.contains(&format!("{}: enable TTL on expiresAt", tables.events)), "{stdout}");
    assert!(stdout.contains(&format!("{}: create the table", tables.connections)), "{stdout}");
    assert!(stdout.contains(&format!("{}: create the table", tables.outbox)), "{stdout}");
    assert!(stdout.contains(&format!("{}: enable TTL on expiresAt", tables.outbox)), "{stdout}");

    let (client, counter) = dynamodb_local::client();
    let events = client.describe_table().table_name(&tables.events).send().await.unwrap().table.unwrap();
    assert_eq!(
        key_names(events.key_schema()),
        [("connectionId".to_owned(), KeyType::Hash), ("eventId".to_owned(), KeyType::Range)]
    );
    let stream = events.stream_specification.clone().unwrap();
    assert!(stream.stream_enabled);
    assert_eq!(stream.stream_view_type, Some(StreamViewType::NewImage));
    assert!(events.latest_stream_arn.is_some());
    let mut index_names: Vec<&str> = events.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect();
    index_names.sort();
    assert_eq!(index_names, [TIME_INDEX, USER_INDEX]);
    for index in events.global_secondary_indexes() {
        assert_eq!(index.projection().and_then(|p| p.projection_type()), Some(&ProjectionType::All));
    }
    let ttl = client.describe_time_to_live().table_name(&tables.events).send().await.unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name.as_deref(), Some("expiresAt"));
    assert_eq!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled));

    let connections = client.describe_table().table_name(&tables.connections).send().await.unwrap().table.unwrap();
    assert_eq!(key_names(connections.key_schema()), [("connectionId".to_owned(), KeyType::Hash)]);
    let mut index_names: Vec<&str> =
        connections.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect();
    index_names.sort();
    assert_eq!(index_names, [LIVE_INDEX, USER_CONNECTIONS_INDEX]);

    counter.reset();
    let second = wsledger(&tables, &["migrate", "--endpoint-url", endpoint]);
    assert!(second.status.success(), "stderr: {}", text(&second.stderr));
    assert_eq!(
        text(&second.stdout),
        format!(
            "{}: up to date, no changes\n{}: up to date, no changes\n{}: up to date, no changes\n",
            tables.events, tables.connections, tables.outbox
        )
    );
}

#[tokio::test]
async fn migrate_refuses_a_table_with_other_keys_and_names_the_difference() {
    let endpoint = dynamodb_local::endpoint();
    let tables = dynamodb_local::unique_tables();
    let (client, _) = dynamodb_local::client();
    client
        .create_table()
        .table_name(&tables.events)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("connectionId")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("connectionId").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
    let output = wsledger(&tables, &["migrate", "--endpoint-url", endpoint]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("has key schema (connectionId HASH), expected (connectionId HASH, eventId RANGE)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line, no stack trace: {stderr}");
    let connections = client.describe_table().table_name(&tables.connections).send().await;
    assert!(connections.is_err(), "nothing was created when a table was refused");
}

#[tokio::test]
async fn migrate_against_an_unreachable_endpoint_says_where() {
    let tables = dynamodb_local::unique_tables();
    let output = wsledger(&tables, &["migrate", "--endpoint-url", "http://127.0.0.1:9"]);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.starts_with("error: migrating DynamoDB at http://127.0.0.1:9"), "{stderr}");
}
