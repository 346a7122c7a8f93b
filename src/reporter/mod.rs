//! Drains the outbox to the billing system each outcome is frozen to
//! (`outcomes.sink`): Stripe meter events ([`meter_events`]), Metronome
//! ([`metronome`]) or Stripe's legacy usage records ([`usage_records`]). Claims,
//! leases, the rate limit and the order (reversals before sends) are the same
//! for every sink; each sink owns its requests, dedupe key, retry
//! classification, reversal method and reconcile source. What follows a call
//! (read the answer, classify it, the retry budget and backoff, record the
//! attempt) is written once, in [`attempt`].

mod attempt;
mod clawback;
mod marks;
mod meter_events;
mod meter_stream;
mod metronome;
mod metronome_clawback;
mod rate_limit;
pub mod reversal_method;
mod usage_clawback;
mod usage_doubt;
mod usage_records;

pub use metronome_clawback::choose_metronome_method;
pub use reversal_method::{after_cancel_too_old, choose_method, manual_reason, Method};

use crate::clock::SharedClock;
use crate::lifecycle::OutcomeState;
use crate::metrics::Metrics;
use crate::settings::{MeterAggregation, MeterEventApi, ReporterSettings, Settings};
use crate::sink::Sink;
use crate::store::{ClaimedOutcome, OutcomeMark, SetAside, Store, StoreError};
use crate::stripe::gate::PreflightGates;
use crate::stripe::mode::StripeMode;
use crate::stripe::StripeClient;
use crate::time::Millis;
use marks::{MarkWriter, PendingMark, MARKS_PER_COMMIT};
use rate_limit::RateLimiter;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Clone)]
pub struct Reporter {
    store: Store,
    /// `None`: dry-run: record what would be sent.
    client: Option<StripeClient>,
    /// The mode calls are made in (`stripe.mode`).
    mode: StripeMode,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    settings: ReporterSettings,
    lease: Duration,
    /// The Stripe client's timeout: a claim must outlast a call.
    call_timeout: Duration,
    pub(crate) limiter: Arc<RateLimiter>,
    /// Aggregation of each meter by event name (`sum` when absent): dry-run only;
    /// otherwise the preflight reads it from Stripe.
    aggregations: Arc<BTreeMap<String, MeterAggregation>>,
    /// The Stripe preflight (`None` in dry-run): what is sent, and how.
    gate: Option<Arc<PreflightGates>>,
    /// Metronome (`None` in dry-run, or without `metronome.api_token`).
    metronome: Option<crate::metronome::MetronomeClient>,
    /// `metronome.rate_per_second`: ingest requests, apart from Stripe's calls.
    metronome_limiter: Arc<RateLimiter>,
    metronome_settings: Arc<crate::metronome::MetronomeSettings>,
    /// The client pinned to `stripe.legacy_api_version` for usage records
    /// (`None` in dry-run).
    legacy: Option<StripeClient>,
    /// The group commit of the marks (attempts, set-asides) of every clone,
    /// started on first use.
    marks: Arc<OnceLock<MarkWriter>>,
    /// The v2 meter event stream, when `stripe.meter_event_api = "v2_stream"`.
    stream: Option<Arc<meter_stream::Stream>>,
}

impl Reporter {
    /// `settings`: the reporter's own section, `worker.lease` (its claims),
    /// `stripe.timeout` (a claim must outlast a call) and the meters' aggregations.
    pub fn new(
        store: Store,
        client: Option<StripeClient>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: &Settings,
    ) -> Reporter {
        let limiter = Arc::new(RateLimiter::new(settings.rate_per_second()));
        let legacy = client
            .as_ref()
            .and_then(|c| c.legacy_usage(&settings.stripe.legacy_api_version).ok());
        // The process's mode, whether or not it has a Stripe client: a deployment
        // whose tenants all bill on Metronome needs no Stripe key (see
        // `Settings::uses_stripe`); without a client, a Stripe call is held, never
        // turned into a dry-run.
        let mode = settings.stripe.mode();
        // Sending to Metronome follows the process's mode: nothing in a dry-run.
        let metronome = mode
            .sends()
            .then(|| metronome::client_from(&settings.metronome))
            .flatten();
        Reporter {
            store,
            client,
            mode,
            clock,
            metrics,
            settings: settings.reporter.clone(),
            lease: settings.worker.lease,
            call_timeout: settings.stripe.timeout,
            limiter,
            aggregations: Arc::new(settings.stripe.meter_aggregations.clone()),
            gate: None,
            metronome,
            metronome_limiter: Arc::new(RateLimiter::new(settings.metronome.rate_per_second)),
            metronome_settings: Arc::new(settings.metronome.clone()),
            legacy,
            marks: Arc::default(),
            stream: (settings.stripe.meter_event_api == MeterEventApi::V2Stream).then(|| {
                Arc::new(meter_stream::Stream::new(
                    &settings.stripe.meter_events_api_base,
                    settings.stream_rate_per_second(),
                ))
            }),
        }
    }

    pub fn dry_run(&self) -> bool {
        self.mode == StripeMode::DryRun
    }

    /// Say, at start, what this database holds that was sent in another mode and
    /// is therefore not billed in this one, and how to send it.
    pub async fn warn_other_modes(&self) -> Result<(), StoreError> {
        if self.mode == StripeMode::DryRun {
            return Ok(());
        }
        for (mode, n) in self.store.sent_in_other_modes(self.mode).await? {
            let replay = match (mode, self.mode) {
                (StripeMode::DryRun, _) => "outcome-meter replay --dry-run",
                (StripeMode::Test, StripeMode::Live) => "outcome-meter replay --from-test",
                _ => continue, // live outcomes seen from test mode are billed already
            };
            tracing::warn!(outcomes = n, recorded_in = %mode, mode = %self.mode, "outcomes recorded in another mode are not billed in this one; `{replay}` sends them");
        }
        Ok(())
    }

    /// Report everything due now. Returns how many outcomes were attempted.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Report one batch of outcomes, then process one batch of reversals.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        if let Some(g) = &self.gate {
            g.ensure_started().await;
        }
        // Reversals first: an outcome clawed back before it was sent is voided, never sent
        // (and one with a reversal is never claimed to be sent). Outcomes are sent
        // even when the reversals failed; the first error is the pass's.
        let reversed = self.reverse_batch().await;
        let reported = self.report_batch().await;
        Ok(reversed? + reported?)
    }

    /// The timestamp (Unix seconds) of an event made now (a correction): this
    /// process's time, but never ahead of the world's, which Stripe keeps
    /// (a drill's positive `clock.offset` would make it refused as future).
    fn stripe_seconds(&self, now: Millis) -> i64 {
        now.min(Millis::from(self.clock.world_now())).as_secs()
    }

    /// Run one Stripe call and record how long it took (`/metrics`).
    async fn timed<T>(&self, call: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.metrics.stripe_call(call, started.elapsed());
        out
    }

    /// Claim one batch of outcomes and send each through its sink.
    async fn report_batch(&self) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        // No call is made whose mark could not be recorded.
        if self.marks().is_gone() {
            return Err(marks::writer_gone());
        }
        // Read first: nothing due never takes a write transaction.
        if !self.store.any_outcome_due(now).await? {
            return Ok(0);
        }
        let claimed = self
            .store
            .claim_outcomes(now, now + self.lease, self.settings.batch_size)
            .await?;
        let n = claimed.len();
        let mut by_sink: BTreeMap<Sink, Vec<ClaimedOutcome>> = BTreeMap::new();
        for o in claimed {
            by_sink.entry(o.sink).or_default().push(o);
        }
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (sink, outcomes) in by_sink {
            match sink {
                Sink::StripeMeters => match &self.stream {
                    Some(stream) => self.spawn_meter_stream(stream, outcomes, &permits, &mut tasks),
                    None => self.spawn_meter_events(outcomes, &permits, &mut tasks),
                },
                Sink::Metronome => self.spawn_metronome(outcomes, &permits, &mut tasks),
                Sink::StripeUsageRecords => {
                    self.spawn_usage_records(outcomes, &permits, &mut tasks)
                }
            }
        }
        joined(tasks).await.map(|()| n)
    }
}

impl Reporter {
    /// The group commit of this reporter's marks.
    fn marks(&self) -> &MarkWriter {
        self.marks
            .get_or_init(|| MarkWriter::spawn(self.store.clone(), MARKS_PER_COMMIT))
    }

    /// Give a claimed outcome back without a call ([`Store::set_aside`]), in a
    /// group commit with the other marks; returns once it is committed.
    pub(crate) async fn set_aside(
        &self,
        id: &str,
        token: Millis,
        reason: &str,
        how: SetAside,
    ) -> Result<(), StoreError> {
        self.hand_set_aside(id, token, reason, how)
            .await
            .committed()
            .await
    }

    /// Give claimed outcomes back unsent, pending until `until`, with `reason` as
    /// their last error (no attempt spent): each `(id, fencing token)` handed to
    /// the group commit together, all awaited.
    pub(crate) async fn hold_all(
        &self,
        claims: &[(&str, Millis)],
        reason: &str,
        until: Millis,
    ) -> Result<(), StoreError> {
        let mut marks = marks::Outstanding::default();
        for &(id, token) in claims {
            let how = SetAside::RetryAt(until);
            marks.push(self.hand_set_aside(id, token, reason, how).await);
        }
        marks.all_committed().await
    }

    /// [`Reporter::set_aside`] handed over, not awaited.
    pub(crate) async fn hand_set_aside(
        &self,
        id: &str,
        token: Millis,
        reason: &str,
        how: SetAside,
    ) -> PendingMark {
        self.marks()
            .hand(OutcomeMark::SetAside {
                id: id.to_string(),
                token,
                reason: reason.to_string(),
                how,
            })
            .await
    }

    /// Dry-run: record `request` as what would be sent for `o`; nothing is sent.
    pub(crate) async fn record_dry_run(
        &self,
        o: &ClaimedOutcome,
        request: &str,
    ) -> Result<(), StoreError> {
        self.hand_dry_run(o, request).await.committed().await
    }

    /// [`Reporter::record_dry_run`] handed to the group commit, not awaited.
    pub(crate) async fn hand_dry_run(&self, o: &ClaimedOutcome, request: &str) -> PendingMark {
        let now = self.clock.now_ms();
        self.metrics
            .count_report(crate::metrics::ReportResult::DryRun);
        let attempt = crate::store::OutcomeAttempt {
            outcome_id: &o.id,
            now,
            mode: StripeMode::DryRun,
            request,
            idempotency_key: None,
            status_code: None,
            request_id: None,
            livemode: None,
            result: "dry_run",
            error: None,
            state: OutcomeState::DryRun,
            next_attempt_at: now,
            in_doubt: false,
        };
        self.marks()
            .hand(OutcomeMark::Attempt(attempt.to_owned_attempt()))
            .await
    }
}

/// Tasks sending outcomes, each `Err` when its store writes failed.
pub(crate) type Tasks = JoinSet<Result<(), StoreError>>;

/// Wait for every task; the first error (a store write, or a task that
/// panicked) is the batch's.
async fn joined(mut tasks: Tasks) -> Result<(), StoreError> {
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(StoreError::corrupt(format!("reporter task failed: {e}")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
