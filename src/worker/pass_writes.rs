//! The writes of a confirmation pass, kept until a read needs them (a cap
//! counts billed outcomes, a clawback reads its outcome) or the pass ends,
//! then made with multi-row statements per table (a few per table: the groups
//! of `store::rows::groups`): a pass of hundreds of tickets writes in a few
//! dozen statements instead of four per ticket.

use crate::lifecycle::OutcomeState;
use crate::store::{DecisionWrite, NewOutcome, StoreError, TicketKey, TicketSave, Tx};
use crate::ticket::Settled;
use crate::time::Millis;

/// Writes not made yet, in the order they are made; the tickets' keys are
/// borrowed from the pass's due list.
#[derive(Default)]
pub(super) struct PassWrites<'k> {
    outcomes: Vec<NewOutcome>,
    decisions: Vec<DecisionWrite>,
    /// Each ticket's decisions up to this sequence become final.
    finalized: Vec<(&'k TicketKey, u32)>,
    saves: Vec<TicketSave<'k>>,
    /// Outcomes confirmed by what was written so far: new, and not capped.
    confirmed: usize,
}

impl<'k> PassWrites<'k> {
    pub(super) fn outcome(&mut self, o: NewOutcome) {
        self.outcomes.push(o);
    }

    pub(super) fn decision(&mut self, d: DecisionWrite) {
        self.decisions.push(d);
    }

    pub(super) fn finalize_through(&mut self, key: &'k TicketKey, seq: u32) {
        self.finalized.push((key, seq));
    }

    pub(super) fn save(
        &mut self,
        key: &'k TicketKey,
        settled: Option<Settled>,
        settle_at: Option<Millis>,
    ) {
        self.saves.push(TicketSave {
            key,
            settled,
            settle_at,
        });
    }

    /// Make the writes kept so far, in the order a ticket is written one by
    /// one: outcomes, decisions, the decisions made final, the tickets. (Each
    /// ticket is decided once per pass, so no statement touches a row twice.)
    pub(super) async fn flush(&mut self, tx: &mut Tx, now: Millis) -> Result<(), StoreError> {
        if !self.outcomes.is_empty() {
            let new = tx.insert_outcomes(&self.outcomes).await?;
            self.confirmed += self
                .outcomes
                .iter()
                .filter(|o| o.state == OutcomeState::Pending && new.contains(&o.id))
                .count();
            self.outcomes.clear();
        }
        if !self.decisions.is_empty() {
            tx.write_decisions(&self.decisions).await?;
            self.decisions.clear();
        }
        if !self.finalized.is_empty() {
            tx.finalize_decisions(&self.finalized).await?;
            self.finalized.clear();
        }
        if !self.saves.is_empty() {
            tx.save_tickets(&self.saves, now).await?;
            self.saves.clear();
        }
        Ok(())
    }

    /// Outcomes confirmed by the writes made (see [`PassWrites::flush`]).
    pub(super) fn confirmed(&self) -> usize {
        self.confirmed
    }
}
