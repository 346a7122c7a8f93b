//! `[metronome]`: how to reach Metronome, and what its billable metrics are.
//! Per tenant, `metronome_customer_id` (on [`crate::settings::TenantSettings`])
//! names the Metronome customer (its id or one of its ingest aliases).

use crate::settings::{Settings, TenantSettings};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The default ingest rate limit is 5,000 events per second per account ("Default
/// ingest rate limit starts at 5,000 events per second",
/// <https://docs.metronome.com/guides/events/high-volume-ingestion>), shared by every
/// sender of the account (a 429 with `X-Metronome-Rate-Limit-Type: client`). A
/// request carries at most 100 events, so 50 full requests a second reach it;
/// the default keeps to 80% of that, room for the account's other senders.
pub const DEFAULT_RATE_PER_SECOND: f64 = 40.0;

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetronomeSettings {
    /// `https://api.metronome.com`; a local fake in tests.
    pub api_base: String,
    /// Bearer token (<https://docs.metronome.com/api-reference/authentication>).
    pub api_token: String,
    /// A file holding the token instead (Docker/Kubernetes secrets).
    pub api_token_file: Option<String>,
    /// One call's limit; shorter than `worker.lease` (a claim must outlast its call).
    #[serde(with = "crate::duration_serde")]
    pub timeout: Duration,
    /// Ingest requests per second, per process (each up to 100 events).
    pub rate_per_second: f64,
    /// Billable metric id (a UUID) of each event type, for `reconcile`
    /// (`POST /v1/usage` asks by billable metric, not by event type).
    pub billable_metric_ids: BTreeMap<String, String>,
    /// How each billable metric (by event type) aggregates, as defined in
    /// Metronome; `sum` when not listed. Only a `sum` metric takes a correcting event.
    pub metric_aggregations: BTreeMap<String, MetricAggregation>,
    /// Which Metronome environment the token reaches: Metronome's answers do not
    /// say, and its tokens look alike, so it is declared and must match
    /// `stripe.mode` (production with `live`, sandbox with `test`) before a
    /// process that sends may bill a tenant on Metronome.
    pub environment: Option<MetronomeEnvironment>,
}

/// A Metronome environment (<https://docs.metronome.com/guides/get-started/sandbox>:
/// a sandbox is a separate environment with its own API tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetronomeEnvironment {
    Production,
    Sandbox,
}

impl MetronomeEnvironment {
    /// The Stripe mode outcomes sent to this environment are recorded in.
    pub fn mode(self) -> crate::stripe::mode::StripeMode {
        match self {
            MetronomeEnvironment::Production => crate::stripe::mode::StripeMode::Live,
            MetronomeEnvironment::Sandbox => crate::stripe::mode::StripeMode::Test,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetronomeEnvironment::Production => "production",
            MetronomeEnvironment::Sandbox => "sandbox",
        }
    }
}

impl Default for MetronomeSettings {
    fn default() -> Self {
        Self {
            api_base: "https://api.metronome.com".into(),
            api_token: String::new(),
            api_token_file: None,
            timeout: Duration::from_secs(20),
            rate_per_second: DEFAULT_RATE_PER_SECOND,
            billable_metric_ids: BTreeMap::new(),
            metric_aggregations: BTreeMap::new(),
            environment: None,
        }
    }
}

impl std::fmt::Debug for MetronomeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetronomeSettings")
            .field("api_base", &self.api_base)
            .field(
                "api_token",
                &if self.api_token.trim().is_empty() {
                    "(none)"
                } else {
                    "(redacted)"
                },
            )
            .field("api_token_file", &self.api_token_file)
            .field("timeout", &self.timeout)
            .field("rate_per_second", &self.rate_per_second)
            .field("billable_metric_ids", &self.billable_metric_ids)
            .field("metric_aggregations", &self.metric_aggregations)
            .field("environment", &self.environment)
            .finish()
    }
}

/// A Metronome billable metric's aggregation
/// (<https://docs.metronome.com/guides/implement-metronome/core-concepts/create-billable-metrics>:
/// streaming metrics `COUNT`, `SUM`, `MAX`, `LATEST`; SQL metrics can also count
/// distinct values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricAggregation {
    /// Sum of a property: a negative correcting event subtracts.
    #[default]
    Sum,
    /// Number of events: a correcting event would be one more.
    Count,
    /// Largest value: a negative event changes nothing.
    Max,
    /// Most recent value: a correcting event would replace it.
    Latest,
    /// Distinct values: a correcting event would add one.
    Unique,
}

impl MetricAggregation {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricAggregation::Sum => "sum",
            MetricAggregation::Count => "count",
            MetricAggregation::Max => "max",
            MetricAggregation::Latest => "latest",
            MetricAggregation::Unique => "unique",
        }
    }
}

impl std::fmt::Display for MetricAggregation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MetronomeSettings {
    /// The aggregation of the billable metric of `event_type` (`sum` unless configured).
    pub fn aggregation(&self, event_type: &str) -> MetricAggregation {
        self.metric_aggregations
            .get(event_type)
            .copied()
            .unwrap_or_default()
    }

    /// Why this configuration cannot send to Metronome, if it can't (for the
    /// sink's start-up check: the token is only needed where Metronome is used).
    pub fn token_problem(&self) -> Option<String> {
        self.api_token.trim().is_empty().then(|| {
            "metronome.api_token (or metronome.api_token_file) is required to send to Metronome"
                .to_string()
        })
    }

    /// Read `api_token_file` into `api_token` (called by
    /// [`crate::secret_sources::resolve`]). Returns the problems found.
    pub fn resolve_token_file(&mut self) -> Vec<String> {
        let Some(path) = self.api_token_file.clone() else {
            return Vec::new();
        };
        let mut errs = Vec::new();
        if !self.api_token.is_empty() {
            errs.push(
                "metronome.api_token and metronome.api_token_file are both set: keep one".into(),
            );
        }
        match crate::secret_sources::read_file(&path) {
            Ok(token) if token.trim().is_empty() => {
                errs.push(format!("metronome.api_token_file `{path}` is empty"))
            }
            Ok(token) => self.api_token = token,
            Err(e) => errs.push(format!("metronome.api_token_file: {e}")),
        }
        errs
    }
}

/// What is wrong with `[metronome]` and the tenants' `metronome_customer_id`
/// (called by [`Settings::validate`]).
pub fn problems(s: &Settings) -> Vec<String> {
    let m = &s.metronome;
    let mut errs = Vec::new();
    if !m.api_base.starts_with("http://") && !m.api_base.starts_with("https://") {
        errs.push(format!(
            "metronome.api_base `{}` is not an http(s) URL",
            m.api_base
        ));
    }
    // The lease bound only matters where Metronome is used: a configuration
    // without it keeps its short lease (tests, drills) and the default timeout.
    let in_use = !m.api_token.trim().is_empty()
        || s.tenants.iter().any(|t| t.metronome_customer_id.is_some());
    if m.timeout.is_zero() || (in_use && m.timeout >= s.worker.lease) {
        errs.push(format!(
            "metronome.timeout ({}) must be longer than zero and shorter than worker.lease ({}): a reporter's claim must outlast its call",
            humantime::format_duration(m.timeout),
            humantime::format_duration(s.worker.lease)
        ));
    }
    if !(m.rate_per_second.is_finite() && m.rate_per_second > 0.0) {
        errs.push("metronome.rate_per_second must be a positive number".into());
    }
    for (event_type, id) in &m.billable_metric_ids {
        if id.trim().is_empty() {
            errs.push(format!(
                "metronome.billable_metric_ids: `{event_type}` has an empty id"
            ));
        }
    }
    for t in &s.tenants {
        errs.extend(tenant_problem(t));
        errs.extend(undeclared_aggregations(s, t));
    }
    errs
}

/// A tenant billed on Metronome with clawback reverses by a correcting event with
/// a negative value, which subtracts only on a SUM billable metric (on COUNT it
/// is one more event billed). Metronome's aggregation is not guessed: each event
/// type such a tenant can bill must be declared in `metronome.metric_aggregations`.
fn undeclared_aggregations(s: &Settings, t: &TenantSettings) -> Vec<String> {
    if t.sink != crate::sink::Sink::Metronome {
        return Vec::new();
    }
    let contract = s.contract_for(t);
    if contract.clawback.is_none() {
        return Vec::new();
    }
    contract
        .event_names()
        .into_iter()
        .filter(|e| !s.metronome.metric_aggregations.contains_key(e))
        .map(|e| {
            format!(
                "tenant `{}` bills `{e}` on Metronome with clawback: set metronome.metric_aggregations.{e} \
                 (sum, count, max or latest) to how its billable metric aggregates; a correcting event \
                 subtracts only on a sum metric",
                t.id
            )
        })
        .collect()
}

/// A tenant's `metronome_customer_id`, when set, must name someone: a customer
/// id or an ingest alias, non-empty and without surrounding spaces (Metronome
/// matches it exactly; <https://docs.metronome.com/guides/events/send-usage-events>).
fn tenant_problem(t: &TenantSettings) -> Option<String> {
    let id = t.metronome_customer_id.as_deref()?;
    (id.trim().is_empty() || id.trim() != id || id.chars().any(char::is_control)).then(|| {
        format!(
            "tenant `{}`: metronome_customer_id `{id}` must be a Metronome customer id or ingest alias \
             (non-empty, no surrounding spaces)",
            t.id
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{SettingsError, StripeMode};

    fn settings() -> Settings {
        let mut s = Settings {
            tenants: vec![TenantSettings::generic("acme", "cus_1", "inline-secret-1")],
            ..Default::default()
        };
        s.stripe.mode = Some(StripeMode::DryRun);
        s
    }

    #[test]
    fn defaults_are_valid() {
        let s = settings();
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        assert_eq!(s.metronome.api_base, "https://api.metronome.com");
        assert_eq!(s.metronome.rate_per_second, 40.0);
        assert!(s.metronome.token_problem().is_some());
        assert_eq!(s.metronome.aggregation("resolved"), MetricAggregation::Sum);
    }

    #[test]
    fn a_customer_id_must_name_someone_when_set() {
        let mut s = settings();
        s.tenants[0].metronome_customer_id = Some("d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc".into());
        assert!(s.validate().is_ok());
        s.tenants[0].metronome_customer_id = Some("team@example.com".into());
        assert!(s.validate().is_ok(), "an ingest alias is fine");
        for bad in ["", "  ", " acme"] {
            s.tenants[0].metronome_customer_id = Some(bad.into());
            let Err(SettingsError::Invalid(errs)) = s.validate() else {
                panic!("{bad:?} accepted");
            };
            assert!(
                errs.iter().any(|e| e.contains("metronome_customer_id")),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn bad_values_are_reported() {
        let mut s = settings();
        s.metronome.api_base = "api.metronome.com".into();
        s.metronome.rate_per_second = 0.0;
        s.metronome.timeout = s.worker.lease;
        assert!(s.validate().is_err(), "rate and base are checked anyway");
        s.metronome.api_base = "https://api.metronome.com".into();
        s.metronome.rate_per_second = 1.0;
        assert!(
            s.validate().is_ok(),
            "the lease bound applies only where Metronome is used"
        );
        s.metronome.api_base = "api.metronome.com".into();
        s.metronome.rate_per_second = 0.0;
        s.tenants[0].metronome_customer_id = Some("acme".into());
        let Err(SettingsError::Invalid(errs)) = s.validate() else {
            panic!("accepted");
        };
        let text = errs.join("\n");
        assert!(text.contains("metronome.api_base"), "{text}");
        assert!(text.contains("metronome.rate_per_second"), "{text}");
        assert!(text.contains("metronome.timeout"), "{text}");
    }

    #[test]
    fn a_metronome_tenant_with_clawback_declares_each_metric_aggregation() {
        let mut s = settings();
        s.tenants[0].sink = crate::sink::Sink::Metronome;
        s.tenants[0].metronome_customer_id = Some("acme-alias".into());
        assert!(s.validate().is_ok(), "no clawback: nothing to declare");
        s.contract.clawback = Some(Duration::from_secs(86_400));
        let errs = match s.validate() {
            Err(SettingsError::Invalid(errs)) => errs.join("\n"),
            other => panic!("expected problems, got {other:?}"),
        };
        assert!(
            errs.contains("metronome.metric_aggregations.resolved_ticket"),
            "{errs}"
        );
        s.metronome
            .metric_aggregations
            .insert("resolved_ticket".into(), MetricAggregation::Sum);
        assert!(s.validate().is_ok(), "{:?}", s.validate());
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let mut s = settings();
        s.metronome.api_token = "mtr_live_supersecret_token".into();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(dbg.contains("(redacted)"), "{dbg}");
    }

    #[test]
    fn the_token_can_come_from_a_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("metronome_token");
        std::fs::write(&path, "mtr_token_from_a_file\n").expect("write");
        let mut s = settings();
        s.metronome.api_token_file = Some(path.display().to_string());
        assert_eq!(crate::secret_sources::resolve(&mut s), Vec::<String>::new());
        assert_eq!(s.metronome.api_token, "mtr_token_from_a_file");
        // Both set, or an empty file: refused, naming the source, never the value.
        let errs = crate::secret_sources::resolve(&mut s).join("\n");
        assert!(errs.contains("both set"), "{errs}");
        std::fs::write(&path, "\n").expect("write");
        let mut s = settings();
        s.metronome.api_token_file = Some(path.display().to_string());
        let errs = crate::secret_sources::resolve(&mut s).join("\n");
        assert!(errs.contains("metronome.api_token_file"), "{errs}");
        assert!(errs.contains("is empty"), "{errs}");
    }

    #[test]
    fn aggregations_parse_and_reject_unknown_ones() {
        let parse = |toml: &str| {
            config::Config::builder()
                .add_source(config::File::from_str(toml, config::FileFormat::Toml))
                .build()
                .and_then(|c| c.try_deserialize::<Settings>())
        };
        let s = parse(
            "[metronome]\nrate_per_second = 10.0\n[metronome.metric_aggregations]\nescalation = \"count\"\n",
        )
        .expect("valid");
        assert_eq!(
            s.metronome.aggregation("escalation"),
            MetricAggregation::Count
        );
        assert_eq!(s.metronome.rate_per_second, 10.0);
        assert!(parse("[metronome.metric_aggregations]\nx = \"average\"\n").is_err());
        assert!(
            parse("[metronome]\napi_key = \"x\"\n").is_err(),
            "unknown keys are refused"
        );
    }
}
