//! The live connections of the emulator, and the in-process [`ConnectionGateway`]
//! over them (what `@connections` and the sweep talk to).
//!
//! Nothing here waits on a client: a post goes into the connection's bounded queue
//! or is refused at once (`LimitExceededException`, as API Gateway answers for a
//! client that cannot keep up), and a close is a signal of its own that never
//! queues behind posts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{ConnectionId, Timestamp};
use crate::ports::{ConnectionGateway, GatewayConnection, GatewayError};
use crate::sync::lock;

/// Why a connection's task was asked to close from outside.
#[derive(Debug)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

#[derive(Debug)]
pub struct LiveConnection {
    /// Posts (text when the bytes are UTF-8, else binary), bounded.
    pub posts: mpsc::Sender<Bytes>,
    /// Taken by the first close request.
    pub close: Mutex<Option<oneshot::Sender<CloseRequest>>>,
    pub connected_at: Timestamp,
    pub last_active_at: AtomicI64,
    pub source_ip: String,
    pub user_agent: Option<String>,
}

/// The reason recorded when `DELETE @connections/{id}` closes a connection.
pub const DELETE_REASON: &str = "Server-side close: DeleteConnection";

#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<HashMap<String, Arc<LiveConnection>>>,
}

impl Registry {
    pub fn insert(&self, connection_id: &str, connection: Arc<LiveConnection>) {
        lock(&self.connections).insert(connection_id.to_owned(), connection);
    }

    pub fn remove(&self, connection_id: &str) {
        lock(&self.connections).remove(connection_id);
    }

    pub fn find(&self, connection_id: &str) -> Option<Arc<LiveConnection>> {
        lock(&self.connections).get(connection_id).cloned()
    }

    pub fn len(&self) -> usize {
        lock(&self.connections).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `data` for the connection; never waits. A full queue (the client is
    /// not reading) is `Throttled`.
    pub fn post(&self, connection_id: &str, data: Bytes) -> Result<(), GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        connection.posts.try_send(data).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => {
                GatewayError::Throttled("the client is not reading fast enough; its outbound queue is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => GatewayError::Gone,
        })
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

    /// Asks the connection's task to close; never waits. A second request while the
    /// first is under way succeeds (the connection is closing).
    pub fn close(&self, connection_id: &str, code: u16, reason: &str) -> Result<(), GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        let Some(close) = lock(&connection.close).take() else { return Ok(()) };
        close.send(CloseRequest { code, reason: reason.to_owned() }).map_err(|_| GatewayError::Gone)
    }
}

#[async_trait]
impl ConnectionGateway for Registry {
    async fn post(&self, connection_id: &ConnectionId, data: &[u8]) -> Result<(), GatewayError> {
        Registry::post(self, connection_id.as_str(), Bytes::copy_from_slice(data))
    }

    async fn get(&self, connection_id: &ConnectionId) -> Result<GatewayConnection, GatewayError> {
        self.info(connection_id.as_str())
    }

    async fn delete(&self, connection_id: &ConnectionId) -> Result<(), GatewayError> {
        self.close(connection_id.as_str(), 1000, DELETE_REASON)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(queue: usize) -> (Arc<LiveConnection>, mpsc::Receiver<Bytes>, oneshot::Receiver<CloseRequest>) {
        let (posts, outbound) = mpsc::channel(queue);
        let (close, closing) = oneshot::channel();
        let connection = LiveConnection {
            posts,
            close: Mutex::new(Some(close)),
            connected_at: Timestamp::from_epoch_millis(0),
            last_active_at: AtomicI64::new(0),
            source_ip: "127.0.0.1".into(),
            user_agent: None,
        };
        (Arc::new(connection), outbound, closing)
    }

    #[test]
    fn a_full_queue_is_throttled_at_once_and_a_close_does_not_wait_behind_it() {
        let registry = Registry::default();
        let (connection, _outbound, mut closing) = live(2);
        registry.insert("c", connection);
        assert!(registry.post("c", Bytes::from_static(b"1")).is_ok());
        assert!(registry.post("c", Bytes::from_static(b"2")).is_ok());
        assert!(matches!(registry.post("c", Bytes::from_static(b"3")), Err(GatewayError::Throttled(_))));
        registry.close("c", 1000, DELETE_REASON).unwrap();
        registry.close("c", 1000, DELETE_REASON).unwrap();
        assert_eq!(closing.try_recv().unwrap().code, 1000);
        assert!(matches!(registry.post("missing", Bytes::new()), Err(GatewayError::Gone)));
    }

    #[test]
    fn a_poisoned_registry_keeps_its_connections() {
        let registry = Arc::new(Registry::default());
        let (connection, _outbound, _closing) = live(1);
        registry.insert("c", connection);
        let poisoner = registry.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.connections.lock().unwrap();
            panic!("a panic while holding the registry");
        })
        .join();
        assert!(registry.connections.is_poisoned());
        assert!(registry.info("c").is_ok(), "the connection is still live, not gone");
        registry.remove("c");
        assert!(registry.is_empty());
    }
}
