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

/// The path of one of `wsledger-aws`'s Lambda bootstraps (`connection-handler`,
/// `authorizer`, `projector`) as cargo built it for this test run: beside the
/// `wsledger` binary in the target directory. They are another package's binaries,
/// so cargo gives the tests no `CARGO_BIN_EXE_` for them; `scripts/test` builds
/// them first (`cargo build -p wsledger-aws --bins`).
pub fn bootstrap_bin(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/{profile}/deps/it-HASH -> target/{profile}/
    let profile_dir = exe.parent().and_then(std::path::Path::parent).expect("a target directory");
    let path = profile_dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the bootstraps first with `cargo build -p wsledger-aws --bins` (scripts/test does)",
        path.display()
    );
    path.display().to_string()
}
