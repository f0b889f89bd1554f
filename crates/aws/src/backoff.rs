//! Pauses between retries of work that is not a single SDK call (an SDK call
//! retries by itself, under `adapters::aws`): unprocessed batch items, a stream
//! round that failed, a projection that lost a race. Exponential from 50 ms, capped
//! at 5 s, with jitter, so retries neither spin nor march in step.

use std::time::Duration;

/// The pause before retry `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = 50u64.saturating_mul(1u64 << attempt.clamp(1, 10)).min(5_000) / 2;
    let jitter = (ulid::Ulid::generate().random() as u64) % (ceiling + 1);
    Duration::from_millis(ceiling / 2 + jitter)
}

/// Sleeps [`backoff`]`(attempt)`.
pub async fn pause(attempt: u32) {
    tokio::time::sleep(backoff(attempt)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        for attempt in 0..40 {
            let pause = backoff(attempt);
            assert!(pause <= Duration::from_millis(3_750), "{attempt}: {pause:?}");
        }
        assert!(backoff(1) <= Duration::from_millis(75));
        assert!(backoff(10) >= Duration::from_millis(1_250));
    }
}
