//! The DynamoDB adapter against a real DynamoDB Local: the store contract, plus
//! what only this adapter can show (item layout, no Scan, error meanings).

use aws_sdk_dynamodb::types::AttributeValue;
use wsledger::adapters::dynamodb::{DynamoDbStore, TableNames};
use wsledger::domain::{ConnectionEvent, ConnectionInfo, TimeRange, Timestamp};
use wsledger::ports::{EventStore, PageRequest, StoreError, ViewStore};

use crate::contract::{T0, activity, connected, envelope};
use crate::dynamodb_local;

async fn make_store() -> DynamoDbStore {
    dynamodb_local::fresh_store().await.0
}

crate::store_contract!(crate::dynamodb::make_store);

#[tokio::test]
async fn items_use_the_design_attribute_names_and_store_no_nulls() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let event = envelope(
        "conn-item",
        "user-item",
        "req-item",
        0,
        ConnectionEvent::Activity { session_id: None, message_count: 4 },
    )
    .with_retention_days(90);
    store.append(&event).await.unwrap();
    let item = store
        .client()
        .get_item()
        .table_name(&store.tables().events)
        .key("connectionId", AttributeValue::S("conn-item".into()))
        .key("eventId", AttributeValue::S(event.event_id.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the appended item");
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "at",
            "connectedAt",
            "connectionId",
            "eventId",
            "expiresAt",
            "messageCount",
            "requestId",
            "timeBucket",
            "type",
            "userId"
        ]
    );
    assert!(item.values().all(|value| !value.is_null()));
    assert_eq!(item["type"], AttributeValue::S("Activity".into()));
    assert_eq!(item["at"], AttributeValue::S(event.at.to_rfc3339()));
    assert_eq!(item["expiresAt"], AttributeValue::N((event.at.epoch_seconds() + 90 * 86_400).to_string()));

    let view = ConnectionInfo::from_event(&envelope("conn-item", "user-item", "req-c", 0, connected("203.0.113.1")));
    store.put(&view, None).await.unwrap();
    let item = store
        .client()
        .get_item()
        .table_name(&store.tables().connections)
        .key("connectionId", AttributeValue::S("conn-item".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    for seed_attribute in ["connectionId", "userId", "status", "ipAddress", "userAgent", "createdAt", "lastActivity"] {
        assert!(item.contains_key(seed_attribute), "{seed_attribute} is stored");
    }
    assert_eq!(item["status"], AttributeValue::S("CONNECTED".into()));
    assert!(!item.contains_key("disconnectedAt") && !item.contains_key("sessionId"));
    assert!(item.values().all(|value| !value.is_null()));
}

#[tokio::test]
async fn no_query_of_the_adapter_scans() {
    let (store, counter) = dynamodb_local::fresh_store().await;
    let event = envelope("conn-scan", "user-scan", "r1", 0, connected("203.0.113.1"));
    store.append(&event).await.unwrap();
    let since = Timestamp::from_epoch_millis(T0 - 1);
    let until = Timestamp::from_epoch_millis(T0 + 86_400_000 * 3);
    store.connection_history(&event.connection_id, PageRequest::default()).await.unwrap();
    store.user_history(&event.user_id, TimeRange::ALL, PageRequest::default()).await.unwrap();
    assert_eq!(store.window(since, until, PageRequest::default()).await.unwrap().items, vec![event.clone()]);
    wsledger::projection::project_connection(&store, &store, std::slice::from_ref(&event)).await.unwrap();
    store.list_by_user(&event.user_id, None, PageRequest::default()).await.unwrap();
    store.list_live_until_before(until, PageRequest::default()).await.unwrap();
    let counts = counter.snapshot();
    assert_eq!(counter.count("Scan"), 0, "{counts:?}");
    assert!(counter.count("Query") >= 4, "{counts:?}");
}

#[tokio::test]
async fn a_missing_table_is_not_found_and_duplicates_cost_one_write() {
    let (client, _) = dynamodb_local::client();
    let store = DynamoDbStore::new(
        client,
        TableNames {
            events: "no-such-events".into(),
            connections: "no-such-connections".into(),
            outbox: "no-such-outbox".into(),
        },
    );
    let event = envelope("conn-missing", "user", "r1", 0, activity(1));
    let error = store.append(&event).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error}");
    assert!(!error.is_retryable());
    let error = store.get(&event.connection_id).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error}");

    let (store, counter) = dynamodb_local::fresh_store().await;
    store.append(&event).await.unwrap();
    store.append(&event).await.unwrap();
    assert_eq!(counter.count("PutItem"), 2, "a duplicate is one conditional put, not a read and a put");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .endpoint_url("http://127.0.0.1:9")
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("a", "b", None, None, "test"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .build();
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::from_conf(config), dynamodb_local::unique_tables());
    let error = store.append(&envelope("c", "u", "r", 0, activity(1))).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(error.is_retryable());
}

/// A time window keeps a cursor per shard: 900 events read 100 at a time cost one
/// Query per shard (they fit in one result page each), not 8 per page, and read the
/// same events in the same order as the page-based window.
#[tokio::test]
async fn a_window_costs_one_query_per_shard_per_result_page() {
    use wsledger::audit::{HistoryFilter, HistoryQuery, HistoryReader};

    let (store, counter) = dynamodb_local::fresh_store().await;
    let events: Vec<_> = (0..900)
        .map(|index| {
            envelope(&format!("conn-w{:03}", index % 60), "user-w", &format!("r{index}"), index * 37, activity(1))
        })
        .collect();
    store.bulk_load(&events).await.unwrap();
    let (since, until) = (Timestamp::from_epoch_millis(T0), Timestamp::from_epoch_millis(T0 + 900 * 37));
    counter.reset();
    let mut reader =
        HistoryReader::new(&store, HistoryQuery::Window { since, until }, HistoryFilter::default()).with_page_size(100);
    let mut read = Vec::new();
    let mut pages = 0;
    while let Some(page) = reader.next_page().await.unwrap() {
        pages += 1;
        read.extend(page);
    }
    let queries = counter.count("Query");
    eprintln!("900 events in {pages} pages of 100: {queries} Queries");
    assert_eq!(read.len(), 900);
    assert!(queries <= 8, "one Query per shard, got {queries}");

    let mut paged = Vec::new();
    let mut request = PageRequest::first(100);
    loop {
        let page = store.window(since, until, request).await.unwrap();
        paged.extend(page.items);
        match page.next {
            Some(next) => request.after = Some(next),
            None => break,
        }
    }
    assert_eq!(read, paged, "the same events in the same order");
}

/// The usage walk has an item of its own (`usage#<connectionId>`) that no index
/// sees; a reader takes it only with the view of the version it was written with,
/// and a view stored with the walk inline (before it moved out) still reads.
#[tokio::test]
async fn the_usage_walk_is_an_item_of_its_own_tied_to_its_view_version() {
    use wsledger::projection::project_connection;
    let (store, counter) = dynamodb_local::fresh_store().await;
    let events = [
        envelope("conn-walk", "user-walk", "req-c", 0, connected("203.0.113.1")),
        envelope("conn-walk", "user-walk", "req-a", 1_000, activity(3)),
    ];
    for event in &events {
        store.append(event).await.unwrap();
    }
    project_connection(&store, &store, &events).await.unwrap();
    let raw = |key: &str| {
        let store = &store;
        let key = AttributeValue::S(key.to_owned());
        async move {
            let table = &store.tables().connections;
            store.client().get_item().table_name(table).key("connectionId", key).send().await.unwrap().item
        }
    };
    let view = raw("conn-walk").await.expect("the view item");
    assert!(!view.contains_key("usageFold"), "the view item holds no walk");
    let walk = raw("usage#conn-walk").await.expect("the walk item");
    let mut names: Vec<&str> = walk.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["connectionId", "usageFold", "viewVersion"], "no index key: no index holds it");
    assert_eq!(walk["viewVersion"], view["version"]);
    let stored = store.get(&events[0].connection_id).await.unwrap().unwrap();
    let fold = stored.view.usage_fold.clone().expect("read with its view");

    // A view written without its walk (the walk's write lost): the old walk is of
    // another version and is not used; the projection would read the history once.
    let mut bare = stored.view.clone();
    bare.usage_fold = None;
    let version = store.put(&bare, Some(stored.version)).await.unwrap();
    let reread = store.get(&events[0].connection_id).await.unwrap().unwrap();
    assert_eq!((reread.version, reread.view.usage_fold), (version, None));

    // A view stored with the walk inline, as round three first wrote it, reads whole.
    let mut inline = raw("conn-walk").await.unwrap();
    inline.insert("usageFold".into(), walk["usageFold"].clone());
    let table = &store.tables().connections;
    store.client().put_item().table_name(table).set_item(Some(inline)).send().await.unwrap();
    let legacy = store.get(&events[0].connection_id).await.unwrap().unwrap();
    assert_eq!(legacy.view.usage_fold, Some(fold.clone()));

    // Written again, the walk moves to its own item.
    let moved = store.put(&legacy.view, Some(legacy.version)).await.unwrap();
    assert!(!raw("conn-walk").await.unwrap().contains_key("usageFold"));
    assert_eq!(raw("usage#conn-walk").await.unwrap()["viewVersion"], AttributeValue::N(moved.to_string()));
    let moved_view = store.get(&events[0].connection_id).await.unwrap().unwrap();
    assert_eq!(moved_view.view.usage_fold, Some(fold));

    // A view read to show or count (usage, the dashboard) skips the walk: one GetItem.
    counter.reset();
    let shown = store.read(&events[0].connection_id).await.unwrap().unwrap();
    assert_eq!(counter.snapshot(), [("GetItem".to_owned(), 1)].into());
    assert_eq!(shown, ConnectionInfo { usage_fold: None, ..moved_view.view });
}
