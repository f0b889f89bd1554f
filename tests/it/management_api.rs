//! A loopback HTTP server that plays API Gateway's Management API
//! (`POST/GET/DELETE /{stage}/@connections/{id}`): 410 `GoneException` for the
//! connections it was told are gone, 200 for the others.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

#[derive(Default)]
pub struct Calls {
    pub gone: HashSet<String>,
    pub posted: HashMap<String, Vec<Vec<u8>>>,
    pub gets: Vec<String>,
    pub deletes: Vec<String>,
    /// `lastActiveAt` answered by GET, RFC 3339.
    pub last_active_at: Option<String>,
}

pub struct ManagementApi {
    pub endpoint: String,
    pub calls: Arc<Mutex<Calls>>,
}

fn gone() -> Response {
    (StatusCode::GONE, [("x-amzn-ErrorType", "GoneException")], r#"{"message":null}"#).into_response()
}

async fn post_to(
    State(calls): State<Arc<Mutex<Calls>>>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let mut calls = calls.lock().unwrap();
    if calls.gone.contains(&id) {
        return gone();
    }
    calls.posted.entry(id).or_default().push(body.to_vec());
    StatusCode::OK.into_response()
}

async fn get_connection(State(calls): State<Arc<Mutex<Calls>>>, Path((_, id)): Path<(String, String)>) -> Response {
    let mut calls = calls.lock().unwrap();
    calls.gets.push(id.clone());
    if calls.gone.contains(&id) {
        return gone();
    }
    let last_active_at = calls.last_active_at.clone().unwrap_or_else(|| "2025-11-24T16:00:00.000Z".into());
    axum::Json(json!({
        "connectedAt": "2025-11-24T16:00:00.000Z",
        "identity": { "sourceIp": "203.0.113.7", "userAgent": "Mozilla/5.0" },
        "lastActiveAt": last_active_at,
    }))
    .into_response()
}

async fn delete_connection(State(calls): State<Arc<Mutex<Calls>>>, Path((_, id)): Path<(String, String)>) -> Response {
    let mut calls = calls.lock().unwrap();
    calls.deletes.push(id.clone());
    if !calls.gone.insert(id) {
        return gone();
    }
    StatusCode::NO_CONTENT.into_response()
}

impl ManagementApi {
    pub async fn start(gone: &[&str]) -> Self {
        let calls =
            Arc::new(Mutex::new(Calls { gone: gone.iter().map(|id| (*id).to_owned()).collect(), ..Calls::default() }));
        let app = Router::new()
            .route("/{stage}/@connections/{id}", post(post_to).get(get_connection).delete(delete_connection))
            .with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { endpoint: format!("http://{address}/prod"), calls }
    }

    /// A gateway on this server, with test credentials (the SDK signs every request).
    pub fn gateway(&self) -> wsledger::adapters::apigw::ManagementApiGateway {
        let config = aws_sdk_apigatewaymanagement::Config::builder()
            .behavior_version(aws_sdk_apigatewaymanagement::config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_sdk_apigatewaymanagement::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_apigatewaymanagement::config::Credentials::new("a", "b", None, None, "test"))
            .build();
        wsledger::adapters::apigw::ManagementApiGateway::from_client(aws_sdk_apigatewaymanagement::Client::from_conf(
            config,
        ))
    }
}
