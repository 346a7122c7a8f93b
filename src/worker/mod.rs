//! The worker: turns stored deliveries into ticket decisions ([`inbox`]) and
//! confirms resolutions whose reopen window has passed ([`confirm`]).

mod batch;
mod clawback;
mod confirm;
mod evidence;
mod import;
mod inbox;
mod locked;
mod pass_writes;
mod replay;
mod verify;

use crate::clock::SharedClock;
use crate::metrics::Metrics;
use crate::settings::WorkerSettings;
use crate::store::{Backend, PinnedContract, Store, StoreError};
use crate::tenants::Tenants;
use crate::time::Millis;
use std::sync::Arc;
use std::time::Duration;

pub use clawback::day_and_month;
pub use inbox::InboxPass;

/// How long a confirmation transaction keeps taking more of its due tickets:
/// on SQLite every writer (a webhook's commit among them) waits for the one in
/// progress, so a pass commits what it has after this and leaves the rest due
/// for the next pass (measured, not asserted: `cargo bench --bench pipeline`).
pub(crate) const TX_BUDGET: Duration = Duration::from_millis(20);

/// The fewest deliveries an inbox pass claims on SQLite however slow the last
/// one was (each transaction costs a commit of its own).
const MIN_CLAIM: u32 = 16;

/// How many deliveries (or due tickets) the next inbox (or confirmation) pass
/// claims on SQLite: as many as the last transaction would have applied in
/// [`TX_BUDGET`] at the rate it went (`applied` in `took`), between
/// [`MIN_CLAIM`] and `batch` (`worker.batch_size`). A webhook's commit then
/// waits about the budget behind a batch, never a whole large one on a slow
/// moment, and a confirmation pass does not lock and read tickets it will not
/// reach.
pub(crate) fn next_claim(batch: u32, applied: usize, took: Duration) -> u32 {
    let floor = MIN_CLAIM.min(batch);
    if applied == 0 || took.is_zero() {
        return batch;
    }
    let fits = applied as f64 * TX_BUDGET.as_secs_f64() / took.as_secs_f64();
    (fits.min(f64::from(batch)) as u32).clamp(floor, batch.max(floor))
}

/// How many deliveries (or due tickets) a kind of pass takes at once: on
/// PostgreSQL always `batch`; on SQLite, after each transaction, what it would
/// have done in the budget ([`next_claim`]).
#[derive(Debug)]
pub(crate) struct ClaimSize {
    batch: u32,
    next: std::sync::atomic::AtomicU32,
}

impl ClaimSize {
    fn new(batch: u32) -> ClaimSize {
        ClaimSize {
            batch,
            next: batch.into(),
        }
    }

    /// How many the next pass takes.
    pub(crate) fn get(&self) -> u32 {
        self.next.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A pass's transaction did `applied` in `took`.
    pub(crate) fn record(&self, backend: Backend, applied: usize, took: Duration) {
        if backend == Backend::Sqlite {
            // One writer: keep its transactions near the budget.
            let next = next_claim(self.batch, applied, took);
            self.next.store(next, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    pub(crate) store: Store,
    pub(crate) tenants: Arc<Tenants>,
    pub(crate) clock: SharedClock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) batch: u32,
    /// How many deliveries the next inbox pass claims.
    claim: Arc<ClaimSize>,
    /// How many due tickets the next confirmation pass takes.
    confirm_claim: Arc<ClaimSize>,
    pub(crate) lease: Duration,
    pub(crate) confirm_grace: Duration,
    /// Helpdesk API clients of the providers whose outcomes are checked before billing.
    pub(crate) verifier: Arc<crate::verification::Verifier>,
    /// Claims of failed passes not yet given back: (delivery id, lease).
    stuck: Arc<std::sync::Mutex<Vec<(i64, Millis)>>>,
}

impl Worker {
    pub fn new(
        store: Store,
        tenants: Arc<Tenants>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        settings: &WorkerSettings,
        verifier: Arc<crate::verification::Verifier>,
    ) -> Worker {
        Worker {
            store,
            tenants,
            clock,
            metrics,
            batch: settings.batch_size,
            claim: Arc::new(ClaimSize::new(settings.batch_size)),
            confirm_claim: Arc::new(ClaimSize::new(settings.batch_size)),
            lease: settings.lease,
            confirm_grace: settings.confirm_grace,
            verifier,
            stuck: Arc::default(),
        }
    }

    /// Process everything that is ready now: the inbox, then due settlements.
    pub async fn drain(&self) -> Result<(usize, usize), StoreError> {
        let mut processed = 0;
        loop {
            let n = self.process_inbox_once().await?;
            processed += n;
            if n == 0 {
                break;
            }
        }
        let mut confirmed = 0;
        loop {
            let n = self.confirm_once().await?;
            confirmed += n;
            if n == 0 {
                break;
            }
        }
        Ok((processed, confirmed))
    }

    /// Contracts pinned to this ticket's undecided resolutions (see
    /// [`crate::ticket::replay_pinned`]). One the store cannot read is an error:
    /// the resolution is never replayed or confirmed under the current contract
    /// instead.
    pub(crate) async fn pins(
        &self,
        tx: &mut crate::store::Tx,
        tenant: &crate::tenants::Tenant,
        provider: &str,
        ticket_id: &str,
    ) -> Result<evidence::Pins, StoreError> {
        let rows = tx
            .pinned_contracts(
                &tenant.settings.id,
                provider,
                ticket_id,
                &tenant.contract_hash,
            )
            .await?;
        Ok(pins_of(rows))
    }

    /// [`Worker::pins`], read without a lock (the verification pass, which
    /// must pick the resolution the confirmer will gate).
    pub(crate) async fn pins_unlocked(
        &self,
        tenant: &crate::tenants::Tenant,
        provider: &str,
        ticket_id: &str,
    ) -> Result<evidence::Pins, StoreError> {
        let rows = self
            .store
            .pinned_contracts(
                &tenant.settings.id,
                provider,
                ticket_id,
                &tenant.contract_hash,
            )
            .await?;
        Ok(pins_of(rows))
    }
}

fn pins_of(pinned: Vec<PinnedContract>) -> evidence::Pins {
    let mut pins = evidence::Pins::default();
    for p in pinned {
        pins.terms.insert(p.seq, p.terms);
        pins.ids.insert(p.seq, (p.version, p.hash));
    }
    pins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_fits_the_budget_within_its_bounds() {
        let ms = Duration::from_millis;
        // 256 in 40 ms: 128 fit in 20 ms.
        assert_eq!(next_claim(256, 256, ms(40)), 128);
        // Fast: never more than the configured batch.
        assert_eq!(next_claim(256, 256, ms(5)), 256);
        // Very slow: never fewer than the floor.
        assert_eq!(next_claim(256, 10, ms(500)), MIN_CLAIM);
        // A batch size below the floor stays the batch size.
        assert_eq!(next_claim(4, 4, ms(500)), 4);
        // Nothing measured: the batch size.
        assert_eq!(next_claim(256, 0, ms(0)), 256);
    }
}
