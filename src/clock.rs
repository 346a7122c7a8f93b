//! The only source of time. Production uses [`SystemClock`]; tests use
//! [`ManualClock`] and move it forward instead of sleeping.

use crate::time::Millis;
use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// [`Clock::now`] in milliseconds since the epoch, as time is stored.
    fn now_ms(&self) -> Millis {
        Millis::from(self.now())
    }

    /// The time the outside world keeps (Stripe checks event timestamps against
    /// it). The same as [`Clock::now`] unless `clock.offset` shifts this process
    /// for a drill: then `now` is shifted and this is not.
    fn world_now(&self) -> DateTime<Utc> {
        self.now()
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock shifted by a fixed offset (`clock.offset` over the system clock): for
/// drills and for tests that drive the real binary, where time must pass days in
/// seconds. It still runs forward at the real rate, so leases and backoffs
/// elapse; [`Clock::world_now`] stays the unshifted time.
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock<C = SystemClock> {
    inner: C,
    offset: Duration,
}

impl OffsetClock {
    pub fn new(offset_ms: i64) -> Self {
        Self::over(SystemClock, Duration::milliseconds(offset_ms))
    }
}

impl<C: Clock> OffsetClock<C> {
    /// `inner` shifted by `offset` (tests shift a [`ManualClock`]).
    pub fn over(inner: C, offset: Duration) -> Self {
        Self { inner, offset }
    }
}

impl<C: Clock> Clock for OffsetClock<C> {
    fn now(&self) -> DateTime<Utc> {
        self.inner.now() + self.offset
    }

    fn world_now(&self) -> DateTime<Utc> {
        self.inner.world_now()
    }
}

/// The process clock for a configured offset (0: the plain system clock).
pub fn from_offset(offset_ms: i64) -> SharedClock {
    if offset_ms == 0 {
        Arc::new(SystemClock)
    } else {
        Arc::new(OffsetClock::new(offset_ms))
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = Millis::from_ms(1_700_000_000_000).to_datetime();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::hours(73));
        assert_eq!(clock.now(), start + Duration::hours(73));
        assert_eq!(
            clock.now_ms(),
            Millis::from_ms(1_700_000_000_000 + 73 * 3_600_000)
        );
    }

    #[test]
    fn an_offset_shifts_now_but_not_the_world() {
        let start = Millis::from_ms(1_700_000_000_000).to_datetime();
        let manual = ManualClock::new(start);
        let shifted = OffsetClock::over(manual.clone(), Duration::hours(73));
        assert_eq!(shifted.now(), start + Duration::hours(73));
        assert_eq!(shifted.world_now(), start);
        manual.advance(Duration::hours(1));
        assert_eq!(shifted.world_now(), start + Duration::hours(1));
    }

    #[test]
    fn offset_clock_is_shifted_system_time() {
        let before = Utc::now();
        let shifted = from_offset(-3_600_000).now();
        let after = Utc::now();
        assert!(shifted >= before - Duration::hours(1) && shifted <= after - Duration::hours(1));
    }
}
