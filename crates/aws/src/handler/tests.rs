//! Given a connection's requests, when the handler serves them, then the ledger holds ...

use super::*;
use crate::adapters::faulty::Faulty;
use crate::adapters::memory::MemoryStore;
use crate::domain::EventId;
use crate::domain::EventKind;
use crate::domain::protocol::seed::{SEED_TEXT, SEED_VOICE_DATA, SEED_VOICE_END, SEED_VOICE_START};
use crate::domain::recovery::{REPLAY_BUDGET, REPLAYING_MARK_MARGIN, ResumeState};

const T0: i64 = 1_764_000_000_000;

/// A store that can be made to fail, over an in-memory one.
type FlakyStore = Faulty<MemoryStore>;

fn flaky_store() -> Arc<FlakyStore> {
    Arc::new(Faulty::new(Arc::new(MemoryStore::default())))
}

struct Session {
    store: Arc<FlakyStore>,
    handler: ConnectionHandler,
    requests: u64,
}

impl Session {
    fn new() -> Self {
        let store = flaky_store();
        let handler = ConnectionHandler::new(
            store.clone(),
            Arc::new(AcknowledgingVoice),
            Arc::new(EchoText),
            // The fixtures are dated in the past; keep them from expiring.
            HandlerConfig { retention_days: 36_500, ..HandlerConfig::default() },
        );
        Self { store, handler, requests: 0 }
    }

    fn meta(&mut self, offset_ms: i64, user: Option<&str>) -> RequestMeta {
        self.requests += 1;
        RequestMeta {
            connection_id: ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap(),
            request_id: format!("request-{}", self.requests),
            request_time: Timestamp::from_epoch_millis(T0 + offset_ms),
            connected_at: Timestamp::from_epoch_millis(T0),
            user_id: user.map(|user| UserId::parse(user).unwrap()),
        }
    }

    async fn connect(&mut self) -> Response {
        let meta = self.meta(0, Some("user-1"));
        let route = Route::Connect { ip_address: Some("203.0.113.7".into()), user_agent: Some("test/1".into()) };
        self.handler.handle(&meta, route).await
    }

    async fn send(&mut self, offset_ms: i64, body: &str) -> Response {
        let meta = self.meta(offset_ms, Some("user-1"));
        self.handler.handle(&meta, Route::Message { body: body.to_owned() }).await
    }

    async fn disconnect(&mut self, offset_ms: i64, status_code: i64, reason: &str) -> Response {
        let meta = self.meta(offset_ms, Some("user-1"));
        let route = Route::Disconnect { status_code: Some(status_code), reason: Some(reason.to_owned()) };
        self.handler.handle(&meta, route).await
    }

    /// The kinds of the stored events, sorted (events of one millisecond are in hash order).
    fn kinds(&self) -> Vec<EventKind> {
        let mut kinds: Vec<EventKind> = self.store.inner().all_events().iter().map(EventEnvelope::kind).collect();
        kinds.sort();
        kinds
    }

    fn count(&self, kind: EventKind) -> usize {
        self.kinds().into_iter().filter(|stored| *stored == kind).count()
    }
}

fn frame(response: &Response) -> serde_json::Value {
    serde_json::from_str(response.body.as_deref().expect("a reply frame")).expect("JSON")
}

#[tokio::test]
async fn a_busy_minute_writes_at_most_six_events() {
    let mut session = Session::new();
    assert_eq!(session.connect().await, Response::ok());
    let mut at = 100;
    let mut tick = || {
        at += 20;
        at
    };
    assert_eq!(frame(&session.send(tick(), SEED_VOICE_START).await)["type"], "voice_started");
    for _ in 0..1_000 {
        assert_eq!(frame(&session.send(tick(), SEED_VOICE_DATA).await)["type"], "voice_data_received");
    }
    assert_eq!(frame(&session.send(tick(), SEED_VOICE_END).await)["type"], "voice_ended");
    for _ in 0..10 {
        assert_eq!(frame(&session.send(tick(), SEED_TEXT).await)["type"], "text_response");
    }
    for _ in 0..100 {
        assert_eq!(session.send(tick(), r#"{"type":"ping"}"#).await.body.as_deref(), Some(r#"{"type":"pong"}"#));
    }
    let last = tick();
    assert!(last < 60_000, "all inside one minute");
    assert_eq!(session.disconnect(last, 1000, "bye").await, Response::ok());

    let stored = session.store.inner().all_events();
    assert!(stored.len() <= 6, "{:?}", session.kinds());
    assert!(
        session.store.inner().append_requests() <= 6,
        "the debounce is in memory, not in billed conditional writes"
    );
    for kind in [EventKind::Connected, EventKind::VoiceStarted, EventKind::VoiceEnded, EventKind::Disconnected] {
        assert_eq!(session.count(kind), 1, "{kind}");
    }
    assert_eq!(session.count(EventKind::Activity), 1);
    let metrics = session.handler.metrics();
    assert_eq!(metrics.messages, 1_112);
    assert!(metrics.rejected.is_empty());
    // The ledger records that things happened, never what was said.
    let ledger = format!("{stored:?}");
    assert!(!ledger.contains("Hello, AI!") && !ledger.contains("base64-encoded-audio"));
}

#[tokio::test]
async fn activity_is_recorded_once_per_interval_with_the_message_count() {
    let mut session = Session::new();
    session.connect().await;
    for offset in [1_000, 30_000, 45_000, 61_000, 62_000, 121_500] {
        session.send(offset, r#"{"type":"ping"}"#).await;
    }
    let activity: Vec<(Timestamp, u64)> = session
        .store
        .inner()
        .all_events()
        .into_iter()
        .filter_map(|event| match event.event {
            ConnectionEvent::Activity { message_count, .. } => Some((event.at, message_count)),
            _ => None,
        })
        .collect();
    let at = |offset| Timestamp::from_epoch_millis(T0 + offset);
    assert_eq!(activity, vec![(at(1_000), 1), (at(61_000), 3), (at(121_500), 2)]);
}

#[tokio::test]
async fn a_connect_without_an_authorizer_context_is_refused_and_records_nothing() {
    let mut session = Session::new();
    // The seed's client sends ?userId=someone; only the authorizer context counts.
    let meta = session.meta(0, None);
    let route = Route::Connect { ip_address: Some("203.0.113.7".into()), user_agent: None };
    assert_eq!(session.handler.handle(&meta, route).await.status, 401);
    assert!(session.store.inner().all_events().is_empty());
}

#[tokio::test]
async fn a_retried_request_appends_nothing_new_and_answers_the_same() {
    let mut session = Session::new();
    let meta = session.meta(0, Some("user-1"));
    let connect = Route::Connect { ip_address: Some("203.0.113.7".into()), user_agent: None };
    assert_eq!(session.handler.handle(&meta, connect.clone()).await, Response::ok());
    assert_eq!(session.handler.handle(&meta, connect).await, Response::ok());
    let meta = session.meta(500, Some("user-1"));
    let voice_start = Route::Message { body: SEED_VOICE_START.to_owned() };
    let first = session.handler.handle(&meta, voice_start.clone()).await;
    let again = session.handler.handle(&meta, voice_start).await;
    assert_eq!(first, again);
    assert_eq!(session.kinds(), vec![EventKind::Connected, EventKind::Activity, EventKind::VoiceStarted]);
    assert_eq!(session.handler.metrics().duplicates, 2);
    let events = session.store.inner().all_events();
    let connected = events.iter().find(|event| event.kind() == EventKind::Connected).unwrap();
    assert_eq!(connected.at, Timestamp::from_epoch_millis(T0), "the request time, never the handler's clock");
    assert_eq!(connected.event_id, EventId::derive(connected.at, "request-1", EventKind::Connected));
}

#[tokio::test]
async fn bad_input_gets_an_error_frame_is_counted_and_changes_nothing() {
    let mut session = Session::new();
    session.connect().await;
    let before = session.store.inner().all_events();
    let cases = [
        ("", "empty_body"),
        ("{oops", "invalid_json"),
        ("[1,2]", "not_an_object"),
        (r#"{"data":{}}"#, "missing_type"),
        (r#"{"type":"dance"}"#, "unknown_type"),
        (r#"{"type":"voice_start","data":{"sessionId":"s"}}"#, "invalid_field"),
        (r#"{"type":"text_message","data":{"sessionId":"s","content":7}}"#, "invalid_field"),
        (r#"{"type":"voice_data","data":{"sessionId":"s","audioData":"%%%"}}"#, "invalid_field"),
    ];
    for (body, code) in cases {
        let response = session.send(1_000, body).await;
        assert_eq!(response.status, 200, "{body}");
        let frame = frame(&response);
        assert_eq!((frame["type"].as_str(), frame["code"].as_str()), (Some("error"), Some(code)), "{body}");
        assert!(!frame["message"].as_str().unwrap().is_empty());
    }
    let huge = format!(r#"{{"type":"text_message","data":{{"sessionId":"s","content":"{}"}}}}"#, "a".repeat(200_000));
    assert_eq!(frame(&session.send(1_000, &huge).await)["code"], "too_large");
    assert_eq!(session.store.inner().all_events(), before);
    let metrics = session.handler.metrics();
    assert_eq!(metrics.rejected.values().sum::<u64>(), 9);
    assert_eq!(metrics.rejected[&ErrorCode::InvalidField], 3);
}

#[tokio::test]
async fn disconnect_records_the_reason_status_and_detail() {
    assert_eq!(disconnect_reason(Some(1001), Some("Going away")), DisconnectReason::Idle);
    assert_eq!(
        disconnect_reason(Some(1000), Some("Client-side close frame status code '1000'")),
        DisconnectReason::Client
    );
    assert_eq!(
        disconnect_reason(Some(1001), Some("Client-side close frame status code '1001' (GOING_AWAY)")),
        DisconnectReason::Client
    );
    assert_eq!(disconnect_reason(None, None), DisconnectReason::Client);

    let mut session = Session::new();
    session.connect().await;
    // $disconnect without an authorizer context still finds the user from the ledger.
    let meta = session.meta(5_000, None);
    let route = Route::Disconnect { status_code: Some(1001), reason: Some("Going away".into()) };
    assert_eq!(session.handler.handle(&meta, route).await, Response::ok());
    let events = session.store.inner().all_events();
    let disconnected = events.iter().find(|event| event.kind() == EventKind::Disconnected).unwrap();
    assert_eq!(disconnected.user_id.as_str(), "user-1");
    assert_eq!(
        &disconnected.event,
        &ConnectionEvent::Disconnected {
            reason: DisconnectReason::Idle,
            status_code: Some(1001),
            detail: Some("Going away".into()),
            message_count: 0,
        }
    );
}

#[tokio::test]
async fn a_store_failure_refuses_the_connection_and_is_retried_on_the_next_message() {
    let mut session = Session::new();
    session.store.fail_all();
    assert_eq!(session.connect().await.status, 500, "refused rather than untracked");
    session.store.heal();
    session.connect().await;

    session.store.fail_all();
    let response = session.send(1_000, SEED_VOICE_START).await;
    assert_eq!((response.status, frame(&response)["code"].as_str()), (500, Some("unavailable")));
    // A ping still answers while the ledger is down.
    assert_eq!(session.send(1_500, r#"{"type":"ping"}"#).await.body.as_deref(), Some(r#"{"type":"pong"}"#));
    session.store.heal();
    session.send(2_000, SEED_TEXT).await;
    assert_eq!(session.kinds(), vec![EventKind::Connected, EventKind::Activity], "the failed activity was retried");
}

#[test]
fn config_reads_the_environment_and_refuses_nonsense() {
    let config = |pairs: &[(&str, &str)]| {
        let environment: HashMap<String, String> =
            pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        HandlerConfig::from_lookup(|name| environment.get(name).cloned())
    };
    assert_eq!(
        config(&[
            ("ACTIVITY_INTERVAL_SECS", "5"),
            ("RETENTION_DAYS", "0"),
            ("MAX_MESSAGES_PER_SECOND", "7"),
            ("RECOVERY_WINDOW_SECS", "30")
        ]),
        Ok(HandlerConfig {
            activity_interval: TimeDelta::seconds(5),
            retention_days: 0,
            policies: Policies { max_messages_per_second: 7, ..Policies::default() },
            recovery_window: TimeDelta::seconds(30),
            replay_budget: REPLAY_BUDGET,
        })
    );
    assert!(config(&[("RECOVERY_WINDOW_SECS", "two minutes")]).unwrap_err().contains("RECOVERY_WINDOW_SECS"));
    assert!(config(&[("ACTIVITY_INTERVAL_SECS", "soon")]).unwrap_err().contains("ACTIVITY_INTERVAL_SECS"));
    assert!(config(&[("MAX_CONNECTIONS_PER_USER", "-2")]).unwrap_err().contains("MAX_CONNECTIONS_PER_USER"));
    assert_eq!(config(&[]), Ok(HandlerConfig::default()));
}

/// 100,000 random and mutated messages through the whole handler: none panics,
/// every one is answered, and none that is refused changes the ledger.
#[test]
fn a_hundred_thousand_random_messages_are_all_answered() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut session = Session::new();
    runtime.block_on(session.connect());
    let valid = [SEED_VOICE_START, SEED_VOICE_DATA, SEED_VOICE_END, SEED_TEXT, r#"{"type":"ping"}"#];
    let mutated = (
        prop::sample::select(valid.to_vec()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<char>()), 0..4),
    )
        .prop_map(|(body, edits)| {
            let mut chars: Vec<char> = body.chars().collect();
            for (index, replacement) in edits {
                let at = index.index(chars.len());
                chars[at] = replacement;
            }
            chars.into_iter().collect::<String>()
        });
    let strategy = prop_oneof![any::<String>(), mutated, "[\\[\\]{}\":,a-z0-9 ]{0,64}"];
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: 100_000, ..ProptestConfig::default() });
    let session = std::cell::RefCell::new(session);
    let offset = std::cell::Cell::new(1_000);
    runner
        .run(&strategy, |body| {
            offset.set(offset.get() + 1);
            let response = runtime.block_on(session.borrow_mut().send(offset.get(), &body));
            let frame: serde_json::Value =
                serde_json::from_str(response.body.as_deref().unwrap_or("null")).map_err(|error| {
                    proptest::test_runner::TestCaseError::fail(format!("no JSON reply to {body:?}: {error}"))
                })?;
            prop_assert!(frame["type"].is_string(), "every message is answered: {body:?} -> {frame}");
            if frame["type"] == "error" {
                prop_assert!(frame["code"].is_string() && frame["message"].is_string());
            }
            Ok(())
        })
        .unwrap();
    let session = session.into_inner();
    let metrics = session.handler.metrics();
    assert_eq!(metrics.messages, 100_000);
    // Refused messages wrote nothing: only Connected, the valid messages' voice
    // events and at most one Activity per minute of simulated time are stored.
    let stored = session.store.inner().all_events().len() as u64;
    let accepted = 100_000 - metrics.rejected.values().sum::<u64>();
    assert!(stored <= 1 + 2 * accepted, "{stored} events for {accepted} accepted messages");
}

use proptest::prelude::*;

#[tokio::test]
async fn activity_is_still_recorded_after_a_panic_poisoned_the_coalescer() {
    let mut session = Session::new();
    session.connect().await;
    let handler = &session.handler;
    let poisoned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = handler.activity.lock().unwrap();
        panic!("a panic while holding the coalescer");
    }));
    assert!(poisoned.is_err() && session.handler.activity.is_poisoned());
    assert_eq!(frame(&session.send(100, SEED_TEXT).await)["type"], "text_response");
    assert_eq!(session.count(EventKind::Activity), 1, "the activity was written, not skipped");
}

/// The messages a ledger holds: in `Activity` events and with the `Disconnected`.
fn recorded_messages(events: &[EventEnvelope]) -> u64 {
    events
        .iter()
        .map(|event| match &event.event {
            ConnectionEvent::Activity { message_count, .. } | ConnectionEvent::Disconnected { message_count, .. } => {
                *message_count
            }
            _ => 0,
        })
        .sum()
}

/// In Lambda, `$disconnect` may run in another warm container than the messages:
/// the messages another container counted since its last `Activity` are not in the
/// ledger. Measured: two handlers share one connection's messages, one records
/// the end; the ledger is short by exactly the other's unrecorded messages, at most
/// one activity interval's worth.
#[tokio::test]
async fn two_containers_lose_at_most_one_interval_of_messages_each() {
    let store = flaky_store();
    let config = HandlerConfig { retention_days: 36_500, ..HandlerConfig::default() };
    let containers = [
        ConnectionHandler::new(store.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config),
        ConnectionHandler::new(store.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config),
    ];
    let mut session = Session::new();
    let connect = session.meta(0, Some("user-1"));
    containers[0].handle(&connect, Route::Connect { ip_address: None, user_agent: None }).await;
    // 10 minutes of one message a second, spread over both containers at random.
    let mut sent = 0u64;
    let mut state = 0x2545_f491_u64;
    for second in 1..=600 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let meta = session.meta(second * 1_000, Some("user-1"));
        containers[(state % 2) as usize].handle(&meta, Route::Message { body: SEED_TEXT.into() }).await;
        sent += 1;
    }
    let unrecorded_elsewhere =
        containers[1].activity().connections.get(&connect.connection_id).map_or(0, |state| state.unrecorded_messages);
    let end = session.meta(601_000, Some("user-1"));
    containers[0].handle(&end, Route::Disconnect { status_code: Some(1000), reason: None }).await;
    let recorded = recorded_messages(&store.inner().all_events());
    eprintln!("sent {sent}, recorded {recorded}, short by {} (the other container's unrecorded)", sent - recorded);
    assert_eq!(sent - recorded, unrecorded_elsewhere);
    assert!(unrecorded_elsewhere <= 60, "at most one interval (60 s at one message a second)");

    // With one container, the count is exact.
    let mut single = Session::new();
    single.connect().await;
    for second in 1..=100 {
        single.send(second * 1_000, SEED_TEXT).await;
    }
    single.disconnect(101_000, 1000, "bye").await;
    let recorded = recorded_messages(&single.store.inner().all_events());
    assert_eq!(recorded, 100);
}

/// A Management API that records what is posted to each connection.
#[derive(Default)]
struct Posted(Mutex<Vec<String>>);

#[async_trait::async_trait]
impl ConnectionGateway for Posted {
    async fn post(&self, _: &ConnectionId, data: &[u8]) -> Result<(), crate::ports::GatewayError> {
        self.0.lock().unwrap().push(String::from_utf8_lossy(data).into_owned());
        Ok(())
    }
    async fn get(&self, _: &ConnectionId) -> Result<crate::ports::GatewayConnection, crate::ports::GatewayError> {
        Ok(Default::default())
    }
    async fn delete(&self, _: &ConnectionId) -> Result<(), crate::ports::GatewayError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_resume_past_a_thousand_messages_fails_too_many_and_is_recorded_and_off_it_says_disabled() {
    let mut session = Session::new();
    let outbox = Arc::new(MemoryStore::default());
    let posted = Arc::new(Posted::default());
    session.handler = ConnectionHandler::new(
        session.store.clone(),
        Arc::new(AcknowledgingVoice),
        Arc::new(EchoText),
        HandlerConfig { retention_days: 36_500, ..HandlerConfig::default() },
    )
    .with_recovery(outbox.clone(), posted.clone());
    session.connect().await;
    let user = UserId::parse("user-1").unwrap();
    let now = Timestamp::from_epoch_millis(T0 + 1_000);
    for n in 0..1_002 {
        crate::recovery::keep(outbox.as_ref(), &user, &format!("{{\"n\":{n}}}"), now, TimeDelta::seconds(120))
            .await
            .unwrap();
    }
    let response = session.send(2_000, r#"{"type":"resume","data":{"lastSeq":1}}"#).await;
    assert_eq!((response.status, response.body), (200, None), "the frame went through the gateway");
    let frames: Vec<serde_json::Value> =
        posted.0.lock().unwrap().iter().map(|frame| serde_json::from_str(frame).unwrap()).collect();
    assert_eq!(frames, [serde_json::json!({"type":"resume_failed","data":{"reason":"too_many","oldestSeq":2}})]);
    let connection = ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap();
    let history = session.store.connection_history(&connection, PageRequest::first(100)).await.unwrap().items;
    assert!(
        history.iter().any(|event| event.event
            == ConnectionEvent::Resumed { last_seq: 1, replayed: 0, failure: Some("too_many".into()) })
    );
    assert_eq!(session.handler.metrics_registry().count_by(names::RESUME_FAILURES, "too_many"), 1);

    let bad = session.send(3_000, r#"{"type":"resume","data":{"lastSeq":-4}}"#).await;
    assert!(bad.body.unwrap().contains("invalid_field"));
    session.handler = ConnectionHandler::new(
        session.store.clone(),
        Arc::new(AcknowledgingVoice),
        Arc::new(EchoText),
        HandlerConfig { retention_days: 36_500, recovery_window: TimeDelta::zero(), ..HandlerConfig::default() },
    )
    .with_recovery(outbox, posted);
    let off = session.send(4_000, r#"{"type":"resume","data":{"lastSeq":1}}"#).await;
    let off: serde_json::Value = serde_json::from_str(&off.body.unwrap()).unwrap();
    assert_eq!(off, serde_json::json!({"type":"resume_failed","data":{"reason":"disabled","oldestSeq":0}}));
}

/// A Management API that takes `1` to answer each post.
struct Slow(Posted, std::time::Duration);

#[async_trait::async_trait]
impl ConnectionGateway for Slow {
    async fn post(&self, connection: &ConnectionId, data: &[u8]) -> Result<(), crate::ports::GatewayError> {
        tokio::time::sleep(self.1).await;
        self.0.post(connection, data).await
    }
    async fn get(
        &self,
        connection: &ConnectionId,
    ) -> Result<crate::ports::GatewayConnection, crate::ports::GatewayError> {
        self.0.get(connection).await
    }
    async fn delete(&self, connection: &ConnectionId) -> Result<(), crate::ports::GatewayError> {
        self.0.delete(connection).await
    }
}

/// A session whose handler replays through `gateway` with `budget`, and 100
/// messages kept for `user-1` (seq 1 to 100).
async fn replaying_session(gateway: Arc<Slow>, budget: TimeDelta) -> (Session, Arc<MemoryStore>) {
    let mut session = Session::new();
    let outbox = Arc::new(MemoryStore::default());
    let config = HandlerConfig { retention_days: 36_500, replay_budget: budget, ..HandlerConfig::default() };
    session.handler =
        ConnectionHandler::new(session.store.clone(), Arc::new(AcknowledgingVoice), Arc::new(EchoText), config)
            .with_recovery(outbox.clone(), gateway);
    session.connect().await;
    let user = UserId::parse("user-1").unwrap();
    for n in 1..=100 {
        let now = Timestamp::from_epoch_millis(T0 + 1_000);
        crate::recovery::keep(outbox.as_ref(), &user, &format!("{{\"n\":{n}}}"), now, TimeDelta::seconds(120))
            .await
            .unwrap();
    }
    (session, outbox)
}

#[tokio::test]
async fn a_replay_out_of_budget_stops_says_deadline_and_leaves_the_connection_live() {
    let gateway = Arc::new(Slow(Posted::default(), std::time::Duration::from_millis(20)));
    let (mut session, outbox) = replaying_session(gateway.clone(), TimeDelta::milliseconds(300)).await;
    let response = session.send(2_000, r#"{"type":"resume","data":{"lastSeq":0}}"#).await;
    assert_eq!((response.status, response.body), (200, None));
    let frames: Vec<serde_json::Value> =
        gateway.0.0.lock().unwrap().iter().map(|frame| serde_json::from_str(frame).unwrap()).collect();
    assert_eq!(frames[0], serde_json::json!({"type":"resumed","data":{"lastSeq":0,"replayed":100}}));
    let delivered = frames.len() - 2;
    assert!((1..100).contains(&delivered), "cut in the middle: {delivered} delivered");
    for (index, frame) in frames[1..=delivered].iter().enumerate() {
        assert_eq!(frame["seq"], index as u64 + 1, "in order");
    }
    assert_eq!(
        frames.last().unwrap(),
        &serde_json::json!({"type":"resume_failed","data":{"reason":"deadline","oldestSeq":1}})
    );
    let connection = ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap();
    let (head, _) = outbox.head(&UserId::parse("user-1").unwrap()).await.unwrap().unwrap();
    assert_eq!(head.state_of(&connection), Some(ResumeState::Live), "senders post to it again");
    let history = session.store.connection_history(&connection, PageRequest::first(100)).await.unwrap().items;
    assert!(history.iter().any(|event| event.event
        == ConnectionEvent::Resumed { last_seq: 0, replayed: delivered as u64, failure: Some("deadline".into()) }));
    assert_eq!(session.handler.metrics_registry().count_by(names::RESUME_FAILURES, "deadline"), 1);
}

#[tokio::test]
async fn a_replay_that_dies_holds_senders_back_only_until_its_mark_runs_out() {
    let gateway = Arc::new(Slow(Posted::default(), std::time::Duration::from_millis(50)));
    let (mut session, outbox) = replaying_session(gateway.clone(), REPLAY_BUDGET).await;
    // The Lambda's deadline comes in the middle of the replay: the invocation is dropped.
    let meta = session.meta(2_000, Some("user-1"));
    let body = r#"{"type":"resume","data":{"lastSeq":0}}"#.to_owned();
    let resume = session.handler.handle(&meta, Route::Message { body });
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), resume).await.is_err());
    let posted_before = gateway.0.0.lock().unwrap().len();
    assert!(posted_before < 100, "the replay was cut: {posted_before} frames");

    let user = UserId::parse("user-1").unwrap();
    let send = |at: i64| {
        let (store, outbox, gateway, user) = (session.store.clone(), outbox.clone(), gateway.clone(), user.clone());
        async move {
            let recovery =
                crate::delivery::Recovery { outbox: outbox.as_ref(), window: TimeDelta::seconds(120), metrics: None };
            let now = Timestamp::from_epoch_millis(T0 + at);
            crate::delivery::send_to_user(
                store.as_ref(),
                store.as_ref(),
                gateway.as_ref(),
                &user,
                b"{\"n\":0}",
                0,
                now,
                Some(recovery),
            )
            .await
            .unwrap()
        }
    };
    // While the replay may still be running, senders leave the connection to it ...
    let early = send(3_000).await;
    assert_eq!((early.left_to_replay, early.delivered), (1, 0), "{early:?}");
    // ... and once its mark has run out, they post to it as to a live connection.
    let deadline = 2_000 + (REPLAY_BUDGET + REPLAYING_MARK_MARGIN).num_milliseconds();
    let late = send(deadline).await;
    assert_eq!((late.left_to_replay, late.delivered), (0, 1), "{late:?}");
    let last = gateway.0.0.lock().unwrap().last().cloned().unwrap();
    let last: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(
        last,
        serde_json::json!({"type":"delivery","seq":102,"data":{"n":0}}),
        "its seq shows the client the gap"
    );
}
