//! The in-memory store passes the same contract as the durable ones.

use wsledger::adapters::memory::MemoryStore;

async fn make_store() -> MemoryStore {
    MemoryStore::new()
}

crate::store_contract!(crate::memory::make_store);
