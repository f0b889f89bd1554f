//! API Gateway WebSocket events as API Gateway builds them, for the emulator to run
//! the handler's own Lambda translation on.

use std::collections::HashMap;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::handler::{RequestMeta, Route};

/// An id in API Gateway's format: 11 random bytes in base64, 16 characters ending
/// in `=` (like `L0SM9cOFvHcCIhw=`).
pub fn new_id() -> String {
    let random = ulid::Ulid::generate().0.to_be_bytes();
    BASE64.encode(&random[5..16])
}

/// What every event of the emulated API shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub domain_name: String,
    pub stage: String,
    pub api_id: String,
}

/// What every event of one connection shares (the API's part shared by all of them).
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    /// Parsed once, when the emulator makes it.
    pub connection_id: ConnectionId,
    pub connected_at: Timestamp,
    pub source_ip: String,
    pub user_agent: Option<String>,
    pub user_id: UserId,
    pub api: std::sync::Arc<Api>,
}

impl ConnectionContext {
    fn request_context(
        &self,
        route_key: &str,
        event_type: &str,
        request_id: &str,
        at: Timestamp,
    ) -> Map<String, Value> {
        let mut identity = json!({ "sourceIp": self.source_ip });
        if let Some(user_agent) = &self.user_agent {
            identity["userAgent"] = json!(user_agent);
        }
        let context = json!({
            "routeKey": route_key,
            "authorizer": {
                "principalId": self.user_id.as_str(),
                "userId": self.user_id.as_str(),
                "integrationLatency": 0
            },
            "eventType": event_type,
            "extendedRequestId": request_id,
            "requestTime": at.as_datetime().format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "messageDirection": "IN",
            "stage": self.api.stage,
            "connectedAt": self.connected_at.epoch_millis(),
            "requestTimeEpoch": at.epoch_millis(),
            "identity": identity,
            "requestId": request_id,
            "domainName": self.api.domain_name,
            "connectionId": self.connection_id.as_str(),
            "apiId": self.api.api_id,
        });
        match context {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn event(value: Value) -> ApiGatewayWebsocketProxyRequest {
        serde_json::from_value(value).expect("the emulator builds valid API Gateway events")
    }

    /// `$connect`, with the handshake's headers and query string.
    pub fn connect(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
        request_id: &str,
        at: Timestamp,
    ) -> ApiGatewayWebsocketProxyRequest {
        let mut single = Map::new();
        let mut multi = Map::new();
        for name in headers.keys() {
            let values: Vec<Value> = headers
                .get_all(name)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .map(|value| json!(value))
                .collect();
            if let Some(last) = values.last() {
                single.insert(name.as_str().to_owned(), last.clone());
            }
            multi.insert(name.as_str().to_owned(), Value::Array(values));
        }
        let query_multi: Map<String, Value> =
            query.iter().map(|(name, value)| (name.clone(), json!([value]))).collect();
        let mut event = json!({
            "headers": single,
            "multiValueHeaders": multi,
            "requestContext": self.request_context("$connect", "CONNECT", request_id, at),
            "isBase64Encoded": false,
        });
        if !query.is_empty() {
            event["queryStringParameters"] = json!(query);
            event["multiValueQueryStringParameters"] = Value::Object(query_multi);
        }
        Self::event(event)
    }

    /// A message on `route_key` (`$default` unless route selection picked another).
    pub fn message(
        &self,
        route_key: &str,
        body: &str,
        is_base64_encoded: bool,
        request_id: &str,
        message_id: &str,
        at: Timestamp,
    ) -> ApiGatewayWebsocketProxyRequest {
        let mut context = self.request_context(route_key, "MESSAGE", request_id, at);
        context.insert("messageId".into(), json!(message_id));
        Self::event(json!({
            "requestContext": context,
            "body": body,
            "isBase64Encoded": is_base64_encoded,
        }))
    }

    /// The handler's request for a message: what `request_of` reads from
    /// [`Self::message`]'s event, without building the event (over a kilobyte of
    /// JSON, built and parsed again for every frame). `serve`'s own handler takes
    /// this; `--lambda` sends the event. A binary frame's bytes are read as UTF-8,
    /// as the handler reads a base64 body.
    pub fn message_request(&self, body: MessageBody, request_id: String, at: Timestamp) -> (RequestMeta, Route) {
        let body = match body {
            MessageBody::Text(text) => text,
            MessageBody::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        let meta = RequestMeta {
            connection_id: self.connection_id.clone(),
            request_id,
            request_time: at,
            connected_at: self.connected_at,
            user_id: Some(self.user_id.clone()),
        };
        (meta, Route::Message { body })
    }

    /// `$disconnect`, with the close status and reason.
    pub fn disconnect(
        &self,
        status_code: u16,
        reason: &str,
        request_id: &str,
        at: Timestamp,
    ) -> ApiGatewayWebsocketProxyRequest {
        let mut context = self.request_context("$disconnect", "DISCONNECT", request_id, at);
        context.insert("disconnectStatusCode".into(), json!(status_code));
        context.insert("disconnectReason".into(), json!(reason));
        Self::event(json!({
            "headers": { "Host": self.api.domain_name },
            "multiValueHeaders": { "Host": [self.api.domain_name] },
            "requestContext": context,
            "isBase64Encoded": false,
        }))
    }
}

/// A message frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    Text(String),
    Binary(Vec<u8>),
}

impl MessageBody {
    /// The event's `body` and `isBase64Encoded`, as API Gateway sends a frame.
    pub fn event_body(&self) -> (std::borrow::Cow<'_, str>, bool) {
        match self {
            MessageBody::Text(text) => (text.as_str().into(), false),
            MessageBody::Binary(bytes) => (BASE64.encode(bytes).into(), true),
        }
    }
}

/// A route selection expression such as `$request.body.action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSelection {
    path: Vec<String>,
    routes: Vec<String>,
}

impl RouteSelection {
    /// Parses `$request.body.a.b`; `routes` are the route keys that exist besides `$default`.
    pub fn parse(expression: &str, routes: Vec<String>) -> Result<Self, String> {
        let path = expression
            .strip_prefix("$request.body.")
            .filter(|path| !path.is_empty())
            .ok_or_else(|| format!("route selection {expression:?} must look like $request.body.action"))?;
        Ok(Self { path: path.split('.').map(str::to_owned).collect(), routes })
    }

    /// The route of a message: the selected value when it names a route, else `$default`.
    pub fn route_of(&self, body: &str) -> String {
        let Ok(mut value) = serde_json::from_str::<Value>(body) else { return "$default".into() };
        for key in &self.path {
            value = match value.get(key) {
                Some(inner) => inner.clone(),
                None => return "$default".into(),
            };
        }
        match value.as_str() {
            Some(route) if self.routes.iter().any(|known| known == route) => route.to_owned(),
            _ => "$default".into(),
        }
    }
}

/// A connection's context for unit tests: user `user123` from 127.0.0.1.
#[cfg(test)]
pub(crate) fn test_context(user_agent: Option<&str>) -> ConnectionContext {
    ConnectionContext {
        connection_id: ConnectionId::parse("L0SM9cOFvHcCIhw=").unwrap(),
        connected_at: Timestamp::from_epoch_millis(1_764_000_000_000),
        source_ip: "127.0.0.1".into(),
        user_agent: user_agent.map(str::to_owned),
        user_id: UserId::parse("user123").unwrap(),
        api: std::sync::Arc::new(Api {
            domain_name: "127.0.0.1:8080".into(),
            stage: "local".into(),
            api_id: "wsledger".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_api_gateway_ids() {
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn route_selection_falls_back_to_default() {
        let selection = RouteSelection::parse("$request.body.action", vec!["sendmessage".into()]).unwrap();
        assert_eq!(selection.route_of(r#"{"action":"sendmessage"}"#), "sendmessage");
        assert_eq!(selection.route_of(r#"{"action":"other"}"#), "$default");
        assert_eq!(selection.route_of(r#"{"type":"ping"}"#), "$default");
        assert_eq!(selection.route_of("not json"), "$default");
        assert!(RouteSelection::parse("$request.header.x", vec![]).is_err());
    }

    #[test]
    fn events_carry_what_api_gateway_sends() {
        let context = test_context(Some("test"));
        let at = Timestamp::from_epoch_millis(1_764_000_000_500);
        let message = context.message("$default", r#"{"type":"ping"}"#, false, "req", "msg", at);
        assert_eq!(message.request_context.message_id.as_deref(), Some("msg"));
        assert_eq!(message.request_context.request_time_epoch, 1_764_000_000_500);
        assert_eq!(message.request_context.authorizer.fields["userId"], "user123");
        let disconnect = context.disconnect(1001, "Going away", "req2", at);
        assert_eq!(disconnect.request_context.disconnect_status_code, Some(1001));
        assert_eq!(disconnect.request_context.message_id, None);
    }

    /// serve's own handler skips the event; what it gets must be what the Lambda
    /// translation reads from the event, for text and binary frames alike.
    #[test]
    fn a_message_request_is_what_the_lambda_reads_from_the_event() {
        let context = test_context(None);
        let at = Timestamp::from_epoch_millis(1_764_000_000_500);
        let bodies = [
            MessageBody::Text(r#"{"type":"ping"}"#.into()),
            MessageBody::Text(String::new()),
            MessageBody::Binary(br#"{"type":"ping"}"#.to_vec()),
            MessageBody::Binary(vec![0xff, 0xfe, b'{']),
        ];
        for body in bodies {
            let (text, is_base64) = body.event_body();
            let event = context.message("$default", &text, is_base64, "req", "msg", at);
            let (lambda_meta, lambda_route) =
                crate::lambda::connection_handler::request_of(&event, "fallback").unwrap();
            let (meta, route) = context.message_request(body.clone(), "req".into(), at);
            assert_eq!(route, lambda_route, "{body:?}");
            assert_eq!(meta.connection_id, lambda_meta.connection_id);
            assert_eq!(meta.request_id, lambda_meta.request_id);
            assert_eq!(meta.request_time, lambda_meta.request_time);
            assert_eq!(meta.connected_at, lambda_meta.connected_at);
            assert_eq!(meta.user_id, lambda_meta.user_id);
        }
    }
}
