//! The reporter's rate limit: calls spaced evenly across all its tasks.

use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces calls at least `1 / rate` seconds apart, across all tasks.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(rate_per_second: f64) -> Self {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / rate_per_second.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    pub(crate) async fn acquire(&self) {
        let (slot, now) = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            (slot, now)
        };
        // A slot that is already here is taken at once: the timer's millisecond
        // granularity would otherwise add up to a millisecond to every call.
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}
