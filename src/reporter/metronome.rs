//! The `metronome` sink: not wired yet (issue 15). Outcomes and reversals frozen to
//! it are held, unsent, with the reason, until it is.

use super::{Reporter, Tasks};
use crate::clock::to_millis;
use crate::sink::Sink;
use crate::store::{ClaimedOutcome, ClaimedReversal, SetAside, StoreError};
use std::sync::Arc;
use tokio::sync::Semaphore;

const NOT_WIRED: &str = "this build cannot send to this sink yet; held unsent";

impl Reporter {
    pub(super) fn spawn_metronome(
        &self,
        claimed: Vec<ClaimedOutcome>,
        _permits: &Arc<Semaphore>,
        tasks: &mut Tasks,
    ) {
        let me = self.clone();
        tasks.spawn(async move {
            let next = to_millis(me.clock.now()) + 5 * 60_000;
            for o in &claimed {
                tracing::warn!(outcome = %o.id, sink = %Sink::Metronome, "{NOT_WIRED}");
                me.store
                    .set_aside(&o.id, o.lease_until, NOT_WIRED, SetAside::RetryAt(next))
                    .await?;
            }
            Ok(())
        });
    }

    pub(super) async fn reverse_metronome(&self, r: &ClaimedReversal) -> Result<(), StoreError> {
        let next = to_millis(self.clock.now()) + 5 * 60_000;
        tracing::warn!(outcome = %r.outcome_id, sink = %Sink::Metronome, "{NOT_WIRED}");
        self.store.postpone_reversal(&r.outcome_id, next).await
    }
}
