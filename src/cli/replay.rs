//! `outcome-meter replay`: requeue quarantined deliveries, or failed, rejected,
//! too-old or recorded-in-another-mode outcomes, after a fix.

use super::open_store;
use anyhow::{bail, Context, Result};
use outcome_meter::accounting::fmt_ms;
use outcome_meter::clock::SharedClock;
use outcome_meter::lifecycle::OutcomeState;
use outcome_meter::settings::{Settings, StripeMode};
use outcome_meter::store::{OutcomeFilter, Store};
use outcome_meter::stripe::{limits, too_old};
use outcome_meter::time::Millis;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[arg(long)]
    quarantined: bool,
    #[arg(long)]
    failed: bool,
    /// Outcomes older than Stripe accepts (35 days): bill them at the current
    /// time, the original time kept in their evidence (needs --yes).
    #[arg(long)]
    too_old: bool,
    /// Outcomes Stripe accepted, then rejected (rejected_by_stripe): send them again,
    /// under a new identifier, once the cause is fixed (needs --yes).
    #[arg(long)]
    rejected: bool,
    #[arg(long)]
    tenant: Option<String>,
    /// A delivery id (with --quarantined) or outcome id (with --failed, --too-old, --rejected).
    #[arg(long)]
    id: Option<String>,
    /// List what is quarantined instead of requeuing it.
    #[arg(long)]
    list: bool,
    /// With --too-old or --failed: also those Stripe may have recorded (a lost
    /// answer or a 5xx), after checking Stripe.
    #[arg(long)]
    include_in_doubt: bool,
    /// Outcomes recorded by a dry-run: send them in this mode (live or test),
    /// with their identifiers (needs --yes).
    #[arg(long = "dry-run")]
    from_dry_run: bool,
    /// Outcomes reported in Stripe's test mode: send them in live mode, with
    /// their identifiers (needs --yes).
    #[arg(long)]
    from_test: bool,
    /// With --too-old, --rejected, --dry-run or --from-test: do it (without,
    /// only say what would be done).
    #[arg(long)]
    yes: bool,
}

/// What a replay works on: the store, the clock, and the oldest confirmation
/// time Stripe still accepts.
struct Replay<'a> {
    args: &'a Args,
    settings: &'a Settings,
    store: Store,
    clock: SharedClock,
    oldest: Millis,
}

pub(crate) async fn run(args: Args, settings: &Settings) -> Result<()> {
    let store = open_store(settings).await?;
    let clock = settings.clock.build();
    let oldest = limits::oldest_acceptable_ms(clock.world_now());
    let r = Replay {
        args: &args,
        settings,
        store,
        clock,
        oldest,
    };
    if args.from_dry_run || args.from_test {
        return r.recorded_in_another_mode().await;
    }
    if args.rejected {
        return r.rejected().await;
    }
    if args.too_old {
        return r.too_old().await;
    }
    match (args.quarantined, args.failed) {
        (true, false) if args.list => r.list_quarantined().await,
        (true, false) => r.quarantined().await,
        (false, true) => r.failed().await,
        _ => bail!("say what to replay: --quarantined, --failed, --too-old or --rejected"),
    }
}

impl Replay<'_> {
    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// `--dry-run` / `--from-test`: send outcomes recorded in a dry-run (or
    /// in test mode) in this mode, with their identifiers.
    async fn recorded_in_another_mode(&self) -> Result<()> {
        let a = self.args;
        if a.quarantined || a.failed || a.too_old || a.rejected || (a.from_dry_run && a.from_test) {
            bail!("--dry-run and --from-test go alone (one at a time)");
        }
        let from = if a.from_test {
            StripeMode::Test
        } else {
            StripeMode::DryRun
        };
        let mode = self.settings.stripe.mode();
        if !mode.sends() || (from == StripeMode::Test && mode != StripeMode::Live) {
            bail!(
                "stripe.mode is \"{mode}\": outcomes recorded in {from} mode are sent from {}",
                if from == StripeMode::Test {
                    "live mode"
                } else {
                    "live or test mode"
                }
            );
        }
        let (tenant, id) = (a.tenant.as_deref(), a.id.as_deref());
        let (n, old) = self
            .store
            .count_sent_in(from, tenant, id, self.oldest)
            .await?;
        let old_note = format!(
            "{old} of them confirmed more than 35 days ago: Stripe refuses such timestamps, so the \
             reporter parks them as failed (too old), listed by `outcome-meter outcomes --failed` and \
             in statements; `replay --too-old` bills them at the current time"
        );
        if !a.yes {
            out!("{n} outcome(s) recorded in {from} mode would be sent in {mode} mode with their identifiers ({old_note}); run again with --yes to do it");
            return Ok(());
        }
        let queued = self
            .store
            .requeue_sent_in(from, tenant, id, self.now())
            .await?;
        out!("{queued} outcome(s) recorded in {from} mode queued to be sent in {mode} mode ({old_note}); a running reporter sends them");
        Ok(())
    }

    /// `--rejected`: list the outcomes Stripe rejected after accepting them,
    /// then (with `--yes`) send them again under a new identifier.
    async fn rejected(&self) -> Result<()> {
        let a = self.args;
        if a.quarantined || a.failed || a.too_old {
            bail!(
                "--rejected goes alone: it resends outcomes Stripe rejected after accepting them"
            );
        }
        let found = self
            .store
            .list_outcomes(&OutcomeFilter {
                tenant: a.tenant.clone(),
                state: Some(OutcomeState::RejectedByStripe),
                ..Default::default()
            })
            .await?;
        let found: Vec<_> = found
            .into_iter()
            .filter(|o| a.id.as_deref().is_none_or(|i| i == o.id))
            .collect();
        for o in &found {
            out!(
                "{}\t{}\t{}\t{}\t{}",
                o.id,
                o.tenant,
                fmt_ms(o.confirmed_at),
                o.stripe_identifier(),
                o.last_error.as_deref().unwrap_or("")
            );
        }
        if !a.yes {
            out!(
                "{} outcome(s) rejected by Stripe would be sent again, each under a new identifier \
                 (<outcome id>_resend<N>); fix the cause first (the customer, the meter, the payload), \
                 then run again with --yes",
                found.len()
            );
            return Ok(());
        }
        let n = self
            .store
            .requeue_rejected(a.tenant.as_deref(), a.id.as_deref(), self.now())
            .await?;
        out!("{n} outcome(s) queued to be sent again under a new identifier; a running reporter sends them");
        let too_old: Vec<_> = found
            .iter()
            .filter(|o| o.confirmed_at < self.oldest)
            .collect();
        if !too_old.is_empty() {
            out!("{} of them are older than Stripe accepts (35 days): the reporter parks them as failed, and `replay --too-old` bills them at the current time", too_old.len());
        }
        Ok(())
    }

    /// `--too-old`: list the outcomes past Stripe's limit, then (with `--yes`)
    /// bill them at the current time.
    async fn too_old(&self) -> Result<()> {
        let a = self.args;
        if a.quarantined || a.failed || a.rejected {
            bail!("--too-old goes alone: it takes failed and pending outcomes past Stripe's limit");
        }
        let found = self
            .store
            .too_old_outcomes(a.tenant.as_deref(), a.id.as_deref(), self.oldest)
            .await?;
        let plan = too_old::plan(found, a.include_in_doubt);
        for o in &plan.ready {
            out!(
                "{}\t{}\t{}\t{}",
                o.id,
                o.tenant,
                fmt_ms(o.confirmed_at),
                o.state
            );
        }
        for o in &plan.in_doubt {
            out!(
                "{}\t{}\t{}\t{}\tin doubt: {} call(s) without an answer or with a 5xx; Stripe may have it (check reconcile, then --include-in-doubt)",
                o.id, o.tenant, fmt_ms(o.confirmed_at), o.state, o.attempts_in_doubt
            );
        }
        if !a.yes {
            out!(
                "{} outcome(s) older than Stripe accepts would be billed at the current time ({} left aside as in doubt); run again with --yes to do it",
                plan.ready.len(),
                plan.in_doubt.len()
            );
            return Ok(());
        }
        let n = too_old::rebill(&self.store, &plan.ready, self.now()).await?;
        out!(
            "{n} outcome(s) queued to be billed at the current time (original time kept in their evidence); {} left aside as in doubt",
            plan.in_doubt.len()
        );
        Ok(())
    }

    /// `--quarantined --list`: the deliveries that could not be parsed.
    async fn list_quarantined(&self) -> Result<()> {
        for d in self
            .store
            .deliveries(self.args.tenant.as_deref(), "quarantined", 1000)
            .await?
        {
            out!(
                "{}\t{}\t{}\t{}\t{}",
                d.id,
                d.tenant,
                d.provider,
                d.delivery_key,
                d.error.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// `--quarantined`: requeue them for the worker.
    async fn quarantined(&self) -> Result<()> {
        let id = self
            .args
            .id
            .as_deref()
            .map(|s| s.parse::<i64>())
            .transpose()
            .context("--id must be a delivery id (a number)")?;
        let n = self
            .store
            .requeue_quarantined(self.args.tenant.as_deref(), id)
            .await?;
        out!("{n} quarantined deliveries requeued; a running worker picks them up");
        Ok(())
    }

    /// `--failed`: requeue the outcomes Stripe refused, leaving those too old
    /// and (without `--include-in-doubt`) those Stripe may have.
    async fn failed(&self) -> Result<()> {
        let a = self.args;
        let (n, left, in_doubt) = self
            .store
            .requeue_failed(
                a.tenant.as_deref(),
                a.id.as_deref(),
                self.now(),
                self.oldest,
                a.include_in_doubt,
            )
            .await?;
        out!("{n} failed outcomes requeued for reporting (same identifier, a new idempotency key per call)");
        if in_doubt > 0 {
            out!("{in_doubt} failed outcome(s) were left as they are: an earlier call got no answer or a 5xx, so Stripe may have them, past its 24-hour identifier dedupe; check the meter in Stripe (`reconcile`), then replay them with --include-in-doubt");
        }
        if left > 0 {
            out!("{left} failed outcome(s) are older than Stripe accepts (35 days) and were left as they are: `replay --too-old` bills them at the current time");
        }
        Ok(())
    }
}
