//! Refused webhook requests, logged as periodic summaries: a flood of badly
//! signed requests must not write a log line each (it once cost a quarter of
//! the receiver's throughput in log volume). Each refusal is counted here and
//! logged at `debug`; once a minute one `warn` line gives the counts by reason
//! and by helpdesk/tenant. `/metrics` counts every one as well.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// How often the summary is written.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Distinct helpdesk/tenant pairs kept per reason in one summary; the rest are
/// counted together. The path's segments are untrusted: a client spraying
/// random tenants must not grow the map.
const MAX_SOURCES: usize = 20;

#[derive(Debug, Default)]
struct Window {
    /// reason → (source → count)
    by_reason: BTreeMap<&'static str, BTreeMap<String, u64>>,
    /// reason → refusals from sources past `MAX_SOURCES`
    others: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Refusals {
    window: Mutex<Window>,
}

impl Refusals {
    /// Count one refusal (logged at debug only).
    pub fn record(&self, reason: &'static str, provider: &str, tenant: &str) {
        // `?` escapes control characters: an untrusted path cannot forge a line.
        tracing::debug!(provider = ?provider, tenant = ?tenant, code = reason, "webhook refused");
        let mut w = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sources = w.by_reason.entry(reason).or_default();
        let source = format!("{provider:?}/{tenant:?}");
        if let Some(n) = sources.get_mut(&source) {
            *n += 1;
        } else if sources.len() < MAX_SOURCES {
            sources.insert(source, 1);
        } else {
            *w.others.entry(reason).or_default() += 1;
        }
    }

    /// The summary of everything counted since the last call, and start a new
    /// window; `None` when nothing was refused.
    pub fn take_summary(&self) -> Option<String> {
        let w = std::mem::take(
            &mut *self
                .window
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        if w.by_reason.is_empty() {
            return None;
        }
        let parts: Vec<String> = w
            .by_reason
            .iter()
            .map(|(reason, sources)| {
                let others = w.others.get(reason).copied().unwrap_or(0);
                let total: u64 = sources.values().sum::<u64>() + others;
                let mut top: Vec<(&String, &u64)> = sources.iter().collect();
                top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let mut detail: Vec<String> = top
                    .iter()
                    .take(5)
                    .map(|(s, n)| format!("{s} {n}"))
                    .collect();
                let rest = total - top.iter().take(5).map(|(_, n)| **n).sum::<u64>();
                if rest > 0 {
                    detail.push(format!("others {rest}"));
                }
                format!("{reason} {total} ({})", detail.join(", "))
            })
            .collect();
        Some(parts.join("; "))
    }

    /// Write the summary, if there is one.
    pub fn log_summary(&self) {
        if let Some(summary) = self.take_summary() {
            tracing::warn!(%summary, "webhooks refused in the last interval (by reason: count (helpdesk/tenant count)); details at debug level");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_source_then_starts_again() {
        let r = Refusals::default();
        for _ in 0..3 {
            r.record("bad_signature", "zendesk", "acme");
        }
        r.record("bad_signature", "intercom", "acme");
        r.record("unknown_tenant", "zendesk", "nobody");
        let s = r.take_summary().expect("a summary");
        assert!(
            s.contains("bad_signature 4 (\"zendesk\"/\"acme\" 3, \"intercom\"/\"acme\" 1)"),
            "{s}"
        );
        assert!(s.contains("unknown_tenant 1"), "{s}");
        assert_eq!(r.take_summary(), None, "a new window");
    }

    #[test]
    fn a_spray_of_tenants_stays_bounded() {
        let r = Refusals::default();
        for i in 0..10_000 {
            r.record("unknown_tenant", "generic", &format!("t{i}"));
        }
        let s = r.take_summary().expect("a summary");
        assert!(s.starts_with("unknown_tenant 10000 ("), "{s}");
        assert!(s.contains("others 9995"), "{s}");
        assert!(s.len() < 400, "{s}");
    }

    #[test]
    fn control_characters_in_the_path_are_escaped() {
        let r = Refusals::default();
        r.record("unknown_tenant", "generic", "x\nINFO forged line");
        let s = r.take_summary().expect("a summary");
        assert!(!s.contains('\n'), "{s}");
    }
}
