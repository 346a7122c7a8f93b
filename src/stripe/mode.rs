//! Which Stripe the reporter talks to: `live`, `test`, or nobody (`dry-run`).
//! Always explicit (`stripe.mode`): a lost key must stop the service, never turn
//! billing into a dry-run, and a key of the other kind must never be used.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum StripeMode {
    /// Real money: a `sk_live_`/`rk_live_` key.
    #[serde(rename = "live")]
    Live,
    /// Stripe's test mode or a sandbox: a `sk_test_`/`rk_test_` key.
    #[serde(rename = "test")]
    Test,
    /// Send nothing: record what would be sent. No key.
    #[serde(rename = "dry-run")]
    DryRun,
}

/// The kind of a Stripe secret or restricted key, from its prefix
/// (<https://docs.stripe.com/keys#obtain-api-keys>: `sk_live_`, `sk_test_`,
/// `rk_live_`, `rk_test_`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Live,
    Test,
    /// Neither: a publishable key, a typo, or something else.
    Unknown,
}

pub fn key_kind(key: &str) -> KeyKind {
    let key = key.trim();
    if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
        KeyKind::Live
    } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
        KeyKind::Test
    } else {
        KeyKind::Unknown
    }
}

impl StripeMode {
    /// As stored in `outcomes.reported_mode` and `stripe_attempts.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            StripeMode::Live => "live",
            StripeMode::Test => "test",
            StripeMode::DryRun => "dry_run",
        }
    }

    /// Read back what [`StripeMode::as_str`] stored.
    pub fn parse(stored: &str) -> Option<StripeMode> {
        match stored {
            "live" => Some(StripeMode::Live),
            "test" => Some(StripeMode::Test),
            "dry_run" => Some(StripeMode::DryRun),
            _ => None,
        }
    }

    /// Read back `outcomes.reported_mode`: a value this build does not know is
    /// an error naming it, never taken as some mode (or as none recorded).
    pub fn from_stored(stored: &str) -> Result<StripeMode, crate::lifecycle::UnknownValue> {
        StripeMode::parse(stored).ok_or_else(|| crate::lifecycle::UnknownValue {
            column: "outcomes.reported_mode",
            value: stored.to_string(),
            known: &["live", "test", "dry_run"],
            row: None,
        })
    }

    /// As written in the configuration.
    pub fn config_name(self) -> &'static str {
        match self {
            StripeMode::Live => "live",
            StripeMode::Test => "test",
            StripeMode::DryRun => "dry-run",
        }
    }

    pub fn sends(self) -> bool {
        self != StripeMode::DryRun
    }

    /// The mode Stripe says a call was made in (`livemode` of its answer).
    pub fn from_livemode(livemode: bool) -> StripeMode {
        if livemode {
            StripeMode::Live
        } else {
            StripeMode::Test
        }
    }

    /// Calls per second the reporter makes when `reporter.rate_per_second` is
    /// not set. Live: Stripe's meter-event endpoint has its own limit of 1,000
    /// calls per second per account, apart from the basic limit
    /// (<https://docs.stripe.com/rate-limits>,
    /// <https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-api>);
    /// 800 leaves room for a second process and for retries. Test mode and
    /// sandboxes: meter events count toward the basic limit of 25 operations per
    /// second, shared with everything else the account does, so 20. Dry-run
    /// calls nobody.
    pub fn default_rate_per_second(self) -> f64 {
        match self {
            StripeMode::Live => 800.0,
            StripeMode::Test => 20.0,
            StripeMode::DryRun => 10_000.0,
        }
    }

    /// [`StripeMode::default_rate_per_second`] on the v2 meter event stream
    /// (`stripe.meter_event_api = "v2_stream"`), where a call carries up to 100
    /// events. Live: the stream takes 10,000 events per second (read as events,
    /// the stricter of Stripe's two wordings), so 90 calls of 100 leave room for a
    /// second process and for retries. Sandboxes: stream calls count toward the
    /// basic limit of 25 operations per second, which v1's calls (connected
    /// accounts, reversals) share at 20: so 5 (500 events per second).
    pub fn default_stream_rate_per_second(self) -> f64 {
        match self {
            StripeMode::Live => 90.0,
            StripeMode::Test => 5.0,
            StripeMode::DryRun => 10_000.0,
        }
    }
}

impl std::fmt::Display for StripeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.config_name())
    }
}

/// What is wrong with this mode and key together, if anything. `needs_key`:
/// the command calls Stripe (`serve` with a reporter, `reconcile`, `check
/// --stripe`); commands that only read the database run without a key.
pub fn key_problem(mode: StripeMode, key: &str, needs_key: bool) -> Option<String> {
    let key = key.trim();
    let kind = key_kind(key);
    match mode {
        StripeMode::DryRun if !key.is_empty() => Some(
            "stripe.mode is \"dry-run\" but a Stripe key is set (stripe.api_key, STRIPE_API_KEY or \
             stripe.api_key_file): nothing would be sent with it. Set stripe.mode to \"live\" or \
             \"test\", or remove the key"
                .into(),
        ),
        StripeMode::DryRun => None,
        StripeMode::Live | StripeMode::Test if key.is_empty() => needs_key.then(|| {
            format!(
                "stripe.mode is \"{mode}\" but no Stripe key is set: set STRIPE_API_KEY (or \
                 stripe.api_key_file). outcome-meter will not fall back to a dry-run"
            )
        }),
        StripeMode::Live if kind != KeyKind::Live => Some(format!(
            "stripe.mode is \"live\" but the Stripe key is {}: a live mode needs an sk_live_ or \
             rk_live_ key",
            describe(kind)
        )),
        StripeMode::Test if kind != KeyKind::Test => Some(format!(
            "stripe.mode is \"test\" but the Stripe key is {}: test mode needs an sk_test_ or \
             rk_test_ key",
            describe(kind)
        )),
        StripeMode::Live | StripeMode::Test => None,
    }
}

fn describe(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Live => "a live key",
        KeyKind::Test => "a test key",
        KeyKind::Unknown => "neither a secret nor a restricted key (no sk_/rk_ live/test prefix)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_kinds_follow_the_prefixes() {
        assert_eq!(key_kind("sk_live_abc"), KeyKind::Live);
        assert_eq!(key_kind("rk_live_abc"), KeyKind::Live);
        assert_eq!(key_kind("sk_test_abc"), KeyKind::Test);
        assert_eq!(key_kind("rk_test_abc"), KeyKind::Test);
        assert_eq!(key_kind("pk_live_abc"), KeyKind::Unknown);
        assert_eq!(key_kind("live_abc"), KeyKind::Unknown);
    }

    #[test]
    fn a_mode_that_sends_needs_a_key_of_its_kind() {
        use StripeMode::*;
        assert!(key_problem(Live, "", true).is_some_and(|p| p.contains("no Stripe key")));
        assert!(
            key_problem(Live, "", false).is_none(),
            "reading the database needs no key"
        );
        assert!(key_problem(Live, "sk_test_x", false).is_some_and(|p| p.contains("a test key")));
        assert!(key_problem(Test, "sk_live_x", true).is_some_and(|p| p.contains("a live key")));
        assert!(key_problem(Live, "pk_live_x", true).is_some());
        assert!(key_problem(Live, "rk_live_x", true).is_none());
        assert!(key_problem(Test, "sk_test_x", true).is_none());
    }

    #[test]
    fn dry_run_refuses_a_key_and_needs_none() {
        use StripeMode::*;
        assert!(key_problem(DryRun, "", true).is_none());
        assert!(key_problem(DryRun, "sk_live_x", false).is_some_and(|p| p.contains("dry-run")));
    }

    #[test]
    fn modes_read_as_configured() {
        let mode = |s: &str| serde_json::from_str::<StripeMode>(s);
        assert_eq!(mode("\"dry-run\"").ok(), Some(StripeMode::DryRun));
        assert_eq!(mode("\"live\"").ok(), Some(StripeMode::Live));
        assert!(mode("\"dry_run\"").is_err());
        assert_eq!(StripeMode::Live.default_rate_per_second(), 800.0);
    }
}
