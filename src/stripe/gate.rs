//! The preflight while `serve` runs: the latest result, refreshed every
//! `stripe.preflight_every` (by the service's clock), read by the reporter before
//! each (customer, meter) group it sends.
//!
//! - A meter or customer that fails the preflight holds its outcomes: pending,
//!   unsent, the reason as their last error, tried again after the next preflight.
//! - A preflight that cannot reach Stripe (network, 5xx, a refused key) changes
//!   nothing that is known: the last good result stays in use, and the next try
//!   comes sooner ([`RETRY`]). Until a first preflight has succeeded nothing is sent
//!   (every outcome is held as `preflight_pending`): sending blind is what the
//!   preflight exists to prevent.

use super::client::StripeClient;
use super::preflight::{check, MeterInfo, Needs, Refusal, Report};
use crate::accounting::fmt_ms;
use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::time::Millis;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How soon a failed preflight is tried again (never later than `preflight_every`).
pub const RETRY: Duration = Duration::from_secs(30);

/// How soon something held is looked at again while the next preflight is due
/// or running: the fresh result decides, not the one it replaces.
const RECHECK: Duration = Duration::from_secs(5);

/// Why an outcome (or a reversal) waits, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// `meter_missing`, `customer_deleted`, `preflight_pending`, …
    pub reason: &'static str,
    /// The words recorded as the outcome's last error.
    pub text: String,
    pub until: Millis,
}

#[derive(Default)]
struct State {
    /// The last preflight that reached Stripe.
    report: Option<Arc<Report>>,
    /// Why the last try failed, when it did.
    last_error: Option<String>,
    /// When the next preflight is due (the epoch: now).
    next_run_at: Millis,
    /// The problems last logged, so an unchanged list is not logged again.
    logged: Vec<String>,
}

pub struct PreflightGate {
    /// Acts on `account`.
    client: StripeClient,
    /// The connected account this gate checks (`None`: the platform's own).
    account: Option<String>,
    needs: Needs,
    store: Store,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    every: Duration,
    state: RwLock<State>,
    /// One preflight at a time.
    running: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for PreflightGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreflightGate")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl PreflightGate {
    /// The gate of one Stripe account: `client` is pointed at `account`.
    pub fn new(
        client: StripeClient,
        account: Option<String>,
        needs: Needs,
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        every: Duration,
    ) -> PreflightGate {
        PreflightGate {
            client: client.on_account(account.as_deref()),
            account,
            needs,
            store,
            clock,
            metrics,
            every,
            state: RwLock::new(State::default()),
            running: tokio::sync::Mutex::new(()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// The last preflight that reached Stripe.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.read().report.clone()
    }

    /// When the next preflight is due.
    pub fn next_run_at(&self) -> Millis {
        self.read().next_run_at
    }

    /// Run the preflight if it is due (one at a time). Returns whether it ran.
    pub async fn refresh_if_due(&self) -> bool {
        if self.now() < self.next_run_at() {
            return false;
        }
        let _one = self.running.lock().await;
        if self.now() < self.next_run_at() {
            return false; // another caller ran it meanwhile
        }
        self.run().await;
        true
    }

    /// Before the reporter's pass: the first preflight, if none has succeeded
    /// yet and one is due. Later ones run in the background ([`Self::refresh_if_due`]).
    pub async fn ensure_started(&self) {
        if self.latest().is_none() {
            self.refresh_if_due().await;
        }
    }

    async fn run(&self) {
        let extra = match self.store.unsent_customers(self.account.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "Stripe preflight: cannot read the customers of unsent outcomes; checking the configured ones");
                Vec::new()
            }
        };
        let started = tokio::time::Instant::now();
        let result = check(&self.client, &self.needs, &extra).await;
        self.metrics.stripe_call("preflight", started.elapsed());
        let now = self.now();
        match result {
            Ok(report) => {
                self.metrics.preflight_ran("ok");
                self.metrics
                    .set_preflight_problems(&report.problem_reasons());
                let problems: Vec<String> = report
                    .render()
                    .lines()
                    .filter(|l| l.starts_with("PROBLEM"))
                    .map(|l| l.trim_start_matches("PROBLEM").trim().to_string())
                    .collect();
                let mut st = self.write();
                if st.logged != problems || st.report.is_none() {
                    if problems.is_empty() {
                        tracing::info!(
                            account = ?self.account,
                            meters = report.meters.len(),
                            tenants = report.tenants.len(),
                            "Stripe preflight passes: every meter and customer is ready"
                        );
                    }
                    for p in &problems {
                        tracing::warn!(account = ?self.account, problem = %p, "Stripe preflight: outcomes for this are held, not sent");
                    }
                    st.logged = problems;
                }
                st.report = Some(Arc::new(report));
                st.last_error = None;
                st.next_run_at = now + self.every;
            }
            Err(e) => {
                self.metrics.preflight_ran("failed");
                let retry = RETRY.min(self.every);
                let mut st = self.write();
                tracing::warn!(error = %e, retry_in = ?retry, kept = st.report.is_some(), "Stripe preflight failed; the last good result stays in use");
                st.last_error = Some(e.to_string());
                st.next_run_at = now + retry;
            }
        }
    }

    /// When something held now is looked at again: after the next preflight;
    /// while one is due or running (the result in hand may be stale), soon.
    fn until(&self, st: &State) -> Millis {
        let now = self.now();
        if now >= st.next_run_at {
            now + RECHECK
        } else {
            st.next_run_at
        }
    }

    fn hold(&self, st: &State, r: Refusal) -> Hold {
        let until = self.until(st);
        Hold {
            reason: r.reason,
            text: format!(
                "not sent: Stripe preflight: {}; checked again at {}",
                r.text,
                fmt_ms(until)
            ),
            until,
        }
    }

    fn pending(&self, st: &State) -> Hold {
        let until = self.until(st);
        let why = st
            .last_error
            .as_deref()
            .map_or(String::new(), |e| format!(" ({e})"));
        Hold {
            reason: "preflight_pending",
            text: format!(
                "not sent: the Stripe preflight has not succeeded yet{why}; tried again at {}",
                fmt_ms(until)
            ),
            until,
        }
    }

    /// The meter of `event_name`, or why its events wait.
    pub fn meter(&self, event_name: &str) -> Result<MeterInfo, Hold> {
        let st = self.read();
        let Some(report) = &st.report else {
            return Err(self.pending(&st));
        };
        report.meter(event_name).map_err(|r| self.hold(&st, r))
    }

    /// Whether outcomes for (`customer`, `event_name`) may be sent now, and how.
    pub fn admit(&self, customer: &str, event_name: &str) -> Result<MeterInfo, Hold> {
        let st = self.read();
        let Some(report) = &st.report else {
            return Err(self.pending(&st));
        };
        let info = report.meter(event_name).map_err(|r| self.hold(&st, r))?;
        report.customer(customer).map_err(|r| self.hold(&st, r))?;
        Ok(info)
    }
}

/// The preflight of every Stripe account the tenants bill on: the platform's
/// own, and each Stripe Connect account (`tenants[].stripe_account`), each with
/// its own meters and customers, so each has its own [`PreflightGate`].
pub struct PreflightGates {
    gates: std::collections::BTreeMap<Option<String>, Arc<PreflightGate>>,
    clock: SharedClock,
}

impl PreflightGates {
    pub fn new(
        client: &StripeClient,
        settings: &crate::settings::Settings,
        store: &Store,
        clock: &SharedClock,
        metrics: &Arc<Metrics>,
    ) -> PreflightGates {
        let gates = settings
            .stripe_accounts()
            .into_iter()
            .map(|account| {
                let needs = Needs::for_account(settings, account.as_deref());
                let gate = PreflightGate::new(
                    client.clone(),
                    account.clone(),
                    needs,
                    store.clone(),
                    clock.clone(),
                    metrics.clone(),
                    settings.stripe.preflight_every,
                );
                (account, Arc::new(gate))
            })
            .collect();
        PreflightGates {
            gates,
            clock: clock.clone(),
        }
    }

    /// The gate of `account`, or why nothing goes there: no tenant bills on it
    /// any more (its outcomes wait until one does, or an operator decides).
    pub fn get(&self, account: Option<&str>) -> Result<&PreflightGate, Hold> {
        let key = account.map(str::to_string);
        self.gates.get(&key).map(|g| g.as_ref()).ok_or_else(|| {
            let until = self.clock.now_ms() + Duration::from_secs(300);
            Hold {
                reason: "account_unknown",
                text: format!(
                    "not sent: no tenant bills on Stripe account {} any more; checked again at {}",
                    account.unwrap_or("(the platform's own)"),
                    fmt_ms(until)
                ),
                until,
            }
        })
    }

    /// Meter ids by event name on `account`, as its latest preflight read them
    /// (`[stripe.meter_ids]` already winning); empty before a first preflight.
    pub fn meter_ids(&self, account: Option<&str>) -> std::collections::BTreeMap<String, String> {
        self.get(account)
            .ok()
            .and_then(|g| g.latest())
            .map(|r| r.meter_ids())
            .unwrap_or_default()
    }

    /// Meter ids by event name over every account (meter ids are unique across
    /// accounts; an event name on several accounts keeps one of them).
    pub fn all_meter_ids(&self) -> std::collections::BTreeMap<String, String> {
        let mut all = std::collections::BTreeMap::new();
        for g in self.gates.values() {
            if let Some(r) = g.latest() {
                all.extend(r.meter_ids());
            }
        }
        all
    }

    /// Run each account's preflight that is due.
    pub async fn refresh_if_due(&self) {
        for g in self.gates.values() {
            g.refresh_if_due().await;
        }
    }

    /// Before the reporter's pass: each account's first preflight.
    pub async fn ensure_started(&self) {
        for g in self.gates.values() {
            g.ensure_started().await;
        }
    }

    /// The meter of `event_name` on `account`, or why its events wait.
    pub fn meter(&self, account: Option<&str>, event_name: &str) -> Result<MeterInfo, Hold> {
        self.get(account)?.meter(event_name)
    }

    /// Whether outcomes for (`customer`, `event_name`) on `account` may be sent now.
    pub fn admit(
        &self,
        account: Option<&str>,
        customer: &str,
        event_name: &str,
    ) -> Result<MeterInfo, Hold> {
        self.get(account)?.admit(customer, event_name)
    }
}
