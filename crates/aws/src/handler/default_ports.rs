//! The ports beyond the ledger as wsledger ships them: a voice pipeline that
//! acknowledges and keeps nothing, and a text responder that echoes (the README
//! says so). Applications plug their own voice and AI behind the same traits.

use crate::domain::ConnectionId;
use crate::domain::protocol::ServerMessage;
use crate::ports::{TextResponder, VoicePipeline};

/// The default voice pipeline: acknowledges every message and keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcknowledgingVoice;

#[async_trait::async_trait]
impl VoicePipeline for AcknowledgingVoice {
    async fn start(
        &self,
        _connection_id: &ConnectionId,
        session_id: &str,
        _audio_format: &str,
    ) -> Result<Option<ServerMessage>, crate::ports::PortError> {
        Ok(Some(ServerMessage::VoiceStarted { session_id: session_id.to_owned() }))
    }

    async fn audio(
        &self,
        _connection_id: &ConnectionId,
        session_id: &str,
        audio: &[u8],
    ) -> Result<Option<ServerMessage>, crate::ports::PortError> {
        Ok(Some(ServerMessage::VoiceDataReceived { session_id: session_id.to_owned(), bytes: audio.len() }))
    }

    async fn end(
        &self,
        _connection_id: &ConnectionId,
        session_id: &str,
    ) -> Result<Option<ServerMessage>, crate::ports::PortError> {
        Ok(Some(ServerMessage::VoiceEnded { session_id: session_id.to_owned() }))
    }
}

/// The default text responder: echoes the content back as a `text_response`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoText;

#[async_trait::async_trait]
impl TextResponder for EchoText {
    async fn respond(
        &self,
        _connection_id: &ConnectionId,
        session_id: &str,
        content: &str,
    ) -> Result<Option<ServerMessage>, crate::ports::PortError> {
        Ok(Some(ServerMessage::TextResponse { session_id: session_id.to_owned(), content: content.to_owned() }))
    }
}
