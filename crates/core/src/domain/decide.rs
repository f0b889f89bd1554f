//! What a client message asks of the handler, decided without I/O: the fold's
//! counterpart on the way in. The handler does the I/O around it (the policies'
//! reads, the append, the ports) in the order the decision gives.

use super::event::ConnectionEvent;
use super::protocol::{ClientMessage, ServerMessage};

/// The decision for one parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The answer that needs no port and no check (a `ping`'s `pong`); the message
    /// still counts as activity.
    pub answer_at_once: Option<ServerMessage>,
    /// It records a ledger event, so `MAX_LEDGER_EVENTS_PER_MINUTE` applies.
    pub limited_as_ledger_event: bool,
    /// It starts voice, so the user's `MAX_VOICE_SECONDS_PER_DAY` must allow it.
    pub needs_voice_quota: bool,
    /// The event it records in the ledger, once admitted.
    pub records: Option<ConnectionEvent>,
}

/// Decides what `message` needs: checks, a ledger event, an answer.
pub fn decide(message: &ClientMessage) -> Decision {
    let records = match message {
        ClientMessage::VoiceStart { audio_format, session_id } => {
            Some(ConnectionEvent::VoiceStarted { session_id: session_id.clone(), audio_format: audio_format.clone() })
        }
        ClientMessage::VoiceEnd { session_id } => Some(ConnectionEvent::VoiceEnded { session_id: session_id.clone() }),
        ClientMessage::VoiceData { .. }
        | ClientMessage::TextMessage { .. }
        | ClientMessage::Ping
        | ClientMessage::Resume { .. } => None,
    };
    Decision {
        answer_at_once: (*message == ClientMessage::Ping).then_some(ServerMessage::Pong),
        // A resume records its `Resumed` once served (what it replayed is known then).
        limited_as_ledger_event: records.is_some() || matches!(message, ClientMessage::Resume { .. }),
        needs_voice_quota: matches!(message, ClientMessage::VoiceStart { .. }),
        records,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_start_and_end_are_recorded_and_limited_the_rest_are_not() {
        let start = ClientMessage::VoiceStart { audio_format: "webm".into(), session_id: "v".into() };
        let decision = decide(&start);
        assert_eq!(
            decision.records,
            Some(ConnectionEvent::VoiceStarted { session_id: "v".into(), audio_format: "webm".into() })
        );
        assert!(decision.limited_as_ledger_event && decision.needs_voice_quota && decision.answer_at_once.is_none());

        let end = decide(&ClientMessage::VoiceEnd { session_id: "v".into() });
        assert_eq!(end.records, Some(ConnectionEvent::VoiceEnded { session_id: "v".into() }));
        assert!(end.limited_as_ledger_event && !end.needs_voice_quota);

        for message in [
            ClientMessage::VoiceData { session_id: "v".into(), audio: vec![1, 2] },
            ClientMessage::TextMessage { content: "hi".into(), session_id: "t".into() },
        ] {
            let decision = decide(&message);
            assert_eq!(decision.records, None, "message contents never become events");
            assert!(!decision.limited_as_ledger_event && !decision.needs_voice_quota);
            assert!(decision.answer_at_once.is_none());
        }
        assert_eq!(decide(&ClientMessage::Ping).answer_at_once, Some(ServerMessage::Pong));
    }
}
