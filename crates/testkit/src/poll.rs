//! Waiting for a condition in tests and benchmarks that drive a real process:
//! poll, with a deadline, instead of sleeping for a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `done` every `every` until it is true; panic after `limit` naming `what`.
pub async fn until<F, Fut>(what: &str, limit: Duration, every: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}
