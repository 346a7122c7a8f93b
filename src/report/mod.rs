//! What finance, support and customers read: `explain` and `outcomes`.

pub mod explain;
pub mod outcomes;

use chrono::{DateTime, SecondsFormat, Utc};

pub(crate) fn fmt_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}
