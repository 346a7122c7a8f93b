//! `[log]`: where and how the process logs.

use serde::Deserialize;

/// `[log]`: where and how the process logs. Logs always go to standard error.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (colour only on a terminal) or `json` (one object per line).
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `debug`, `info,sqlx=warn`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info,sqlx=warn".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
