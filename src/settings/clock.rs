//! `[clock]`: where time comes from.

use serde::Deserialize;

/// `[clock]`: where time comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClockSettings {
    /// Shift the system clock by this signed duration (`"-240h"`, `"+73h"`).
    /// For drills and for tests that drive the real binary; `0s` in production.
    #[serde(with = "crate::duration_serde::signed_millis")]
    pub offset: i64,
}

impl ClockSettings {
    /// The clock every role of this process reads.
    pub fn build(&self) -> crate::clock::SharedClock {
        crate::clock::from_offset(self.offset)
    }
}
