//! The live connections of the emulator, and the in-process [`ConnectionGateway`]
//! over them (what `@connections` and the sweep talk to).
//!
//! Nothing here waits on a client: a post goes into the connection's bounded queue
//! or is refused at once (`LimitExceededException`, as API Gateway answers for a
//! client that cannot keep up), and a close is a signal of its own that never
//! queues behind posts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use tokio::sync::Notify;

use super::apigw_event::ConnectionContext;
use crate::domain::{ConnectionId, Timestamp};
use crate::ports::{ConnectionGateway, GatewayConnection, GatewayError};
use crate::sync::lock;

/// Why a connection's task was asked to close from outside.
#[derive(Debug)]
pub struct CloseRequest {
    pub code: u16,
    pub reason: String,
}

/// What the rest of the emulator sends one connection: posts (text when the bytes
/// are UTF-8, else binary), at most `capacity` waiting, and one close request, which
/// never waits behind posts. Nothing is allocated until something is sent (a
/// channel would allocate a block of slots per connection up front): an idle
/// connection's outbox is an empty queue and two [`Notify`]s.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    capacity: usize,
    posted: Notify,
    closing: Notify,
}

#[derive(Debug, Default)]
struct OutboxState {
    posts: VecDeque<Bytes>,
    close: Option<CloseRequest>,
    close_requested: bool,
    ended: bool,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self { state: Mutex::default(), capacity, posted: Notify::new(), closing: Notify::new() }
    }

    /// Queues `data`; never waits. A full queue (the client is not reading) is
    /// `Throttled`; an ended connection is `Gone`.
    pub fn post(&self, data: Bytes) -> Result<(), GatewayError> {
        let mut state = lock(&self.state);
        if state.ended {
            return Err(GatewayError::Gone);
        }
        if state.posts.len() >= self.capacity {
            return Err(GatewayError::Throttled(
                "the client is not reading fast enough; its outbound queue is full".into(),
            ));
        }
        state.posts.push_back(data);
        drop(state);
        self.posted.notify_one();
        Ok(())
    }

    /// Asks the connection to close; never waits. A second request while the first
    /// is under way succeeds (the connection is closing).
    pub fn close(&self, request: CloseRequest) -> Result<(), GatewayError> {
        let mut state = lock(&self.state);
        if state.ended {
            return Err(GatewayError::Gone);
        }
        if !state.close_requested {
            state.close_requested = true;
            state.close = Some(request);
            drop(state);
            self.closing.notify_one();
        }
        Ok(())
    }

    /// The next post, waiting for one.
    pub async fn next_post(&self) -> Bytes {
        loop {
            if let Some(data) = lock(&self.state).posts.pop_front() {
                return data;
            }
            self.posted.notified().await;
        }
    }

    /// The close request, waiting for it.
    pub async fn close_requested(&self) -> CloseRequest {
        loop {
            if let Some(request) = lock(&self.state).close.take() {
                return request;
            }
            self.closing.notified().await;
        }
    }

    /// The connection is over: later posts and closes are `Gone`, and what is
    /// still queued is dropped.
    pub fn end(&self) {
        let mut state = lock(&self.state);
        state.ended = true;
        state.posts = VecDeque::new();
    }
}

/// A connection as `@connections` sees it: its outbox, its last request, and what
/// its events share (who, from where, since when), shared with its task.
#[derive(Debug)]
pub struct LiveConnection {
    pub outbox: Outbox,
    pub last_active_at: AtomicI64,
    pub context: Arc<ConnectionContext>,
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
        self.find(connection_id).ok_or(GatewayError::Gone)?.outbox.post(data)
    }

    pub fn info(&self, connection_id: &str) -> Result<GatewayConnection, GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        Ok(GatewayConnection {
            connected_at: Some(connection.context.connected_at),
            last_active_at: Some(Timestamp::from_epoch_millis(connection.last_active_at.load(Ordering::Relaxed))),
            source_ip: Some(connection.context.source_ip.clone()),
            user_agent: connection.context.user_agent.clone(),
        })
    }

    /// Asks the connection's task to close; never waits. A second request while the
    /// first is under way succeeds (the connection is closing).
    pub fn close(&self, connection_id: &str, code: u16, reason: &str) -> Result<(), GatewayError> {
        let connection = self.find(connection_id).ok_or(GatewayError::Gone)?;
        connection.outbox.close(CloseRequest { code, reason: reason.to_owned() })
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

    fn live(queue: usize) -> Arc<LiveConnection> {
        let context = Arc::new(super::super::apigw_event::test_context(None));
        let connection = LiveConnection { outbox: Outbox::new(queue), last_active_at: AtomicI64::new(0), context };
        Arc::new(connection)
    }

    #[tokio::test]
    async fn a_full_queue_is_throttled_at_once_and_a_close_does_not_wait_behind_it() {
        let registry = Registry::default();
        let connection = live(2);
        registry.insert("c", connection.clone());
        assert!(registry.post("c", Bytes::from_static(b"1")).is_ok());
        assert!(registry.post("c", Bytes::from_static(b"2")).is_ok());
        assert!(matches!(registry.post("c", Bytes::from_static(b"3")), Err(GatewayError::Throttled(_))));
        registry.close("c", 1000, DELETE_REASON).unwrap();
        registry.close("c", 4000, DELETE_REASON).unwrap();
        assert_eq!(connection.outbox.close_requested().await.code, 1000, "the first request wins");
        assert_eq!(connection.outbox.next_post().await, Bytes::from_static(b"1"));
        assert_eq!(connection.outbox.next_post().await, Bytes::from_static(b"2"));
        connection.outbox.end();
        assert!(matches!(registry.post("c", Bytes::new()), Err(GatewayError::Gone)), "ended");
        assert!(matches!(registry.close("c", 1000, DELETE_REASON), Err(GatewayError::Gone)));
        assert!(matches!(registry.post("missing", Bytes::new()), Err(GatewayError::Gone)));
    }

    #[tokio::test]
    async fn a_post_wakes_a_waiting_connection() {
        let connection = live(4);
        let waiting = tokio::spawn({
            let connection = connection.clone();
            async move { connection.outbox.next_post().await }
        });
        tokio::task::yield_now().await;
        connection.outbox.post(Bytes::from_static(b"hello")).unwrap();
        let received = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(received, Bytes::from_static(b"hello"));
    }

    #[test]
    fn a_poisoned_registry_keeps_its_connections() {
        let registry = Arc::new(Registry::default());
        registry.insert("c", live(1));
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
