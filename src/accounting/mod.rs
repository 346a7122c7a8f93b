//! What finance, support and customers read: `explain` and `outcomes`.

pub mod clause;
pub mod diff;
pub mod explain;
pub mod ledger;
pub mod outcomes;
pub mod period;
pub mod reconcile;
pub mod reconcile_metronome;
pub mod reconcile_usage_records;
pub mod sink_words;
pub mod statement;
pub mod vocabulary;
pub mod words;

use crate::time::Millis;

/// RFC 3339 to the second, UTC; an instant chrono cannot represent as its number.
pub fn fmt_ms(t: Millis) -> String {
    t.rfc3339().unwrap_or_else(|| t.to_string())
}
