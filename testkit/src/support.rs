//! What many tests share that is not about one part.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `attempt` until it gives `Some`, every 50 ms for at most `within`; panics
/// naming `what` if it never does. For state that a background task (the
/// projector, the stream poller) brings about.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
