//! The store contract: every adapter of the event store and view store passes these.
//!
//! An adapter's test module instantiates them with `store_contract!(make_store)`,
//! where `make_store().await` yields a fresh, empty store implementing both ports.

use std::collections::BTreeSet;

use wsledger::domain::{
    ConnectionEvent, ConnectionId, ConnectionInfo, ConnectionStatus, DisconnectReason, EventEnvelope, EventId,
    TimeRange, Timestamp, UserId,
};
use wsledger::ports::{
    AppendOutcome, EventStore, OutboxStore, Page, PageRequest, PresenceStore, StoreError, ViewCursor, ViewStore,
};
use wsledger::projection::{ProjectionOutcome, project_connection};

/// 2025-11-24T16:00:00Z: most fixtures sit on this day, some on the next.
pub const T0: i64 = 1_764_000_000_000;

pub fn envelope(connection: &str, user: &str, request: &str, offset_ms: i64, event: ConnectionEvent) -> EventEnvelope {
    EventEnvelope::for_request(
        ConnectionId::parse(connection).unwrap(),
        UserId::parse(user).unwrap(),
        request,
        Timestamp::from_epoch_millis(T0 + offset_ms),
        Timestamp::from_epoch_millis(T0),
        event,
    )
}

pub fn connected(ip: &str) -> ConnectionEvent {
    ConnectionEvent::Connected { ip_address: Some(ip.to_owned()), user_agent: Some("contract/1".to_owned()) }
}

pub fn activity(count: u64) -> ConnectionEvent {
    ConnectionEvent::Activity { session_id: Some("chat-session-123".into()), message_count: count }
}

pub fn disconnected() -> ConnectionEvent {
    ConnectionEvent::Disconnected {
        reason: DisconnectReason::Client,
        status_code: Some(1000),
        detail: None,
        message_count: 0,
    }
}

fn ids(events: &[EventEnvelope]) -> Vec<EventId> {
    events.iter().map(|event| event.event_id).collect()
}

async fn append_all<S: EventStore>(store: &S, events: &[EventEnvelope]) {
    for event in events {
        assert_eq!(store.append(event).await.unwrap(), AppendOutcome::Appended, "{event:?}");
    }
}

/// Reads every page of a history with pages of `limit` and checks the cursors.
async fn read_all<F, Fut>(limit: usize, mut read: F) -> Vec<EventEnvelope>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<EventEnvelope>, StoreError>>,
{
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..1_000 {
        let page = read(PageRequest { limit, after }).await.unwrap();
        assert!(page.items.len() <= limit, "a page holds at most its limit");
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
    panic!("pagination did not end");
}

pub async fn duplicate_append_is_a_success_that_writes_nothing<S: EventStore>(store: S) {
    let event = envelope("conn-dup", "user-1", "req-1", 0, connected("203.0.113.1"));
    assert_eq!(store.append(&event).await.unwrap(), AppendOutcome::Appended);
    assert_eq!(store.append(&event).await.unwrap(), AppendOutcome::AlreadyExists);
    let mut retried = event.clone();
    retried.event = connected("198.51.100.99");
    assert_eq!(store.append(&retried).await.unwrap(), AppendOutcome::AlreadyExists, "the first write wins");
    let history = store.connection_history(&event.connection_id, PageRequest::default()).await.unwrap();
    assert_eq!(history.items, vec![event]);
    assert_eq!(history.next, None);
}

pub async fn connection_history_is_in_event_id_order_and_paginates<S: EventStore>(store: S) {
    let mut events: Vec<EventEnvelope> = (0..23)
        .map(|index| {
            envelope("conn-h", "user-1", &format!("req-{index}"), (23 - index) * 1_000, activity(index as u64))
        })
        .collect();
    events.push(envelope("conn-other", "user-1", "req-x", 500, connected("203.0.113.2")));
    append_all(&store, &events).await;
    let connection = ConnectionId::parse("conn-h").unwrap();
    let mut expected: Vec<EventEnvelope> = events.iter().filter(|e| e.connection_id == connection).cloned().collect();
    expected.sort_by_key(|event| event.event_id);
    for limit in [1, 5, 23, 100] {
        let all = read_all(limit, |page| store.connection_history(&connection, page)).await;
        assert_eq!(all, expected, "pages of {limit}");
    }
    let unknown = store.connection_history(&ConnectionId::parse("nobody").unwrap(), PageRequest::default()).await;
    assert_eq!(unknown.unwrap(), Page { items: vec![], next: None });
}

pub async fn user_history_honours_the_range<S: EventStore>(store: S) {
    let events = vec![
        envelope("conn-a", "alice", "r1", 0, connected("203.0.113.1")),
        envelope("conn-a", "alice", "r2", 60_000, activity(3)),
        envelope("conn-b", "bob", "r3", 61_000, connected("203.0.113.2")),
        envelope("conn-a", "alice", "r4", 120_000, disconnected()),
        envelope("conn-c", "alice", "r5", 86_400_000, connected("203.0.113.3")),
    ];
    append_all(&store, &events).await;
    let alice = UserId::parse("alice").unwrap();
    let everything = read_all(2, |page| store.user_history(&alice, TimeRange::ALL, page)).await;
    assert_eq!(ids(&everything), ids(&[&events[0], &events[1], &events[3], &events[4]].map(Clone::clone)));
    let range =
        TimeRange::between(Timestamp::from_epoch_millis(T0 + 60_000), Timestamp::from_epoch_millis(T0 + 120_000));
    let window = read_all(10, |page| store.user_history(&alice, range, page)).await;
    assert_eq!(window, vec![events[1].clone()], "since is inclusive, until exclusive");
    let nobody = store.user_history(&UserId::parse("nobody").unwrap(), TimeRange::ALL, PageRequest::default()).await;
    assert!(nobody.unwrap().items.is_empty());
}

pub async fn window_spans_users_shards_and_days<S: EventStore>(store: S) {
    // 40 connections spread over the shards, events on two days.
    let mut events = Vec::new();
    for index in 0..40i64 {
        let connection = format!("conn-{index:02}");
        let user = format!("user-{}", index % 7);
        events.push(envelope(&connection, &user, &format!("c{index}"), index * 997, connected("203.0.113.4")));
        events.push(envelope(&connection, &user, &format!("d{index}"), 86_400_000 + index * 1_009, disconnected()));
    }
    append_all(&store, &events).await;
    let since = Timestamp::from_epoch_millis(T0 + 10_000);
    let until = Timestamp::from_epoch_millis(T0 + 86_400_000 + 20_000);
    let mut expected: Vec<EventEnvelope> =
        events.iter().filter(|event| TimeRange::between(since, until).contains(event.at)).cloned().collect();
    expected.sort_by_key(|event| event.event_id);
    assert!(expected.len() > 40, "the window crosses the day boundary");
    for limit in [7, 30, 1_000] {
        let all = read_all(limit, |page| store.window(since, until, page)).await;
        assert_eq!(ids(&all), ids(&expected), "pages of {limit}");
    }
    let empty = store.window(until, since, PageRequest::default()).await.unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
}

pub async fn expired_events_are_hidden<S: EventStore>(store: S) {
    let mut expired = envelope("conn-ttl", "user-ttl", "r1", 0, connected("203.0.113.5"));
    expired.expires_at = Some(Timestamp::now().epoch_seconds() - 10);
    let kept = envelope("conn-ttl", "user-ttl", "r2", 1_000, activity(1)).with_retention_days(36_500);
    let forever = envelope("conn-ttl", "user-ttl", "r3", 2_000, activity(2));
    append_all(&store, &[expired, kept.clone(), forever.clone()]).await;
    let history = store.connection_history(&kept.connection_id, PageRequest::default()).await.unwrap();
    assert_eq!(history.items, vec![kept.clone(), forever.clone()]);
    let by_user = store.user_history(&kept.user_id, TimeRange::ALL, PageRequest::default()).await.unwrap();
    assert_eq!(by_user.items, vec![kept, forever]);
}

fn view_of(events: &[EventEnvelope]) -> ConnectionInfo {
    ConnectionInfo::fold(events).unwrap()
}

pub async fn view_writes_are_conditional_on_the_version<S: ViewStore>(store: S) {
    let first = envelope("conn-v", "user-v", "r1", 0, connected("203.0.113.6"));
    let view = view_of(std::slice::from_ref(&first));
    assert_eq!(store.get(&first.connection_id).await.unwrap(), None);
    assert_eq!(store.put(&view, None).await.unwrap(), 1);
    assert!(matches!(store.put(&view, None).await, Err(StoreError::Conflict(_))), "create twice");
    let stored = store.get(&first.connection_id).await.unwrap().unwrap();
    assert_eq!((stored.view, stored.version), (view.clone(), 1));

    let newer = view_of(&[first.clone(), envelope("conn-v", "user-v", "r2", 5_000, disconnected())]);
    assert_eq!(store.put(&newer, Some(1)).await.unwrap(), 2);
    assert!(matches!(store.put(&view, Some(1)).await, Err(StoreError::Conflict(_))), "a stale writer loses");
    assert_eq!(store.get(&first.connection_id).await.unwrap().unwrap().view, newer);
}

pub async fn concurrent_projectors_converge<S: ViewStore + EventStore>(store: S) {
    let mut events = vec![envelope("conn-p", "user-p", "r0", 0, connected("203.0.113.7"))];
    events.extend((1..40).map(|index| envelope("conn-p", "user-p", &format!("r{index}"), index * 1_000, activity(1))));
    events.push(envelope("conn-p", "user-p", "r99", 99_000, disconnected()));
    append_all(&store, &events).await;
    let expected = view_of(&events);
    // Four projectors, each with an overlapping, reversed slice, all at once.
    let slices: Vec<Vec<EventEnvelope>> =
        (0..4).map(|part| events.iter().rev().skip(part * 9).take(20).cloned().collect()).collect();
    let store = &store;
    let results = futures_join_all(slices.iter().map(|slice| project_connection(store, store, slice))).await;
    for result in results {
        result.unwrap();
    }
    // The slices cover every event between them: if any projector's write had been
    // overwritten by another's, some event would be missing from the view.
    let stored = store.get(&events[0].connection_id).await.unwrap().unwrap();
    assert_eq!(stored.view, expected);
    assert_eq!(project_connection(store, store, &events).await.unwrap().outcome, ProjectionOutcome::Unchanged);
}

/// Runs futures concurrently on the current task (no spawning: stores are borrowed).
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|context| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(|output| output.expect("every future finished")).collect()
}

async fn list_all<F, Fut>(limit: usize, mut list: F) -> Vec<ConnectionInfo>
where
    F: FnMut(PageRequest<ViewCursor>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<ConnectionInfo, ViewCursor>, StoreError>>,
{
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..1_000 {
        let page = list(PageRequest { limit, after }).await.unwrap();
        assert!(page.items.len() <= limit);
        all.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
    panic!("pagination did not end");
}

pub async fn views_list_by_user_and_status<S: ViewStore + EventStore>(store: S) {
    for index in 0..12i64 {
        let connection = format!("conn-u{index:02}");
        let mut events =
            vec![envelope(&connection, "carol", &format!("c{index}"), index * 1_000, connected("203.0.113.8"))];
        if index % 3 == 0 {
            events.push(envelope(&connection, "carol", &format!("d{index}"), 50_000, disconnected()));
        }
        append_all(&store, &events).await;
        project_connection(&store, &store, &events).await.unwrap();
    }
    project_connection(&store, &store, &[envelope("conn-dave", "dave", "c", 0, connected("203.0.113.9"))])
        .await
        .unwrap();
    let carol = UserId::parse("carol").unwrap();
    let all = list_all(5, |page| store.list_by_user(&carol, None, page)).await;
    assert_eq!(all.len(), 12);
    assert!(all.iter().all(|view| view.user_id == carol));
    let connected = list_all(3, |page| store.list_by_user(&carol, Some(ConnectionStatus::Connected), page)).await;
    let disconnected = list_all(3, |page| store.list_by_user(&carol, Some(ConnectionStatus::Disconnected), page)).await;
    assert_eq!((connected.len(), disconnected.len()), (8, 4));
    assert!(connected.iter().all(ConnectionInfo::is_connected));
    let unique: BTreeSet<_> = all.iter().map(|view| view.connection_id.clone()).collect();
    assert_eq!(unique.len(), 12, "no view listed twice across pages");
}

pub async fn live_listing_finds_only_stale_connected_views<S: ViewStore + EventStore>(store: S) {
    // Connections idle for 0..30 minutes at "now" = T0 + 30 min; every third is disconnected.
    for index in 0..30i64 {
        let connection = format!("conn-l{index:02}");
        let mut events = vec![envelope(&connection, "erin", &format!("c{index}"), 0, connected("203.0.113.10"))];
        events.push(envelope(&connection, "erin", &format!("a{index}"), index * 60_000, activity(1)));
        if index % 3 == 0 {
            events.push(envelope(&connection, "erin", &format!("d{index}"), index * 60_000 + 1, disconnected()));
        }
        append_all(&store, &events).await;
        project_connection(&store, &store, &events).await.unwrap();
    }
    let now = Timestamp::from_epoch_millis(T0 + 30 * 60_000);
    let stale = list_all(4, |page| store.list_live_until_before(now, page)).await;
    let mut stale_ids: Vec<String> = stale.iter().map(|view| view.connection_id.to_string()).collect();
    stale_ids.sort();
    // Live until = last activity + 10 min < now  <=>  index < 20; minus the disconnected ones.
    let expected: Vec<String> =
        (0..20).filter(|index| index % 3 != 0).map(|index| format!("conn-l{index:02}")).collect();
    assert_eq!(stale_ids, expected);
    assert!(stale.iter().all(|view| view.is_connected() && view.live_until().unwrap() < now));
}

/// `history --connection ID --since T --limit N`: the range is part of the query,
/// so the limit counts only events inside it.
pub async fn a_connections_history_applies_its_range_before_the_limit<S: EventStore>(store: S) {
    let events: Vec<EventEnvelope> = (0..16)
        .map(|index| envelope("conn-range", "user-range", &format!("r{index}"), index * 1_000, activity(1)))
        .collect();
    append_all(&store, &events).await;
    let connection_id = events[0].connection_id.clone();
    let range = TimeRange { since: Some(events[4].at), until: None };
    let query = wsledger::audit::HistoryQuery::Connection { connection_id: connection_id.clone(), range };
    let filter = wsledger::audit::HistoryFilter { kinds: Vec::new(), limit: Some(2) };
    let found = wsledger::audit::history(&store, query, filter).await.unwrap();
    assert_eq!(found, events[4..6].to_vec(), "2 events from the 5th on");
    let range = TimeRange { since: Some(events[4].at), until: Some(events[7].at) };
    let query = wsledger::audit::HistoryQuery::Connection { connection_id, range };
    let found = wsledger::audit::history(&store, query, wsledger::audit::HistoryFilter::default()).await.unwrap();
    assert_eq!(found, events[4..7].to_vec(), "the 5th to the 7th");
}

/// `connections --limit N` without `--user`: the N newest live connections (by
/// creation), whatever order the store's live index keeps.
pub async fn live_connections_come_newest_first_before_the_limit<S: ViewStore + EventStore>(store: S) {
    let mut expected = Vec::new();
    for index in 0..12i64 {
        let connection = format!("conn-n{index:02}");
        // Created later, idle longer: the live index's order is the reverse of creation.
        let created = index * 1_000;
        let mut events = vec![envelope(&connection, "frank", &format!("c{index}"), created, connected("203.0.113.11"))];
        events[0].connected_at = Timestamp::from_epoch_millis(T0 + created);
        events.push(envelope(&connection, "frank", &format!("a{index}"), 600_000 - index * 10_000, activity(1)));
        append_all(&store, &events).await;
        project_connection(&store, &store, &events).await.unwrap();
        expected.push(events[0].connection_id.clone());
    }
    expected.reverse();
    let newest = wsledger::audit::connections(&store, None, None, Some(3)).await.unwrap();
    let ids: Vec<_> = newest.iter().map(|view| view.connection_id.clone()).collect();
    assert_eq!(ids, expected[..3].to_vec());
}

/// Instantiates the contract for one adapter: `store_contract!(path::to::make_store)`.
#[macro_export]
macro_rules! store_contract {
    ($make_store:path) => {
        mod contract {
            use $crate::contract;

            #[tokio::test]
            async fn duplicate_append_is_a_success_that_writes_nothing() {
                contract::duplicate_append_is_a_success_that_writes_nothing($make_store().await).await;
            }

            #[tokio::test]
            async fn connection_history_is_in_event_id_order_and_paginates() {
                contract::connection_history_is_in_event_id_order_and_paginates($make_store().await).await;
            }

            #[tokio::test]
            async fn user_history_honours_the_range() {
                contract::user_history_honours_the_range($make_store().await).await;
            }

            #[tokio::test]
            async fn window_spans_users_shards_and_days() {
                contract::window_spans_users_shards_and_days($make_store().await).await;
            }

            #[tokio::test]
            async fn expired_events_are_hidden() {
                contract::expired_events_are_hidden($make_store().await).await;
            }

            #[tokio::test]
            async fn view_writes_are_conditional_on_the_version() {
                contract::view_writes_are_conditional_on_the_version($make_store().await).await;
            }

            #[tokio::test]
            async fn concurrent_projectors_converge() {
                contract::concurrent_projectors_converge($make_store().await).await;
            }

            #[tokio::test]
            async fn views_list_by_user_and_status() {
                contract::views_list_by_user_and_status($make_store().await).await;
            }

            #[tokio::test]
            async fn live_listing_finds_only_stale_connected_views() {
                contract::live_listing_finds_only_stale_connected_views($make_store().await).await;
            }

            #[tokio::test]
            async fn a_connections_history_applies_its_range_before_the_limit() {
                contract::a_connections_history_applies_its_range_before_the_limit($make_store().await).await;
            }

            #[tokio::test]
            async fn presence_records_are_conditional_and_listed_when_due() {
                contract::presence_records_are_conditional_and_listed_when_due($make_store().await).await;
            }

            #[tokio::test]
            async fn outbox_numbers_concurrent_senders_without_gaps() {
                contract::outbox_numbers_concurrent_senders_without_gaps($make_store().await).await;
            }

            #[tokio::test]
            async fn live_connections_come_newest_first_before_the_limit() {
                contract::live_connections_come_newest_first_before_the_limit($make_store().await).await;
            }
        }
    };
}

/// Presence records: written whole with a version, listed by when they are due
/// (never those without a `check_at`), and unseen by every view listing.
pub async fn presence_records_are_conditional_and_listed_when_due<S: PresenceStore + ViewStore + EventStore>(store: S) {
    use wsledger::domain::presence::PresenceRecord;
    let at = |offset_ms: i64| Timestamp::from_epoch_millis(T0 + offset_ms);
    let user = "ü#1/\"x\",y";
    let events = vec![envelope("conn-presence", user, "p1", 0, connected("203.0.113.5"))];
    append_all(&store, &events).await;
    project_connection(&store, &store, &events).await.unwrap();
    let mut record = PresenceRecord::new(UserId::parse(user).unwrap());
    record.observe(&ConnectionInfo::fold(&events).unwrap());
    record.settle(at(10), chrono::TimeDelta::seconds(5), &["webhook".to_owned()]);
    assert_eq!(record.outbox.len(), 1);

    assert_eq!(store.put_presence(&record, Some(at(10_000)), None).await.unwrap(), 1);
    assert!(matches!(store.put_presence(&record, Some(at(10_000)), None).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.put_presence(&record, Some(at(10_000)), Some(7)).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.put_presence(&record, Some(at(10_000)), Some(1)).await.unwrap(), 2);
    assert_eq!(store.presence(&record.user_id).await.unwrap(), Some((record.clone(), 2)));

    let later = PresenceRecord::new(UserId::parse("user-later").unwrap());
    store.put_presence(&later, Some(at(100_000)), None).await.unwrap();
    let quiet = PresenceRecord::new(UserId::parse("user-quiet").unwrap());
    store.put_presence(&quiet, None, None).await.unwrap();

    let due = store.list_presence(Some(at(50_000)), PageRequest::default()).await.unwrap();
    assert_eq!(due.items, vec![record.clone()]);
    let mut listed = Vec::new();
    let mut page = PageRequest::<ViewCursor>::first(1);
    loop {
        let next = store.list_presence(None, page.clone()).await.unwrap();
        listed.extend(next.items.into_iter().map(|record| record.user_id.to_string()));
        match next.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    listed.sort();
    assert_eq!(listed, vec!["user-later".to_owned(), user.to_owned()], "one page at a time, never user-quiet");

    let live = store.list_live_until_before(at(365 * 86_400_000), PageRequest::default()).await.unwrap();
    assert_eq!(live.items.len(), 1, "views only: {:?}", live.items);
    let by_user = store.list_by_user(&record.user_id, None, PageRequest::default()).await.unwrap();
    assert_eq!(by_user.items.len(), 1);
    // Taken out of the index.
    store.put_presence(&record, None, Some(2)).await.unwrap();
    assert!(store.list_presence(Some(at(50_000)), PageRequest::default()).await.unwrap().items.is_empty());
}

/// The outbox of reconnect recovery: numbers from 1 without gaps or repeats under
/// concurrent senders, messages read back in order by range, a stale head refused,
/// resume marks kept, and expired messages removed by the stores that sweep.
pub async fn outbox_numbers_concurrent_senders_without_gaps<S: OutboxStore>(store: S) {
    use wsledger::domain::recovery::{DEFAULT_RECOVERY_WINDOW, OutboxHead, ResumePlan, ResumeState, plan_resume};
    let user = UserId::parse("ü#1/\"x\",y").unwrap();
    let now = Timestamp::from_epoch_millis(T0);
    let senders = (0..12).map(|sender| {
        let (store, user) = (&store, &user);
        async move {
            let mut numbers = Vec::new();
            for index in 0..5 {
                let data = format!("{{\"sender\":{sender},\"index\":{index}}}");
                let (message, _) =
                    wsledger::recovery::keep(store, user, &data, now, DEFAULT_RECOVERY_WINDOW).await.unwrap();
                numbers.push(message.seq);
            }
            numbers
        }
    });
    let mut numbers: Vec<u64> = futures::future::join_all(senders).await.into_iter().flatten().collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=60).collect::<Vec<u64>>(), "every number once");

    let (head, version) = store.head(&user).await.unwrap().unwrap();
    assert_eq!(head.last_seq, 60);
    let read = store.messages(&user, 10, 60, 100).await.unwrap();
    assert_eq!(read.iter().map(|message| message.seq).collect::<Vec<_>>(), (11..=60).collect::<Vec<u64>>());
    assert_eq!(store.messages(&user, 0, 60, 7).await.unwrap().len(), 7, "the limit");
    assert!(read[0].data.starts_with("{\"sender\":"));
    assert_eq!(
        seqs_of(plan_resume(57, head.last_seq, &read, now.plus(chrono::TimeDelta::seconds(1)))),
        vec![58, 59, 60]
    );

    let connection = ConnectionId::parse("ResumingConn123=").unwrap();
    let mut marked = head.clone();
    let until = Timestamp::from_epoch_millis(1_764_000_123_456);
    marked.mark(&connection, Some(ResumeState::Replaying { until }));
    assert!(matches!(store.put_head(&user, &marked, Some(version + 1)).await, Err(StoreError::Conflict(_))));
    let version = store.put_head(&user, &marked, Some(version)).await.unwrap();
    let stale = OutboxHead { last_seq: 61, resumed: Vec::new() };
    let message = wsledger::domain::recovery::OutboxMessage {
        user_id: user.clone(),
        seq: 61,
        data: "{}".into(),
        sent_at: now,
        expires_at: now.plus(DEFAULT_RECOVERY_WINDOW),
    };
    assert!(
        matches!(store.append_message(&stale, &message, Some(version - 1)).await, Err(StoreError::Conflict(_))),
        "a sender that read the head before the mark must read it again"
    );
    assert_eq!(
        store.head(&user).await.unwrap().unwrap().0.state_of(&connection),
        Some(ResumeState::Replaying { until })
    );

    let later = now.plus(DEFAULT_RECOVERY_WINDOW).plus(chrono::TimeDelta::seconds(1));
    let removed = store.expire(later).await.unwrap();
    let left = store.messages(&user, 0, 60, 100).await.unwrap();
    // The embedded stores remove them all; DynamoDB leaves it to TTL (whenever it runs).
    assert!(removed == 60 && left.is_empty() || removed == 0, "removed {removed}, left {}", left.len());
    assert!(matches!(plan_resume(57, 60, &left, later), ResumePlan::Failed { .. }), "past the window");
}

fn seqs_of(plan: wsledger::domain::recovery::ResumePlan) -> Vec<u64> {
    match plan {
        wsledger::domain::recovery::ResumePlan::Replay(messages) => {
            messages.iter().map(|message| message.seq).collect()
        }
        other => panic!("not a replay: {other:?}"),
    }
}
