//! The embedded SQLite store: the store contract, plus the change feed, restarts
//! and a second reader of the same file.

use std::path::PathBuf;

use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::{ConnectionId, TimeRange};
use wsledger::ports::{AppendOutcome, EventStore, PageRequest, ViewStore};
use wsledger::projector::Change;

use crate::contract::{activity, connected, envelope};

/// A fresh database file under the system's temporary folder.
pub fn temp_db() -> PathBuf {
    let dir = std::env::temp_dir().join("wsledger-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.db", ulid::Ulid::generate()))
}

async fn make_store() -> SqliteStore {
    SqliteStore::open(temp_db()).unwrap()
}

crate::store_contract!(crate::sqlite::make_store);

#[tokio::test]
async fn data_survives_reopening_and_a_second_handle_reads_it() {
    let path = temp_db();
    let event = envelope("conn-persist", "user-persist", "r1", 0, connected("203.0.113.1"));
    {
        let store = SqliteStore::open(&path).unwrap();
        store.append(&event).await.unwrap();
        wsledger::projection::project_connection(&store, &store, std::slice::from_ref(&event)).await.unwrap();
    }
    let reopened = SqliteStore::open(&path).unwrap();
    let reader = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.append(&event).await.unwrap(), AppendOutcome::AlreadyExists);
    let history = reader.user_history(&event.user_id, TimeRange::ALL, PageRequest::default()).await.unwrap();
    assert_eq!(history.items, vec![event.clone()]);
    assert!(reader.get(&event.connection_id).await.unwrap().is_some());
    // Writes through one handle are visible through the other at once (WAL).
    let later = envelope("conn-persist", "user-persist", "r2", 1_000, activity(1));
    reopened.append(&later).await.unwrap();
    let history = reader.connection_history(&event.connection_id, PageRequest::default()).await.unwrap();
    assert_eq!(history.items.len(), 2);
}

#[tokio::test]
async fn the_change_feed_is_ordered_and_checkpointed() {
    let store = make_store().await;
    for index in 0..5 {
        let event =
            envelope(&format!("conn-feed-{}", index % 2), "user-feed", &format!("r{index}"), index * 10, activity(1));
        store.append(&event).await.unwrap();
    }
    let first = store.changes_after(0, 3).await.unwrap();
    let sequences: Vec<String> = first.iter().map(|record| record.sequence_number.clone().unwrap()).collect();
    assert_eq!(sequences, ["1", "2", "3"]);
    assert!(first.iter().all(|record| matches!(record.change, Change::Appended(_))));
    assert_eq!(store.checkpoint("projector").await.unwrap(), 0);
    store.set_checkpoint("projector", 3).await.unwrap();
    assert_eq!(store.checkpoint("projector").await.unwrap(), 3);
    let rest = store.changes_after(3, 100).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(store.last_sequence().await.unwrap(), 5);
    let views_untouched = store.get(&ConnectionId::parse("conn-feed-0").unwrap()).await.unwrap();
    assert!(views_untouched.is_none(), "the feed only reports; projecting is the consumer's job");
}
