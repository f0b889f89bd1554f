//! Events of one millisecond read in lifecycle order, through the real bootstraps
//! on DynamoDB Local and through `serve` with a real socket.

use aws_lambda_events::dynamodb::Event;
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wsledger::domain::{ConnectionId, EventKind, Timestamp};
use wsledger::ports::{EventStore, PageRequest, ViewStore};

use crate::dynamodb_local;
use crate::lambda_runtime_api::{Outcome, RuntimeApi, websocket_event as event};

const VOICE_START: &str = r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-1"}}"#;
const VOICE_END: &str = r#"{"type":"voice_end","data":{"sessionId":"voice-1"}}"#;

fn kinds(history: &[wsledger::domain::EventEnvelope]) -> Vec<EventKind> {
    history.iter().map(|event| event.kind()).collect()
}

/// Whether `kinds` reads as a connection's life: each kind no earlier than the one before.
fn in_lifecycle_order(kinds: &[EventKind]) -> bool {
    kinds.windows(2).all(|pair| pair[0].lifecycle_rank() <= pair[1].lifecycle_rank())
}

#[tokio::test]
async fn a_session_started_and_ended_in_one_millisecond_through_the_real_bootstraps() {
    let (store, _) = dynamodb_local::fresh_store().await;
    let env = dynamodb_local::bootstrap_env(store.tables());
    let handler_runtime = RuntimeApi::start().await;
    let _handler = handler_runtime.spawn(&wsledger_testkit::bootstrap_bin("connection-handler"), &env);
    let connect = include_str!("../fixtures/apigw/connect.json");
    let default = include_str!("../fixtures/apigw/default.json");
    let connected_at = Timestamp::now().epoch_millis() - 60_000;
    let connections: Vec<String> = (0..20).map(|index| format!("SameMillis{index:02}=")).collect();
    for connection in &connections {
        let at = connected_at + 1_000;
        for event in [
            event(connect, connection, connected_at, connected_at, None),
            event(default, connection, connected_at, at, Some(VOICE_START)),
            event(default, connection, connected_at, at, Some(VOICE_END)),
        ] {
            let Outcome::Response(response) = handler_runtime.invoke(event).await else { panic!("the handler failed") };
            assert_eq!(response["statusCode"], 200, "{response}");
        }
    }

    let records = crate::projector_lambda::stream_records(&store).await;
    let projector_runtime = RuntimeApi::start().await;
    let _projector = projector_runtime.spawn(&wsledger_testkit::bootstrap_bin("projector"), &env);
    // Newest first, as a stream may deliver them after a retry.
    let mut batch = Event::default();
    batch.records = records.into_iter().rev().collect();
    let Outcome::Response(response) = projector_runtime.invoke(serde_json::to_value(&batch).unwrap()).await else {
        panic!("the projector failed")
    };
    assert_eq!(response["batchItemFailures"], json!([]));

    let mut active = 0;
    let mut out_of_order = 0;
    for connection in &connections {
        let connection_id = ConnectionId::parse(connection.as_str()).unwrap();
        let view = store.get(&connection_id).await.unwrap().expect("a view").view;
        active += usize::from(view.voice_session_id.is_some());
        let history = store.connection_history(&connection_id, PageRequest::default()).await.unwrap().items;
        let kinds = kinds(&history);
        assert!(kinds.contains(&EventKind::VoiceStarted) && kinds.contains(&EventKind::VoiceEnded), "{kinds:?}");
        out_of_order += usize::from(!in_lifecycle_order(&kinds));
    }
    assert_eq!((active, out_of_order), (0, 0), "of 20: views with an ended session active, histories out of order");
}

#[tokio::test]
async fn back_to_back_voice_start_end_and_close_read_in_order_through_serve() {
    let app = crate::serve::App::start().await;
    for round in 0..50 {
        let user = format!("user-back-to-back-{round}");
        let mut client = app.connect(&user).await;
        // Back to back: nothing is read until the close.
        client.feed(Message::Text(VOICE_START.into())).await.unwrap();
        client.feed(Message::Text(VOICE_END.into())).await.unwrap();
        client.feed(Message::Close(None)).await.unwrap();
        client.flush().await.unwrap();
        drop(client);
        let views = app.views_when(&user, |views| views.first().is_some_and(|view| !view.is_connected())).await;
        assert_eq!(views[0].voice_session_id, None, "round {round}");
        let history = app.store.connection_history(&views[0].connection_id, PageRequest::default()).await.unwrap();
        let all = kinds(&history.items);
        assert!(in_lifecycle_order(&all), "round {round}: {all:?}");
        let without_activity: Vec<EventKind> = all.into_iter().filter(|kind| *kind != EventKind::Activity).collect();
        assert_eq!(
            without_activity,
            [EventKind::Connected, EventKind::VoiceStarted, EventKind::VoiceEnded, EventKind::Disconnected],
            "round {round}"
        );
    }
    app.server.shutdown().await;
}
