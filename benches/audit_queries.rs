//! Audit queries on a large ledger: time and requests to the first and to the last
//! result of a user's history and of a one-hour window, on SQLite and on DynamoDB
//! Local.
//!
//! `cargo bench --bench audit_queries` loads 1,000,000 events (100,000 connections
//! of 10 events, 10,000 users, spread over 7 days) into each store. Under
//! `cargo test` it loads 10,000 events, to keep the harness working.

use wsledger_testkit::dynamodb_local;

use std::time::{Duration, Instant};

use wsledger::adapters::sqlite::SqliteStore;
use wsledger::audit::{HistoryFilter, HistoryQuery, HistoryReader};
use wsledger::domain::{ConnectionEvent, ConnectionId, EventEnvelope, TimeRange, Timestamp, UserId};
use wsledger::ports::EventStore;

const EVENTS_PER_CONNECTION: usize = 10;
const DAYS: i64 = 7;

fn connection_events(index: usize, users: usize, start: Timestamp) -> Vec<EventEnvelope> {
    // A fixed scatter of connections over the days, and of users over connections.
    let opened = start.plus(chrono::TimeDelta::seconds(((index as i64) * 7_919) % (DAYS * 86_400)));
    let connection_id = ConnectionId::parse(format!("bench{index:07}=")).unwrap();
    let user_id = UserId::parse(format!("user-{}", (index * 31) % users)).unwrap();
    (0..EVENTS_PER_CONNECTION)
        .map(|step| {
            let event = match step {
                0 => ConnectionEvent::Connected {
                    ip_address: Some("203.0.113.7".into()),
                    user_agent: Some("bench".into()),
                },
                last if last + 1 == EVENTS_PER_CONNECTION => ConnectionEvent::Disconnected {
                    reason: wsledger::domain::DisconnectReason::Client,
                    status_code: Some(1000),
                    detail: None,
                    message_count: 0,
                },
                _ => ConnectionEvent::Activity { session_id: None, message_count: 5 },
            };
            EventEnvelope::for_request(
                connection_id.clone(),
                user_id.clone(),
                format!("r{step}"),
                opened.plus(chrono::TimeDelta::seconds(step as i64 * 60)),
                opened,
                event,
            )
        })
        .collect()
}

struct Measure {
    first: Duration,
    last: Duration,
    results: usize,
    pages_first: u64,
    pages_last: u64,
}

/// Reads a history page by page (100 a page), timing the first and the last result.
/// `requests` reports the store's requests so far.
async fn measure(events: &dyn EventStore, query: HistoryQuery, requests: &dyn Fn() -> u64) -> Measure {
    let before = requests();
    let started = Instant::now();
    let mut reader = HistoryReader::new(events, query, HistoryFilter::default()).with_page_size(100);
    let mut first = None;
    let mut results = 0;
    while let Some(page) = reader.next_page().await.unwrap() {
        results += page.len();
        first.get_or_insert((started.elapsed(), requests() - before));
    }
    let (first, pages_first) = first.unwrap_or((started.elapsed(), requests() - before));
    Measure { first, last: started.elapsed(), results, pages_first, pages_last: requests() - before }
}

fn report(store: &str, query: &str, measure: &Measure, unit: &str) {
    println!(
        "{store:<16} {query:<22} {:>8} results   first: {:>8.2} ms, {:>3} {unit}   last: {:>8.2} ms, {:>4} {unit}",
        measure.results,
        measure.first.as_secs_f64() * 1e3,
        measure.pages_first,
        measure.last.as_secs_f64() * 1e3,
        measure.pages_last,
    );
}

fn main() {
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let (connections, users) = if benchmarking { (100_000, 10_000) } else { (1_000, 100) };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        let start = Timestamp::parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
        let total = connections * EVENTS_PER_CONNECTION;
        let user = UserId::parse(format!("user-{}", users / 2 + 1)).unwrap();
        let window_start = start.plus(chrono::TimeDelta::hours(DAYS * 12));
        let window =
            HistoryQuery::Window { since: window_start, until: window_start.plus(chrono::TimeDelta::hours(1)) };
        let user_query = HistoryQuery::User { user_id: user.clone(), range: TimeRange::ALL };
        println!("ledger: {total} events, {connections} connections, {users} users, over {DAYS} days");

        // SQLite.
        let dir = std::env::temp_dir().join("wsledger-bench");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.db", ulid::Ulid::generate()));
        let sqlite = SqliteStore::open(&path).unwrap();
        let loading = Instant::now();
        let mut batch = Vec::new();
        for index in 0..connections {
            batch.extend(connection_events(index, users, start));
            if batch.len() >= 50_000 {
                sqlite.bulk_load(&batch).await.unwrap();
                batch.clear();
            }
        }
        sqlite.bulk_load(&batch).await.unwrap();
        println!("sqlite: loaded in {:.1} s", loading.elapsed().as_secs_f64());
        // SQLite has no request counter: one query per page read.
        let pages = std::sync::atomic::AtomicU64::new(0);
        let counting = CountingPages { inner: &sqlite, pages: &pages };
        let sqlite_pages = || pages.load(std::sync::atomic::Ordering::Relaxed);
        report("sqlite", "user history", &measure(&counting, user_query.clone(), &sqlite_pages).await, "queries");
        report("sqlite", "one-hour window", &measure(&counting, window.clone(), &sqlite_pages).await, "queries");

        // DynamoDB Local.
        let (dynamodb, counter) = dynamodb_local::fresh_store().await;
        let loading = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let chunk = (connections / 8).max(1);
        for part in 0..connections.div_ceil(chunk) {
            let store = dynamodb.clone();
            tasks.spawn(async move {
                let mut events = Vec::new();
                for index in part * chunk..((part + 1) * chunk).min(connections) {
                    events.extend(connection_events(index, users, start));
                    if events.len() >= 5_000 {
                        store.bulk_load(&events).await.unwrap();
                        events.clear();
                    }
                }
                store.bulk_load(&events).await.unwrap();
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
        println!("dynamodb local: loaded in {:.1} s", loading.elapsed().as_secs_f64());
        let queries = || counter.count("Query");
        report("dynamodb local", "user history", &measure(&dynamodb, user_query, &queries).await, "Query");
        let window_measure = measure(&dynamodb, window, &queries).await;
        report("dynamodb local", "one-hour window", &window_measure, "Query");
        assert_eq!(counter.count("Scan"), 0);
        // A cursor per shard: one Query per shard per result page (1 MB), whatever
        // the reader's page size; the window's events fit in one page per shard.
        assert!(window_measure.pages_last <= 8, "{} Queries for one day's window", window_measure.pages_last);
        let _ = std::fs::remove_file(&path);
    });
}

/// Counts the pages (one SQL query each) read from a store.
struct CountingPages<'a> {
    inner: &'a SqliteStore,
    pages: &'a std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl EventStore for CountingPages<'_> {
    async fn append(
        &self,
        event: &EventEnvelope,
    ) -> Result<wsledger::ports::AppendOutcome, wsledger::ports::StoreError> {
        self.inner.append(event).await
    }

    async fn connection_history(
        &self,
        connection_id: &ConnectionId,
        page: wsledger::ports::PageRequest,
    ) -> Result<wsledger::ports::Page<EventEnvelope>, wsledger::ports::StoreError> {
        self.pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.connection_history(connection_id, page).await
    }

    async fn user_history(
        &self,
        user_id: &UserId,
        range: TimeRange,
        page: wsledger::ports::PageRequest,
    ) -> Result<wsledger::ports::Page<EventEnvelope>, wsledger::ports::StoreError> {
        self.pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.user_history(user_id, range, page).await
    }

    async fn window(
        &self,
        since: Timestamp,
        until: Timestamp,
        page: wsledger::ports::PageRequest,
    ) -> Result<wsledger::ports::Page<EventEnvelope>, wsledger::ports::StoreError> {
        self.pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.window(since, until, page).await
    }
}
