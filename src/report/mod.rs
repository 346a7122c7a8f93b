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

use chrono::{DateTime, SecondsFormat, Utc};

pub fn fmt_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
