//! An instant as the service keeps it: milliseconds since the Unix epoch, UTC.
//!
//! [`Millis`] is what the clock returns ([`crate::clock::Clock::now_ms`]), what
//! the store binds and reads (the same `INTEGER`/`BIGINT` column as a bare
//! `i64`), and what reaches JSON (the bare integer). Moving it by a
//! [`std::time::Duration`] saturates, so no configured duration can overflow.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant: milliseconds since the Unix epoch (UTC).
///
/// `Debug` and `Display` print the bare integer, as the `i64` it replaces did
/// (logs and messages read the same); serde reads and writes the bare integer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(i64);

/// The longest span [`Millis`] arithmetic adds or subtracts, in milliseconds:
/// `i64::MAX / 2` (about 146 million years). A longer duration (a setting such
/// as `lease = "1000000000 years"`, or `Duration::MAX`) counts as this long.
///
/// Half the range, not all of it, so that a real instant moved by any duration
/// stays far from `i64` overflow, and its distance to any real instant (or to
/// one moved the other way) still fits an `i64`: stored instants are compared
/// and subtracted again, in Rust and in SQL (where PostgreSQL's `BIGINT` fails
/// on overflow and SQLite's `INTEGER` turns into a float). It is the bound
/// leases and the confirmation grace always used.
pub const LONGEST_SPAN_MS: i64 = i64::MAX / 2;

/// `d` in whole milliseconds (sub-millisecond parts dropped), at most
/// [`LONGEST_SPAN_MS`]: the one conversion of a duration to stored time.
fn span_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(LONGEST_SPAN_MS, |ms| ms.min(LONGEST_SPAN_MS))
}

impl Millis {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: Millis = Millis(0);

    /// The instant `ms` milliseconds after the epoch (before it, if negative).
    pub const fn from_ms(ms: i64) -> Millis {
        Millis(ms)
    }

    /// Milliseconds since the epoch: the stored value.
    pub const fn as_ms(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch, rounded down (Stripe's timestamps).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// As a calendar time; an instant chrono cannot represent (beyond about
    /// 262,000 years from now) reads as the epoch.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }

    /// RFC 3339 to the second, UTC; `None` for an instant chrono cannot represent.
    pub fn rfc3339(self) -> Option<String> {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    }

    /// How long after `earlier` this is; zero if `earlier` is not earlier.
    pub fn since(self, earlier: Millis) -> Duration {
        u64::try_from(self.0.saturating_sub(earlier.0))
            .map_or(Duration::ZERO, Duration::from_millis)
    }
}

impl std::fmt::Debug for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl From<DateTime<Utc>> for Millis {
    fn from(t: DateTime<Utc>) -> Millis {
        Millis(t.timestamp_millis())
    }
}

impl From<Millis> for DateTime<Utc> {
    fn from(t: Millis) -> DateTime<Utc> {
        t.to_datetime()
    }
}

/// Later by `d` (see [`span_ms`]), saturating at `i64::MAX`.
impl Add<Duration> for Millis {
    type Output = Millis;

    fn add(self, d: Duration) -> Millis {
        Millis(self.0.saturating_add(span_ms(d)))
    }
}

/// Earlier by `d` (see [`span_ms`]), saturating at `i64::MIN`.
impl Sub<Duration> for Millis {
    type Output = Millis;

    fn sub(self, d: Duration) -> Millis {
        Millis(self.0.saturating_sub(span_ms(d)))
    }
}

/// Stored as the bare `i64` (`INTEGER` in SQLite, `BIGINT` in PostgreSQL).
mod sql {
    use super::Millis;
    use sqlx::any::{Any, AnyTypeInfo};
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::{Database, Decode, Encode, Type};

    impl Type<Any> for Millis {
        fn type_info() -> AnyTypeInfo {
            <i64 as Type<Any>>::type_info()
        }

        fn compatible(ty: &AnyTypeInfo) -> bool {
            <i64 as Type<Any>>::compatible(ty)
        }
    }

    impl<'q> Encode<'q, Any> for Millis {
        fn encode_by_ref(
            &self,
            buf: &mut <Any as Database>::ArgumentBuffer<'q>,
        ) -> Result<IsNull, BoxDynError> {
            <i64 as Encode<'q, Any>>::encode_by_ref(&self.0, buf)
        }
    }

    impl<'r> Decode<'r, Any> for Millis {
        fn decode(value: <Any as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
            <i64 as Decode<'r, Any>>::decode(value).map(Millis)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn adding_and_subtracting_durations_is_exact_in_range() {
        let t = Millis::from_ms(T);
        assert_eq!(
            t + Duration::from_secs(3600),
            Millis::from_ms(T + 3_600_000)
        );
        assert_eq!(t - Duration::from_millis(1), Millis::from_ms(T - 1));
        // Sub-millisecond parts are dropped, as `as_millis` does.
        assert_eq!(t + Duration::from_micros(1_999), Millis::from_ms(T + 1));
        assert_eq!((t + Duration::from_secs(1)).as_ms(), T + 1000);
    }

    #[test]
    fn long_spans_count_as_the_longest() {
        assert_eq!(span_ms(Duration::MAX), LONGEST_SPAN_MS);
        assert_eq!(span_ms(Duration::from_millis(u64::MAX)), LONGEST_SPAN_MS);
        assert_eq!(span_ms(Duration::from_millis(1_500)), 1_500);
        let t = Millis::from_ms(T);
        assert_eq!((t + Duration::MAX).as_ms(), T + LONGEST_SPAN_MS);
        assert_eq!((t - Duration::MAX).as_ms(), T - LONGEST_SPAN_MS);
        // Its distance to a real instant, or to one moved the other way, fits.
        let far = (t + Duration::MAX).as_ms();
        assert!(far.checked_sub(-T).is_some());
        assert!(far.checked_sub((t - Duration::MAX).as_ms()).is_some());
    }

    #[test]
    fn arithmetic_saturates_at_both_ends() {
        let top = Millis::from_ms(i64::MAX - 5);
        assert_eq!(top + Duration::from_secs(1), Millis::from_ms(i64::MAX));
        assert_eq!(top + Duration::MAX, Millis::from_ms(i64::MAX));
        let bottom = Millis::from_ms(i64::MIN + 5);
        assert_eq!(bottom - Duration::from_secs(1), Millis::from_ms(i64::MIN));
        assert_eq!(bottom - Duration::MAX, Millis::from_ms(i64::MIN));
        assert_eq!(
            Millis::from_ms(i64::MAX).since(Millis::from_ms(i64::MIN)),
            Duration::from_millis(i64::MAX as u64)
        );
    }

    #[test]
    fn since_is_the_elapsed_time_or_zero() {
        let t = Millis::from_ms(T);
        let later = t + Duration::from_secs(90);
        assert_eq!(later.since(t), Duration::from_secs(90));
        assert_eq!(t.since(later), Duration::ZERO);
        assert_eq!(t.since(t), Duration::ZERO);
    }

    #[test]
    fn round_trips_through_datetime() {
        let dt = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.123Z")
            .expect("valid")
            .with_timezone(&Utc);
        let t = Millis::from(dt);
        assert_eq!(t.as_ms(), T + 123);
        assert_eq!(t.to_datetime(), dt);
        assert_eq!(DateTime::<Utc>::from(t), dt);
        let before_epoch = Millis::from_ms(-1_500);
        assert_eq!(Millis::from(before_epoch.to_datetime()), before_epoch);
        assert_eq!(before_epoch.as_secs(), -2);
        assert_eq!(Millis::from_ms(T + 999).as_secs(), T / 1000);
        // Beyond chrono's range: the epoch, never a panic.
        assert_eq!(
            Millis::from_ms(i64::MAX).to_datetime(),
            DateTime::<Utc>::UNIX_EPOCH
        );
        assert_eq!(Millis::EPOCH.to_datetime(), DateTime::<Utc>::UNIX_EPOCH);
    }

    #[test]
    fn ordered_as_the_integers() {
        let mut ts = [T, -1, 0, i64::MAX, i64::MIN, T - 1].map(Millis::from_ms);
        ts.sort();
        assert_eq!(ts.map(Millis::as_ms), [i64::MIN, -1, 0, T - 1, T, i64::MAX]);
        assert!(Millis::from_ms(T) < Millis::from_ms(T) + Duration::from_millis(1));
        assert_eq!(
            Millis::from_ms(3).max(Millis::from_ms(7)),
            Millis::from_ms(7)
        );
    }

    #[test]
    fn prints_and_serializes_as_the_bare_integer() {
        let t = Millis::from_ms(T);
        assert_eq!(format!("{t} {t:?}"), format!("{T} {T}"));
        assert_eq!(serde_json::to_string(&t).expect("json"), T.to_string());
        assert_eq!(
            serde_json::to_string(&Some(t)).expect("json"),
            T.to_string()
        );
        let back: Millis = serde_json::from_str(&T.to_string()).expect("json");
        assert_eq!(back, t);
    }
}
