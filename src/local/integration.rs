//! How the routes reach their code, chosen once when `serve` starts: `serve`'s own
//! handler in-process, or with `--lambda` the template's functions as Lambda runs
//! them. The gateway asks the [`Integration`] and never which one it is.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use axum::http::{HeaderMap, StatusCode};

use super::gateway::apigw_event::{Api, ConnectionContext, MessageBody, new_id};
use super::lambda::routes::{LambdaRoutes, Refusal};
use crate::domain::{Timestamp, UserId};
use crate::handler::{ConnectionHandler, Response};
use crate::lambda::connection_handler::request_of;

#[async_trait]
pub trait Integration: Send + Sync {
    /// Who connects, when the integration has a `$connect` authorizer of its own;
    /// `None` leaves it to `serve --auth`. `Err` is the handshake's HTTP status.
    async fn authorize(
        &self,
        api: &Api,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Option<Result<UserId, StatusCode>>;

    /// `$connect` or `$disconnect`, as API Gateway's event.
    async fn route(&self, event: &ApiGatewayWebsocketProxyRequest) -> Response;

    /// One message frame of a connection.
    async fn message(&self, context: &ConnectionContext, body: MessageBody, at: Timestamp) -> Response;
}

/// `serve`'s own handler, in this process.
pub struct InProcess(pub ConnectionHandler);

#[async_trait]
impl Integration for InProcess {
    async fn authorize(
        &self,
        _: &Api,
        _: &HeaderMap,
        _: &HashMap<String, String>,
    ) -> Option<Result<UserId, StatusCode>> {
        None
    }

    async fn route(&self, event: &ApiGatewayWebsocketProxyRequest) -> Response {
        match request_of(event, &new_id()) {
            Ok((meta, route)) => self.0.handle(&meta, route).await,
            Err(error) => {
                tracing::error!(%error, "the emulator built an invalid event");
                Response { status: 500, body: None }
            }
        }
    }

    /// Every message goes to the one handler, as the template's only route,
    /// `$default`, sends it; the request is built directly, not through the event.
    async fn message(&self, context: &ConnectionContext, body: MessageBody, at: Timestamp) -> Response {
        let (meta, route) = context.message_request(body, new_id(), at);
        self.0.handle(&meta, route).await
    }
}

/// The template's functions (`serve --lambda`).
pub struct Functions(pub Arc<LambdaRoutes>);

#[async_trait]
impl Integration for Functions {
    async fn authorize(
        &self,
        api: &Api,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Option<Result<UserId, StatusCode>> {
        self.0.connect_authorizer()?;
        let lowered: HashMap<String, String> = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect();
        let context = serde_json::json!({
            "routeKey": "$connect",
            "eventType": "CONNECT",
            "stage": api.stage,
            "apiId": api.api_id,
            "domainName": api.domain_name,
        });
        Some(match self.0.authorize(&lowered, query, context).await {
            Ok(user_id) => Ok(user_id),
            Err(Refusal::MissingIdentity) => Err(StatusCode::UNAUTHORIZED),
            Err(Refusal::Denied) => Err(StatusCode::FORBIDDEN),
            Err(Refusal::Failed) => Err(StatusCode::INTERNAL_SERVER_ERROR),
        })
    }

    async fn route(&self, event: &ApiGatewayWebsocketProxyRequest) -> Response {
        self.0.handle(event).await
    }

    /// The function of the route the selection expression picks, given API
    /// Gateway's event.
    async fn message(&self, context: &ConnectionContext, body: MessageBody, at: Timestamp) -> Response {
        let (text, is_base64) = body.event_body();
        let route_key =
            self.0.route_selection().map_or_else(|| "$default".to_owned(), |selection| selection.route_of(&text));
        let event = context.message(&route_key, &text, is_base64, &new_id(), &new_id(), at);
        self.0.handle(&event).await
    }
}
