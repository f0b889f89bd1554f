//! The `connection-handler` Lambda: API Gateway WebSocket events in, integration
//! responses out. All decisions are [`ConnectionHandler`]'s; this module only
//! translates.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lambda_runtime::{Error, LambdaEvent};
use serde_json::Value;

use crate::domain::{ConnectionId, Timestamp, UserId};
use crate::handler::{ConnectionHandler, RequestMeta, Response, Route};

/// Why an event cannot be served at all (it did not come from API Gateway).
#[derive(Debug, thiserror::Error)]
pub enum BadEvent {
    #[error("requestContext.connectionId is missing or invalid")]
    ConnectionId,
    #[error("requestContext.requestTimeEpoch is missing")]
    RequestTime,
}

/// The user the authorizer vouched for: `context.userId`, else `principalId`.
/// Nothing the client sends (query string, headers, body) is ever consulted.
pub fn authorized_user(event: &ApiGatewayWebsocketProxyRequest) -> Option<UserId> {
    let fields = &event.request_context.authorizer.fields;
    ["userId", "principalId"]
        .iter()
        .filter_map(|name| fields.get(*name).and_then(Value::as_str))
        .find_map(|value| UserId::parse(value).ok())
}

/// Converts an API Gateway WebSocket event into the handler's request.
/// `fallback_request_id` (the Lambda invocation id) is used only when API Gateway
/// sent no request id.
pub fn request_of(
    event: &ApiGatewayWebsocketProxyRequest,
    fallback_request_id: &str,
) -> Result<(RequestMeta, Route), BadEvent> {
    let context = &event.request_context;
    let connection_id =
        context.connection_id.as_deref().and_then(|id| ConnectionId::parse(id).ok()).ok_or(BadEvent::ConnectionId)?;
    if context.request_time_epoch <= 0 {
        return Err(BadEvent::RequestTime);
    }
    let request_time = Timestamp::from_epoch_millis(context.request_time_epoch);
    let connected_at =
        if context.connected_at > 0 { Timestamp::from_epoch_millis(context.connected_at) } else { request_time };
    let request_id = context
        .request_id
        .clone()
        .or_else(|| context.extended_request_id.clone())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| fallback_request_id.to_owned());
    let meta = RequestMeta { connection_id, request_id, request_time, connected_at, user_id: authorized_user(event) };

    let route_key = context.route_key.as_deref().unwrap_or_default();
    let event_type = context.event_type.as_deref().unwrap_or_default();
    let route = if route_key == "$connect" || event_type == "CONNECT" {
        let user_agent = context
            .identity
            .user_agent
            .clone()
            .or_else(|| event.headers.get("user-agent").and_then(|value| value.to_str().ok()).map(str::to_owned));
        Route::Connect { ip_address: context.identity.source_ip.clone(), user_agent }
    } else if route_key == "$disconnect" || event_type == "DISCONNECT" {
        Route::Disconnect { status_code: context.disconnect_status_code, reason: context.disconnect_reason.clone() }
    } else {
        Route::Message { body: body_text(event) }
    };
    Ok((meta, route))
}

/// The message text; binary frames arrive base64-encoded and are decoded (and then
/// refused by the protocol if they are not UTF-8 JSON).
fn body_text(event: &ApiGatewayWebsocketProxyRequest) -> String {
    let body = event.body.clone().unwrap_or_default();
    if !event.is_base64_encoded {
        return body;
    }
    match BASE64.decode(body.as_bytes()) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => body,
    }
}

pub fn response_of(response: Response) -> ApiGatewayProxyResponse {
    let mut proxy_response = ApiGatewayProxyResponse::default();
    proxy_response.status_code = i64::from(response.status);
    proxy_response.body = response.body.map(Body::Text);
    proxy_response
}

/// The Lambda function: one API Gateway WebSocket event.
pub async fn handle(
    handler: &ConnectionHandler,
    event: LambdaEvent<ApiGatewayWebsocketProxyRequest>,
) -> Result<ApiGatewayProxyResponse, Error> {
    match request_of(&event.payload, &event.context.request_id) {
        Ok((meta, route)) => {
            let is_message = matches!(route, Route::Message { .. });
            let answered =
                tokio::time::timeout_at(super::answer_by(event.context.deadline), handler.handle(&meta, route));
            match answered.await {
                Ok(response) => Ok(response_of(response)),
                Err(_) => {
                    tracing::error!("no answer from the ledger before the invocation's deadline");
                    Ok(response_of(handler.unavailable(is_message)))
                }
            }
        }
        Err(error) => {
            tracing::error!(%error, "not an API Gateway WebSocket event");
            Ok(response_of(Response { status: 400, body: None }))
        }
    }
}
