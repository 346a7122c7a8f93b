//! `[tenants.providers.<name>.api]`: credentials for a helpdesk's REST API, and
//! the per-provider `verify` switch.

use crate::duration_serde;
use serde::Deserialize;
use std::time::Duration;

/// Whether outcomes of a tenant's provider are checked with the helpdesk's API
/// before they are billed. Default: `before_billing` when `api` credentials are
/// configured, `off` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    Off,
    BeforeBilling,
}

/// Credentials and limits for one helpdesk account's REST API. Which keys a
/// provider needs is documented in docs/helpdesks.md; each client checks its own.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// The API's base URL (`https://acme.zendesk.com`, `https://acme.freshdesk.com`);
    /// providers with one fixed host have a default. Tests point it at a fake.
    pub base_url: Option<String>,
    /// The account the token belongs to, where the scheme needs one: the agent's
    /// email (Zendesk, Gorgias), the OAuth client id (Help Scout, Zoho Desk).
    pub user: Option<String>,
    /// The API token, key or OAuth client secret. `token_env` / `token_file` read
    /// it from an environment variable or a file instead.
    pub token: String,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    /// An OAuth refresh token (Zoho Desk), or its `_env` / `_file` source.
    pub refresh_token: String,
    pub refresh_token_env: Option<String>,
    pub refresh_token_file: Option<String>,
    /// The OAuth token endpoint (Help Scout, Zoho Desk); default the vendor's.
    pub token_url: Option<String>,
    /// Zoho Desk: the organization id sent as the `orgId` header.
    pub org_id: Option<String>,
    /// HubSpot: the properties API name of the pipeline stage, default `hs_pipeline_stage`.
    pub status_property: Option<String>,
    /// Requests per minute this client may make; default the vendor's documented
    /// budget (docs/helpdesks.md), lower it when other tools share the account.
    pub requests_per_minute: Option<u32>,
    /// Time allowed for one request.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// The service's clock (set by the service, not by config): `Retry-After`
    /// pauses are kept by it, so tests can move past them.
    #[serde(skip)]
    pub clock: Option<crate::clock::SharedClock>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            base_url: None,
            user: None,
            token: String::new(),
            token_env: None,
            token_file: None,
            refresh_token: String::new(),
            refresh_token_env: None,
            refresh_token_file: None,
            token_url: None,
            org_id: None,
            status_property: None,
            requests_per_minute: None,
            timeout: Duration::from_secs(10),
            clock: None,
        }
    }
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("base_url", &self.base_url)
            .field("user", &self.user)
            .field("token", &redacted(&self.token))
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("refresh_token", &redacted(&self.refresh_token))
            .field("refresh_token_env", &self.refresh_token_env)
            .field("refresh_token_file", &self.refresh_token_file)
            .field("token_url", &self.token_url)
            .field("org_id", &self.org_id)
            .field("status_property", &self.status_property)
            .field("requests_per_minute", &self.requests_per_minute)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn redacted(s: &str) -> &'static str {
    if s.is_empty() {
        "(unset)"
    } else {
        "(redacted)"
    }
}

impl ApiSettings {
    /// The base URL without a trailing slash, or `default`.
    pub fn base(&self, default: &str) -> String {
        self.base_url
            .as_deref()
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_string()
    }

    /// The rule every provider shares: a base URL that is http(s), a token,
    /// a positive budget and timeout.
    pub(crate) fn common_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if let Some(url) = &self.base_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => errs.push(format!("api.base_url `{url}` is not an http(s) URL")),
            }
        }
        if self.token.trim().is_empty() {
            errs.push("api.token (or api.token_env / api.token_file) is empty".into());
        }
        if self.requests_per_minute == Some(0) {
            errs.push("api.requests_per_minute must be positive".into());
        }
        if self.timeout.is_zero() {
            errs.push("api.timeout must be positive".into());
        }
        errs
    }

    /// Fill `token` and `refresh_token` from their `_env` / `_file` sources.
    /// Returns the problems (naming the source, never the value).
    pub(crate) fn resolve_sources(&mut self, key: &str) -> Vec<String> {
        let mut errs = Vec::new();
        for (name, value, env, file) in [
            ("token", &mut self.token, &self.token_env, &self.token_file),
            (
                "refresh_token",
                &mut self.refresh_token,
                &self.refresh_token_env,
                &self.refresh_token_file,
            ),
        ] {
            let sources = usize::from(!value.is_empty())
                + usize::from(env.is_some())
                + usize::from(file.is_some());
            if sources > 1 {
                errs.push(format!(
                    "{key}.api: set one of {name}, {name}_env, {name}_file"
                ));
                continue;
            }
            if let Some(var) = env {
                match std::env::var(var) {
                    Ok(v) if !v.trim().is_empty() => *value = v,
                    _ => errs.push(format!(
                        "{key}.api.{name}_env: environment variable `{var}` is unset or empty"
                    )),
                }
            }
            if let Some(path) = file {
                match crate::secret_sources::read_file(path) {
                    Ok(v) if !v.trim().is_empty() => *value = v,
                    Ok(_) => errs.push(format!("{key}.api.{name}_file `{path}` is empty")),
                    Err(e) => errs.push(format!("{key}.api.{name}_file: {e}")),
                }
            }
        }
        errs
    }
}

/// What to do with an outcome whose helpdesk could not be asked within `max_hold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnreachable {
    /// Keep holding it (and keep asking, every `retry_max`): nothing is billed unverified.
    Hold,
    /// Bill it, with "not verified: <why>" in its evidence.
    Bill,
}

/// `[verify]`: how outcomes are checked with the helpdesk before billing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifySettings {
    /// How long an outcome may wait for its helpdesk to answer.
    #[serde(with = "duration_serde")]
    pub max_hold: Duration,
    /// After `max_hold`: `hold` (default) or `bill`.
    pub on_unreachable: OnUnreachable,
    /// The first wait after a failed check; it doubles up to `retry_max`.
    #[serde(with = "duration_serde")]
    pub retry_base: Duration,
    #[serde(with = "duration_serde")]
    pub retry_max: Duration,
    /// Tickets checked at once by one process.
    pub concurrency: usize,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            max_hold: Duration::from_secs(24 * 3600),
            on_unreachable: OnUnreachable::Hold,
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(30 * 60),
            concurrency: 4,
        }
    }
}

impl VerifySettings {
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.retry_base.is_zero() || self.retry_max < self.retry_base {
            errs.push("verify.retry_base must be positive and at most verify.retry_max".into());
        }
        if self.concurrency == 0 {
            errs.push("verify.concurrency must be positive".into());
        }
        errs
    }

    /// The wait before attempt `attempts + 1` (after `attempts` failures), or the
    /// helpdesk's own `Retry-After` when longer.
    pub fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let doubled = self
            .retry_base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        doubled
            .min(self.retry_max)
            .max(retry_after.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let s = VerifySettings::default();
        assert_eq!(s.backoff(1, None), Duration::from_secs(60));
        assert_eq!(s.backoff(2, None), Duration::from_secs(120));
        assert_eq!(s.backoff(6, None), Duration::from_secs(30 * 60));
        assert_eq!(s.backoff(60, None), Duration::from_secs(30 * 60));
        assert_eq!(
            s.backoff(1, Some(Duration::from_secs(300))),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn secrets_come_from_one_source_and_never_print() {
        let mut a = ApiSettings {
            token: "tok-inline-123".into(),
            token_env: Some("OUTCOME_METER_TEST_UNSET_VAR".into()),
            ..Default::default()
        };
        assert_eq!(a.resolve_sources("t").len(), 1);
        assert!(!format!("{a:?}").contains("tok-inline"));
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("tok");
        std::fs::write(&file, "from-file-456\n").expect("write");
        let mut b = ApiSettings {
            token_file: Some(file.display().to_string()),
            ..Default::default()
        };
        assert!(b.resolve_sources("t").is_empty());
        assert_eq!(b.token, "from-file-456");
    }
}
