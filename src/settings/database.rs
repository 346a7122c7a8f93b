//! `[database]`: where outcome-meter stores everything.

use serde::Deserialize;
use std::time::Duration;

/// `[database]`: where outcome-meter stores everything.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (embedded default) or `postgres://…`.
    pub url: String,
    /// A file holding the URL instead (it carries the password).
    pub url_file: Option<String>,
    pub max_connections: u32,
    /// Raw delivery bodies older than this are pruned once processed.
    #[serde(with = "crate::duration_serde")]
    pub delivery_retention: Duration,
    /// The longest a request waits for storage (a webhook's commit, `/readyz`,
    /// `/metrics`) before it is answered 503.
    #[serde(with = "crate::duration_serde")]
    pub request_timeout: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &crate::redact::url(&self.url))
            .field("url_file", &self.url_file)
            .field("max_connections", &self.max_connections)
            .field("delivery_retention", &self.delivery_retention)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/outcome-meter.db".into(),
            url_file: None,
            max_connections: 8,
            delivery_retention: Duration::from_secs(30 * 24 * 3600),
            request_timeout: Duration::from_secs(2),
        }
    }
}

impl DatabaseSettings {
    /// What is wrong with `[database]`.
    pub(super) fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if !(self.url.starts_with("sqlite:") || self.url.starts_with("postgres")) {
            errs.push(format!(
                "database.url must start with sqlite:// or postgres://, got `{}`",
                crate::redact::url(&self.url)
            ));
        }
        if self.request_timeout.is_zero() {
            errs.push("database.request_timeout must be positive".into());
        }
        errs
    }
}
