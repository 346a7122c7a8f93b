//! `Settings::validate`: every problem of a configuration, listed at once, in
//! section order. Each section's own checks are beside it; here are those that
//! span sections.

use super::{Settings, SettingsError};

impl Settings {
    /// Every problem of this configuration at once, or `Ok`.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let mut errs = self.server.problems();
        errs.extend(self.database.problems());
        errs.extend(self.reporting_problems());
        errs.extend(self.stripe.events_problems());
        errs.extend(self.stripe.stream_problems());
        errs.extend(self.reconcile.problems());
        errs.extend(self.contract.validate());
        errs.extend(crate::metronome::settings::problems(self));
        errs.extend(crate::stripe::usage_records::settings::problems(self));
        errs.extend(self.verify.problems());
        let mut seen = std::collections::HashSet::new();
        for t in &self.tenants {
            let listed_before = !seen.insert(t.id.as_str());
            errs.extend(t.problems(listed_before, &self.contract));
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(SettingsError::Invalid(errs))
        }
    }

    /// The worker's and the reporter's batches, the reporter's pace and
    /// attempts, and its Stripe calls: each within a claim, with the mode's key,
    /// to an http(s) API.
    fn reporting_problems(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.worker.batch_size == 0 || self.reporter.batch_size == 0 {
            errs.push("worker.batch_size and reporter.batch_size must be positive".into());
        }
        if self
            .reporter
            .rate_per_second
            .is_some_and(|r| r.is_nan() || r <= 0.0)
            || self.reporter.concurrency == 0
        {
            errs.push("reporter.rate_per_second and reporter.concurrency must be positive".into());
        }
        if self
            .reporter
            .stream_rate_per_second
            .is_some_and(|r| r.is_nan() || r <= 0.0)
        {
            errs.push("reporter.stream_rate_per_second must be positive".into());
        }
        if self.stripe.timeout >= self.worker.lease {
            errs.push(format!(
                "stripe.timeout ({}) must be shorter than worker.lease ({}): a reporter's claim must outlast its Stripe call",
                humantime::format_duration(self.stripe.timeout),
                humantime::format_duration(self.worker.lease)
            ));
        }
        if let Some(problem) = self.stripe.key_problem(false) {
            errs.push(problem);
        }
        if self.stripe.preflight_every.is_zero() {
            errs.push("stripe.preflight_every must be longer than zero".into());
        }
        if self.reporter.max_attempts == 0 {
            errs.push("reporter.max_attempts must be at least 1".into());
        }
        if !self.stripe.api_base.starts_with("http://")
            && !self.stripe.api_base.starts_with("https://")
        {
            errs.push(format!(
                "stripe.api_base `{}` is not an http(s) URL",
                self.stripe.api_base
            ));
        }
        errs
    }
}
