//! The embedded SQLite store: the store contract, plus the change feed, restarts
//! and a second reader of the same file.

use std::path::PathBuf;

use wsledger::adapters::sqlite::SqliteStore;
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, TimeRange, Timestamp, UserId};
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

/// The ledger holds every user's ids, addresses and user agents: its files are the
/// user's alone, whatever the umask, and an existing world-readable one is narrowed.
#[tokio::test]
async fn the_ledgers_files_are_created_0600() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(&path).unwrap();
    let event = EventEnvelope::for_request(
        ConnectionId::parse("ModeConn0001=").unwrap(),
        UserId::parse("user-mode").unwrap(),
        "r1",
        Timestamp::now(),
        Timestamp::now(),
        ConnectionEvent::Connected { ip_address: Some("203.0.113.5".into()), user_agent: None },
    );
    store.append(&event).await.unwrap();
    let wal = dir.path().join("ledger.db-wal");
    assert!(wal.exists(), "the store runs in WAL mode");
    for file in [path.clone(), wal, dir.path().join("ledger.db-shm")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let lock = wsledger::local::lock::ServeLock::acquire(&path).unwrap();
    assert_eq!(mode(&wsledger::local::lock::ServeLock::path_for(&path)), 0o600);
    drop(lock);
    drop(store);

    let old = dir.path().join("old.db");
    std::fs::write(&old, "").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    SqliteStore::open(&old).unwrap();
    assert_eq!(mode(&old), 0o600, "an existing ledger is narrowed");
}
