//! The socket protocol: the seed's client messages and the server's frames.
//!
//! Inbound text frames are `{"type": ..., "data": {...}}`. Parsing is total: every
//! input is either a valid [`ClientMessage`] or a [`ProtocolError`] with a stable
//! code and a message naming what was wrong. Nothing here panics on client input.

use std::fmt;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value, json};

/// API Gateway's limit for one WebSocket message (bigger ones close with 1009).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// The largest decoded audio chunk one `voice_data` may carry: its base64 text
/// (129,708 characters) and the envelope fit in one API Gateway message.
pub const MAX_AUDIO_BYTES: usize = 95 * 1024;

/// Audio may come in either base64 alphabet, padded or not: the seed's own example
/// (`"base64-encoded-audio"`) is URL-safe base64.
const PADDING_INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDING_INDIFFERENT);
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_INDIFFERENT);

fn decode_base64(encoded: &str) -> Result<Vec<u8>, base64::DecodeError> {
    BASE64_STANDARD.decode(encoded).or_else(|error| BASE64_URL_SAFE.decode(encoded).map_err(|_| error))
}
/// The longest `text_message` content, in characters.
pub const MAX_TEXT_CHARS: usize = 16 * 1024;
/// The longest session id, in characters.
pub const MAX_SESSION_ID_CHARS: usize = 128;
/// The longest audio format name, in characters.
pub const MAX_AUDIO_FORMAT_CHARS: usize = 64;

/// A valid message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    VoiceStart {
        audio_format: String,
        session_id: String,
    },
    VoiceData {
        session_id: String,
        audio: Vec<u8>,
    },
    VoiceEnd {
        session_id: String,
    },
    TextMessage {
        content: String,
        session_id: String,
    },
    Ping,
    /// Reconnect recovery: deliver what was sent to this user after `last_seq`.
    Resume {
        last_seq: u64,
    },
}

impl ClientMessage {
    /// The message's `type` on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::VoiceStart { .. } => "voice_start",
            ClientMessage::VoiceData { .. } => "voice_data",
            ClientMessage::VoiceEnd { .. } => "voice_end",
            ClientMessage::TextMessage { .. } => "text_message",
            ClientMessage::Ping => "ping",
            ClientMessage::Resume { .. } => "resume",
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match self {
            ClientMessage::VoiceStart { session_id, .. }
            | ClientMessage::VoiceData { session_id, .. }
            | ClientMessage::VoiceEnd { session_id }
            | ClientMessage::TextMessage { session_id, .. } => Some(session_id),
            ClientMessage::Ping | ClientMessage::Resume { .. } => None,
        }
    }
}

/// The stable codes of error frames. Clients may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    EmptyBody,
    InvalidJson,
    NotAnObject,
    MissingType,
    UnknownType,
    InvalidField,
    TooLarge,
    /// The connection has no authenticated user.
    Unauthorized,
    /// The server could not record the message; the client may retry.
    Unavailable,
    /// Over a rate policy (`MAX_MESSAGES_PER_SECOND`, `MAX_LEDGER_EVENTS_PER_MINUTE`).
    RateLimited,
    /// Over a quota policy (`MAX_VOICE_SECONDS_PER_DAY`).
    QuotaExceeded,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::EmptyBody,
        ErrorCode::InvalidJson,
        ErrorCode::NotAnObject,
        ErrorCode::MissingType,
        ErrorCode::UnknownType,
        ErrorCode::InvalidField,
        ErrorCode::TooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Unavailable,
        ErrorCode::RateLimited,
        ErrorCode::QuotaExceeded,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::NotAnObject => "not_an_object",
            ErrorCode::MissingType => "missing_type",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    fn field(message_type: &str, field: &str, problem: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InvalidField, format!("{message_type}: data.{field} {problem}"))
    }
}

/// A frame the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    Pong,
    Error {
        code: ErrorCode,
        message: String,
    },
    VoiceStarted {
        session_id: String,
    },
    VoiceDataReceived {
        session_id: String,
        bytes: usize,
    },
    VoiceEnded {
        session_id: String,
    },
    TextResponse {
        session_id: String,
        content: String,
    },
    /// The answer to a `resume`: `replayed` deliveries follow, in order.
    Resumed {
        last_seq: u64,
        replayed: u64,
    },
    /// A `resume` that cannot be served: the client reloads. `oldest_seq` is the
    /// oldest message still kept.
    ResumeFailed {
        reason: String,
        oldest_seq: u64,
    },
    /// A message sent to the user, to a connection that resumed: its number and
    /// the message (JSON as sent; other text as a JSON string).
    Delivery {
        seq: u64,
        data: String,
    },
}

impl ServerMessage {
    pub fn error(error: &ProtocolError) -> Self {
        ServerMessage::Error { code: error.code, message: error.message.clone() }
    }

    /// The JSON text of the frame.
    pub fn to_json(&self) -> String {
        let value = match self {
            ServerMessage::Pong => json!({ "type": "pong" }),
            ServerMessage::Error { code, message } => {
                json!({ "type": "error", "code": code.as_str(), "message": message })
            }
            ServerMessage::VoiceStarted { session_id } => {
                json!({ "type": "voice_started", "data": { "sessionId": session_id } })
            }
            ServerMessage::VoiceDataReceived { session_id, bytes } => {
                json!({ "type": "voice_data_received", "data": { "sessionId": session_id, "bytes": bytes } })
            }
            ServerMessage::VoiceEnded { session_id } => {
                json!({ "type": "voice_ended", "data": { "sessionId": session_id } })
            }
            ServerMessage::TextResponse { session_id, content } => {
                json!({ "type": "text_response", "data": { "sessionId": session_id, "content": content } })
            }
            ServerMessage::Resumed { last_seq, replayed } => {
                json!({ "type": "resumed", "data": { "lastSeq": last_seq, "replayed": replayed } })
            }
            ServerMessage::ResumeFailed { reason, oldest_seq } => {
                json!({ "type": "resume_failed", "data": { "reason": reason, "oldestSeq": oldest_seq } })
            }
            ServerMessage::Delivery { seq, data } => {
                let data = serde_json::from_str::<Value>(data).unwrap_or_else(|_| Value::String(data.clone()));
                json!({ "type": "delivery", "seq": seq, "data": data })
            }
        };
        value.to_string()
    }
}

/// Parses and validates one inbound text frame.
pub fn parse_client_message(body: &str) -> Result<ClientMessage, ProtocolError> {
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::new(
            ErrorCode::TooLarge,
            format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", body.len()),
        ));
    }
    if body.trim().is_empty() {
        return Err(ProtocolError::new(ErrorCode::EmptyBody, "message is empty"));
    }
    let value: Value = serde_json::from_str(body)
        .map_err(|error| ProtocolError::new(ErrorCode::InvalidJson, format!("message is not valid JSON: {error}")))?;
    let Value::Object(object) = value else {
        return Err(ProtocolError::new(
            ErrorCode::NotAnObject,
            format!("message must be a JSON object, not {}", json_kind(&value)),
        ));
    };
    let message_type = match object.get("type") {
        None | Some(Value::Null) => {
            return Err(ProtocolError::new(ErrorCode::MissingType, "message has no \"type\""));
        }
        Some(Value::String(message_type)) => message_type.as_str(),
        Some(other) => {
            return Err(ProtocolError::new(
                ErrorCode::MissingType,
                format!("\"type\" must be a string, not {}", json_kind(other)),
            ));
        }
    };
    let empty = Map::new();
    let data = match object.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(data)) => data,
        Some(other) => {
            return Err(ProtocolError::new(
                ErrorCode::InvalidField,
                format!("{message_type}: \"data\" must be an object, not {}", json_kind(other)),
            ));
        }
    };
    let fields = Fields { message_type, data };
    match message_type {
        "ping" => Ok(ClientMessage::Ping),
        "voice_start" => {
            Ok(ClientMessage::VoiceStart { audio_format: fields.audio_format()?, session_id: fields.session_id()? })
        }
        "voice_data" => {
            let session_id = fields.session_id()?;
            Ok(ClientMessage::VoiceData { audio: fields.audio()?, session_id })
        }
        "voice_end" => Ok(ClientMessage::VoiceEnd { session_id: fields.session_id()? }),
        "text_message" => {
            let session_id = fields.session_id()?;
            Ok(ClientMessage::TextMessage { content: fields.content()?, session_id })
        }
        "resume" => Ok(ClientMessage::Resume { last_seq: fields.sequence_number("lastSeq")? }),
        other => Err(ProtocolError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?}; expected one of voice_start, voice_data, voice_end, text_message, ping, resume",
                truncate(other, 64)
            ),
        )),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

struct Fields<'a> {
    message_type: &'a str,
    data: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn string(&self, field: &str) -> Result<&str, ProtocolError> {
        match self.data.get(field) {
            None | Some(Value::Null) => Err(ProtocolError::field(self.message_type, field, "is required")),
            Some(Value::String(text)) => Ok(text),
            Some(other) => Err(ProtocolError::field(
                self.message_type,
                field,
                format!("must be a string, not {}", json_kind(other)),
            )),
        }
    }

    fn name(&self, field: &str, max_chars: usize, allowed: impl Fn(char) -> bool) -> Result<String, ProtocolError> {
        let text = self.string(field)?;
        if text.is_empty() {
            return Err(ProtocolError::field(self.message_type, field, "must not be empty"));
        }
        if text.chars().count() > max_chars {
            return Err(ProtocolError::field(
                self.message_type,
                field,
                format!("is longer than {max_chars} characters"),
            ));
        }
        if !text.chars().all(allowed) {
            return Err(ProtocolError::field(self.message_type, field, "contains characters that are not allowed"));
        }
        Ok(text.to_owned())
    }

    /// A whole number from 0 to 2^53 - 1 (what a JavaScript client can hold exactly).
    fn sequence_number(&self, field: &str) -> Result<u64, ProtocolError> {
        const MAX: u64 = (1 << 53) - 1;
        match self.data.get(field) {
            None | Some(Value::Null) => Err(ProtocolError::field(self.message_type, field, "is required")),
            Some(Value::Number(number)) => match number.as_u64() {
                Some(value) if value <= MAX => Ok(value),
                _ => Err(ProtocolError::field(self.message_type, field, "must be a whole number from 0 to 2^53 - 1")),
            },
            Some(other) => Err(ProtocolError::field(
                self.message_type,
                field,
                format!("must be a number, not {}", json_kind(other)),
            )),
        }
    }

    fn session_id(&self) -> Result<String, ProtocolError> {
        self.name("sessionId", MAX_SESSION_ID_CHARS, |c| !c.is_control() && !c.is_whitespace())
    }

    fn audio_format(&self) -> Result<String, ProtocolError> {
        self.name("audioFormat", MAX_AUDIO_FORMAT_CHARS, |c| c.is_ascii_alphanumeric() || "/;=.+_-".contains(c))
    }

    fn audio(&self) -> Result<Vec<u8>, ProtocolError> {
        let encoded = self.string("audioData")?;
        if encoded.len() > MAX_AUDIO_BYTES.div_ceil(3) * 4 {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("{}: data.audioData is larger than {MAX_AUDIO_BYTES} bytes", self.message_type),
            ));
        }
        let audio = decode_base64(encoded).map_err(|error| {
            ProtocolError::field(self.message_type, "audioData", format!("is not valid base64: {error}"))
        })?;
        if audio.is_empty() {
            return Err(ProtocolError::field(self.message_type, "audioData", "must not be empty"));
        }
        Ok(audio)
    }

    fn content(&self) -> Result<String, ProtocolError> {
        let content = self.string("content")?;
        if content.trim().is_empty() {
            return Err(ProtocolError::field(self.message_type, "content", "must not be empty"));
        }
        let chars = content.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("{}: data.content is {chars} characters; the limit is {MAX_TEXT_CHARS}", self.message_type),
            ));
        }
        Ok(content.to_owned())
    }
}

/// The seed README's client examples, verbatim: what every test of the protocol
/// starts from, and what a client of the seed sends.
pub mod seed {
    pub const SEED_VOICE_START: &str =
        r#"{"type":"voice_start","data":{"audioFormat":"webm","sessionId":"voice-session-123"}}"#;
    pub const SEED_VOICE_DATA: &str =
        r#"{"type":"voice_data","data":{"audioData":"base64-encoded-audio","sessionId":"voice-session-123"}}"#;
    pub const SEED_VOICE_END: &str = r#"{"type":"voice_end","data":{"sessionId":"voice-session-123"}}"#;
    pub const SEED_TEXT: &str =
        r#"{"type":"text_message","data":{"content":"Hello, AI!","sessionId":"chat-session-123"}}"#;
}

#[cfg(test)]
mod tests;
