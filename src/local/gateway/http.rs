//! The emulator's HTTP server: an accept loop on hyper with every wait bounded.
//!
//! - headers must arrive within the header-read timeout, which hyper also applies
//!   while a keep-alive connection waits for its next request (slowloris, idle
//!   keep-alive);
//! - at most `max_connections` sockets (HTTP and WebSocket) are open at once; the
//!   next one gets a 503 and is closed, and refusals are logged once per second;
//! - on shutdown, accepting stops, every connection is asked to finish its
//!   response, and whatever is still open after the grace period is dropped.
//!
//! Each request carries its peer address ([`ConnectInfo`]), the local address the
//! client reached ([`LocalAddr`]) and a [`ResetOnClose`] switch that makes the
//! socket close with a reset instead of a FIN (for clients that stopped reading,
//! whose unread data would otherwise keep the connection alive in the kernel).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;

use crate::domain::Timestamp;
use crate::local::stopped;

/// The address the client connected to (the `Host` rule accepts it).
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// Set it, and the socket is reset (`SO_LINGER` 0) when it closes.
#[derive(Debug, Clone, Default)]
pub struct ResetOnClose(Arc<AtomicBool>);

impl ResetOnClose {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// How long open connections get to finish after shutdown begins.
    pub shutdown_grace: Duration,
}

/// Counters of the HTTP side.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub refused: AtomicU64,
    last_refusal_log_millis: AtomicI64,
    metrics: Arc<crate::metrics::Metrics>,
}

impl HttpStats {
    pub fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self { metrics, ..Self::default() }
    }

    /// Counts a refusal; logs at most once per second, with the count since.
    fn refuse(&self, reason: &str) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.add(crate::metrics::names::REFUSED_SOCKETS, 1);
        let now = Timestamp::now().epoch_millis();
        let last = self.last_refusal_log_millis.load(Ordering::Relaxed);
        if now - last >= 1_000
            && self.last_refusal_log_millis.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(refused_total = total, "refusing connections: {reason}");
        }
    }
}

/// A socket that holds one connection permit for as long as it is open (through
/// the WebSocket upgrade too, which keeps the IO).
struct CountedStream {
    stream: TcpStream,
    reset: ResetOnClose,
    _permit: OwnedSemaphorePermit,
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        if self.reset.0.load(Ordering::Relaxed) {
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 39\r\n\
retry-after: 1\r\nconnection: close\r\n\r\nwsledger serve: too many connections.\r\n";

/// Answers 503 and closes, within a second whatever the client does.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(REFUSAL).await?;
        stream.shutdown().await
    })
    .await;
}

/// Serves `app` on `listener` until `shutdown` turns true, then gives open
/// connections `shutdown_grace` to finish and drops the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let mut connections = JoinSet::new();
    let stop = stopped(shutdown.clone());
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    stats.refuse(&format!("accept failed: {error}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = &mut stop => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.refuse(&format!("--max-connections {} reached", limits.max_connections));
            connections.spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let reset = ResetOnClose::default();
        let io = TokioIo::new(CountedStream { stream, reset: reset.clone(), _permit: permit });
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            if let Some(local) = local {
                extensions.insert(LocalAddr(local));
            }
            extensions.insert(reset.clone());
            app.clone().call(request)
        });
        let connection = builder.serve_connection(io, service).with_upgrades();
        let connection_stop = stopped(shutdown.clone());
        let grace = limits.shutdown_grace;
        connections.spawn(async move {
            tokio::pin!(connection, connection_stop);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = &mut connection_stop => connection.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(grace, connection).await;
        });
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace + Duration::from_millis(200), drained).await.is_err() {
        connections.abort_all();
    }
}
