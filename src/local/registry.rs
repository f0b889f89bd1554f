//! The live connections of the emulator, and the in-process [`ConnectionGateway`]
//! over them (what `@connections` and the sweep talk to).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use axum::body::Bytes;
use tokio::sync::mpsc;

use crate::domain::{ConnectionId, Timestamp};
use crate::ports::{ConnectionGateway, GatewayConnection, GatewayError};

/// What a connection's task is asked to do from outside.
#[derive(Debug)]
pub enum Outbound {
    /// Send a frame (text when the bytes are UTF-8, else binary).
    Post(Bytes),
    /// Close with this status and reason, then record `$disconnect`.
    Close { code: u16, reason: String },
}

#[derive(Debug)]
pub struct LiveConnection {
    pub sender: mpsc::Sender<Outbound>,
    pub connected_at: Timestamp,
    pub last_active_at: AtomicI64,
    pub source_ip: String,
    pub user_agent: Option<String>,
}

/// The reason recorded when `DELETE @connections/{id}` closes a connection.
pub const DELETE_REASON: &str = "Server-side close: DeleteConnection";

#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<HashMap<String, std::sync::Arc<LiveConnection>>>,
}

impl Registry {
    pub fn insert(&self, connection_id: &str, connection: std::sync::Arc<LiveConnection>) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(connection_id.to_owned(), connection);
        }
    }

    pub fn remove(&self, connection_id: &str) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(connection_id);
        }
    }

    pub fn find(&self, connection_id: &str) -> Option<std::sync::Arc<LiveConnection>> {
        self.connections.lock().ok()?.get(connection_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.connections.lock().map(|connections| connections.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub async fn post(&self, connection_id: &str, data: Bytes) -> Result<(), GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        connection.sender.send(Outbound::Post(data)).await.map_err(|_| GatewayError::Gone)
    }

    pub fn info(&self, connection_id: &str) -> Result<GatewayConnection, GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        Ok(GatewayConnection {
            connected_at: Some(connection.connected_at),
            last_active_at: Some(Timestamp::from_epoch_millis(connection.last_active_at.load(Ordering::Relaxed))),
            source_ip: Some(connection.source_ip.clone()),
            user_agent: connection.user_agent.clone(),
        })
    }

    pub async fn close(&self, connection_id: &str, code: u16, reason: &str) -> Result<(), GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        connection
            .sender
            .send(Outbound::Close { code, reason: reason.to_owned() })
            .await
            .map_err(|_| GatewayError::Gone)
    }
}

#[async_trait]
impl ConnectionGateway for Registry {
    async fn post(&self, connection_id: &ConnectionId, data: &[u8]) -> Result<(), GatewayError> {
        Registry::post(self, connection_id.as_str(), Bytes::copy_from_slice(data)).await
    }

    async fn get(&self, connection_id: &ConnectionId) -> Result<GatewayConnection, GatewayError> {
        self.info(connection_id.as_str())
    }

    async fn delete(&self, connection_id: &ConnectionId) -> Result<(), GatewayError> {
        self.close(connection_id.as_str(), 1000, DELETE_REASON).await
    }
}
