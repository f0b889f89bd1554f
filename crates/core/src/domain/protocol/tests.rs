use proptest::prelude::*;

use base64::engine::general_purpose::STANDARD as BASE64;

use super::*;

use super::seed::{SEED_TEXT, SEED_VOICE_DATA, SEED_VOICE_END, SEED_VOICE_START};

fn code_of(body: &str) -> ErrorCode {
    parse_client_message(body).expect_err(body).code
}

#[test]
fn the_seed_examples_parse() {
    assert_eq!(
        parse_client_message(SEED_VOICE_START),
        Ok(ClientMessage::VoiceStart { audio_format: "webm".into(), session_id: "voice-session-123".into() })
    );
    // The seed's placeholder "base64-encoded-audio" is valid URL-safe base64 (20 characters).
    let ClientMessage::VoiceData { session_id, audio } = parse_client_message(SEED_VOICE_DATA).unwrap() else {
        panic!("voice_data")
    };
    assert_eq!((session_id.as_str(), audio.len()), ("voice-session-123", 15));
    assert_eq!(
        parse_client_message(SEED_VOICE_END),
        Ok(ClientMessage::VoiceEnd { session_id: "voice-session-123".into() })
    );
    assert_eq!(
        parse_client_message(SEED_TEXT),
        Ok(ClientMessage::TextMessage { content: "Hello, AI!".into(), session_id: "chat-session-123".into() })
    );
    assert_eq!(parse_client_message(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
}

#[test]
fn every_kind_of_bad_input_has_its_code() {
    assert_eq!(code_of(""), ErrorCode::EmptyBody);
    assert_eq!(code_of("   \n"), ErrorCode::EmptyBody);
    assert_eq!(code_of("{not json"), ErrorCode::InvalidJson);
    assert_eq!(code_of(r#"[{"type":"ping"}]"#), ErrorCode::NotAnObject);
    assert_eq!(code_of("42"), ErrorCode::NotAnObject);
    assert_eq!(code_of(r#"{"data":{}}"#), ErrorCode::MissingType);
    assert_eq!(code_of(r#"{"type":7}"#), ErrorCode::MissingType);
    assert_eq!(code_of(r#"{"type":"launch_missiles"}"#), ErrorCode::UnknownType);
    assert_eq!(code_of(r#"{"type":"voice_start","data":{"sessionId":"s"}}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_start","data":{"sessionId":"s","audioFormat":5}}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_end","data":"s"}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_end"}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_end","data":{"sessionId":""}}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_end","data":{"sessionId":"a b"}}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_data","data":{"sessionId":"s","audioData":"!!!"}}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"voice_data","data":{"sessionId":"s","audioData":""}}"#), ErrorCode::InvalidField);
    assert_eq!(
        code_of(r#"{"type":"voice_data","data":{"sessionId":"s","audioData":"ab+-"}}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(code_of(r#"{"type":"text_message","data":{"sessionId":"s","content":"  "}}"#), ErrorCode::InvalidField);
    assert_eq!(code_of(r#"{"type":"text_message","data":{"content":"hi"}}"#), ErrorCode::InvalidField);
}

#[test]
fn oversized_input_is_too_large() {
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES));
    assert_eq!(code_of(&huge), ErrorCode::TooLarge);
    let long_text = format!(
        r#"{{"type":"text_message","data":{{"sessionId":"s","content":"{}"}}}}"#,
        "é".repeat(MAX_TEXT_CHARS + 1)
    );
    assert_eq!(code_of(&long_text), ErrorCode::TooLarge);
    let big_audio = BASE64.encode(vec![0u8; MAX_AUDIO_BYTES + 3]);
    let body = format!(r#"{{"type":"voice_data","data":{{"sessionId":"s","audioData":"{big_audio}"}}}}"#);
    assert_eq!(code_of(&body), ErrorCode::TooLarge);
    let max_audio = BASE64.encode(vec![1u8; MAX_AUDIO_BYTES]);
    let body = format!(r#"{{"type":"voice_data","data":{{"sessionId":"s","audioData":"{max_audio}"}}}}"#);
    assert!(parse_client_message(&body).is_ok(), "the limit itself is allowed");
}

#[test]
fn error_messages_name_the_field() {
    let error = parse_client_message(r#"{"type":"voice_start","data":{"sessionId":"s"}}"#).unwrap_err();
    assert_eq!(error.message, "voice_start: data.audioFormat is required");
    let frame = ServerMessage::error(&error).to_json();
    let frame: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(frame["type"], "error");
    assert_eq!(frame["code"], "invalid_field");
    assert_eq!(frame["message"], "voice_start: data.audioFormat is required");
}

#[test]
fn server_frames_have_the_documented_shapes() {
    assert_eq!(ServerMessage::Pong.to_json(), r#"{"type":"pong"}"#);
    let echo = ServerMessage::TextResponse { session_id: "chat-session-123".into(), content: "Hello, AI!".into() };
    let echo: Value = serde_json::from_str(&echo.to_json()).unwrap();
    assert_eq!(
        echo,
        json!({"type": "text_response", "data": {"sessionId": "chat-session-123", "content": "Hello, AI!"}})
    );
}

fn valid_message() -> impl Strategy<Value = String> {
    prop::sample::select(vec![SEED_VOICE_START, SEED_VOICE_DATA, SEED_VOICE_END, SEED_TEXT, r#"{"type":"ping"}"#])
        .prop_map(String::from)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_text_never_panics(body in any::<String>()) {
        let _ = parse_client_message(&body);
    }

    #[test]
    fn mutated_messages_never_panic_and_errors_say_something(
        body in valid_message(),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..6),
    ) {
        let mut chars: Vec<char> = body.chars().collect();
        for (index, replacement) in cuts {
            let at = index.index(chars.len());
            chars[at] = replacement;
        }
        let mutated: String = chars.into_iter().collect();
        if let Err(error) = parse_client_message(&mutated) {
            prop_assert!(!error.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_json_values_never_panic(
        message_type in prop::option::of("[a-z_]{0,12}"),
        session in prop::option::of(any::<String>()),
        content in prop::option::of(any::<String>()),
        audio in prop::option::of("[A-Za-z0-9+/=]{0,40}"),
        format in prop::option::of(any::<String>()),
    ) {
        let mut data = Map::new();
        if let Some(session) = session { data.insert("sessionId".into(), Value::String(session)); }
        if let Some(content) = content { data.insert("content".into(), Value::String(content)); }
        if let Some(audio) = audio { data.insert("audioData".into(), Value::String(audio)); }
        if let Some(format) = format { data.insert("audioFormat".into(), Value::String(format)); }
        let body = json!({ "type": message_type, "data": data }).to_string();
        let _ = parse_client_message(&body);
    }
}

#[test]
fn resume_takes_a_whole_last_seq_and_refuses_anything_else() {
    assert_eq!(
        parse_client_message(r#"{"type":"resume","data":{"lastSeq":42}}"#),
        Ok(ClientMessage::Resume { last_seq: 42 })
    );
    assert_eq!(
        parse_client_message(r#"{"type":"resume","data":{"lastSeq":0}}"#),
        Ok(ClientMessage::Resume { last_seq: 0 })
    );
    for bad in [
        r#"{"type":"resume"}"#,
        r#"{"type":"resume","data":{"lastSeq":-1}}"#,
        r#"{"type":"resume","data":{"lastSeq":1.5}}"#,
        r#"{"type":"resume","data":{"lastSeq":"7"}}"#,
        r#"{"type":"resume","data":{"lastSeq":9007199254740992}}"#,
        r#"{"type":"resume","data":{"lastSeq":1e400}}"#,
    ] {
        let error = parse_client_message(bad).unwrap_err();
        assert!(matches!(error.code, ErrorCode::InvalidField | ErrorCode::InvalidJson), "{bad}: {error:?}");
        assert!(error.message.contains("lastSeq") || error.code == ErrorCode::InvalidJson, "{bad}: {error:?}");
    }
}

#[test]
fn recovery_frames_carry_the_contract_names() {
    let resumed: serde_json::Value =
        serde_json::from_str(&ServerMessage::Resumed { last_seq: 3, replayed: 2 }.to_json()).unwrap();
    assert_eq!(resumed, serde_json::json!({"type":"resumed","data":{"lastSeq":3,"replayed":2}}));
    let failed: serde_json::Value =
        serde_json::from_str(&ServerMessage::ResumeFailed { reason: "expired".into(), oldest_seq: 9 }.to_json())
            .unwrap();
    assert_eq!(failed, serde_json::json!({"type":"resume_failed","data":{"reason":"expired","oldestSeq":9}}));
    let json: serde_json::Value =
        serde_json::from_str(&ServerMessage::Delivery { seq: 4, data: r#"{"answer":"hi"}"#.into() }.to_json()).unwrap();
    assert_eq!(json, serde_json::json!({"type":"delivery","seq":4,"data":{"answer":"hi"}}));
    let text: serde_json::Value =
        serde_json::from_str(&ServerMessage::Delivery { seq: 5, data: "plain \"text\"".into() }.to_json()).unwrap();
    assert_eq!(text, serde_json::json!({"type":"delivery","seq":5,"data":"plain \"text\""}));
}
