//! SQLite has one writer connection ([`super::Store`]). Who gets it next:
//!
//! - The webhooks' group commit takes no turn: it asks for the connection
//!   directly, so it waits behind at most the one statement or transaction in
//!   progress, never behind a queue of them.
//! - Everything else (worker, confirmer, reporter, operators) takes a
//!   background turn first, one at a time. While webhooks keep coming, a turn
//!   that held the writer for `d` is followed by `INGEST_SHARE × d` in which
//!   the next background turn does not start: under load the receiver aims
//!   to keep about that share of the writer, and the background roles the
//!   rest (never starved; a target, since one long turn takes what it
//!   takes). When no webhook has been committed since the last turn, the next
//!   one starts at once: the back half gets the whole writer when the front
//!   is quiet.
//!
//! The rule is pure ([`Share`]); [`WriterTurns`] applies it with tokio's
//! primitives.

use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{Notify, OwnedMutexGuard};
use tokio::time::Instant;

/// While webhooks keep coming, the receiver gets this many times as much of
/// the writer's time as the background turn before it held (3: about three
/// quarters for the receiver, about a quarter for the rest).
pub(crate) const INGEST_SHARE: u32 = 3;

/// The rule: when the next background turn may start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    /// The end of the receiver's share after the last background turn.
    not_before: Option<Instant>,
    /// A webhook commit took the writer since the last background turn ended.
    ingest_since: bool,
    /// Webhook commits waiting for the writer now.
    ingest_waiting: usize,
}

impl Share {
    pub(crate) const fn new() -> Share {
        Share {
            not_before: None,
            ingest_since: false,
            ingest_waiting: 0,
        }
    }

    /// When the next background turn may start (`None`: now). Only while the
    /// receiver is busy (a commit since the last turn, or one waiting) does
    /// its share hold the turn back.
    pub(crate) fn background_may_start(&self, now: Instant) -> Option<Instant> {
        let busy = self.ingest_since || self.ingest_waiting > 0;
        match self.not_before {
            Some(t) if busy && t > now => Some(t),
            _ => None,
        }
    }

    /// A background turn held the writer from `started` to `ended`.
    pub(crate) fn background_ended(&mut self, started: Instant, ended: Instant) {
        let held = ended.saturating_duration_since(started);
        self.not_before = Some(ended + held * INGEST_SHARE);
        self.ingest_since = false;
    }

    pub(crate) fn ingest_asks(&mut self) {
        self.ingest_waiting += 1;
    }

    /// A webhook commit got the writer (or gave up asking).
    pub(crate) fn ingest_got(&mut self) {
        self.ingest_waiting = self.ingest_waiting.saturating_sub(1);
        self.ingest_since = true;
    }
}

/// The turns of the writer connection (SQLite). See the module's text.
#[derive(Debug)]
pub(crate) struct WriterTurns {
    /// One background turn at a time, in order of asking.
    background: Arc<tokio::sync::Mutex<()>>,
    share: Mutex<Share>,
    /// Told when a background turn ends or a webhook commit gets the writer.
    changed: Notify,
}

impl Default for WriterTurns {
    fn default() -> Self {
        WriterTurns {
            background: Arc::default(),
            share: Mutex::new(Share::new()),
            changed: Notify::new(),
        }
    }
}

impl WriterTurns {
    fn share(&self) -> std::sync::MutexGuard<'_, Share> {
        self.share.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait for a background turn: the one before it ended, and the
    /// receiver's share after it has passed (or the receiver is quiet). Hold
    /// it while using the writer; dropping it ends the turn.
    pub(crate) async fn background(self: &Arc<Self>) -> BackgroundTurn {
        let guard = self.background.clone().lock_owned().await;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before reading the share: no wake-up is missed.
            changed.as_mut().enable();
            let Some(until) = self.share().background_may_start(Instant::now()) else {
                break;
            };
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
        BackgroundTurn {
            _guard: guard,
            turns: self.clone(),
            started: Instant::now(),
        }
    }

    /// A webhook commit is about to ask for the writer; call
    /// [`IngestAsk::got`] (or drop it) once it has the connection.
    pub(crate) fn ingest(self: &Arc<Self>) -> IngestAsk {
        self.share().ingest_asks();
        IngestAsk {
            turns: self.clone(),
        }
    }
}

/// A background role's turn of the writer; ends when dropped.
#[derive(Debug)]
pub(crate) struct BackgroundTurn {
    _guard: OwnedMutexGuard<()>,
    turns: Arc<WriterTurns>,
    started: Instant,
}

impl BackgroundTurn {
    /// The turn has the writer connection now: its hold is timed from here,
    /// not from when the turn began waiting for the connection.
    pub(crate) fn holding(&mut self) {
        self.started = Instant::now();
    }
}

impl Drop for BackgroundTurn {
    fn drop(&mut self) {
        self.turns
            .share()
            .background_ended(self.started, Instant::now());
        self.turns.changed.notify_waiters();
    }
}

/// A webhook commit asking for the writer: background turns hold back while
/// it waits.
#[derive(Debug)]
pub(crate) struct IngestAsk {
    turns: Arc<WriterTurns>,
}

impl Drop for IngestAsk {
    fn drop(&mut self) {
        self.turns.share().ingest_got();
        self.turns.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn a_quiet_receiver_never_holds_a_turn_back() {
        let t0 = Instant::now();
        let mut s = Share::new();
        assert_eq!(s.background_may_start(t0), None, "nothing ran yet");
        s.background_ended(t0, at(t0, 20));
        // No webhook commit since: the next turn starts at once.
        assert_eq!(s.background_may_start(at(t0, 21)), None);
    }

    #[test]
    fn a_busy_receiver_gets_its_share_after_each_turn() {
        let t0 = Instant::now();
        let mut s = Share::new();
        s.background_ended(t0, at(t0, 20));
        s.ingest_asks();
        // Waiting for the writer counts as busy, before it gets it.
        assert_eq!(s.background_may_start(at(t0, 21)), Some(at(t0, 80)));
        s.ingest_got();
        assert_eq!(s.background_may_start(at(t0, 30)), Some(at(t0, 80)));
        // The share has passed: the next turn goes, however busy the receiver.
        assert_eq!(s.background_may_start(at(t0, 80)), None);
        s.ingest_asks();
        assert_eq!(s.background_may_start(at(t0, 90)), None);
    }

    #[test]
    fn the_share_follows_the_last_turn_only() {
        let t0 = Instant::now();
        let mut s = Share::new();
        s.background_ended(t0, at(t0, 40));
        s.ingest_asks();
        s.ingest_got();
        // A short turn after a long one: a short share.
        s.background_ended(at(t0, 200), at(t0, 202));
        s.ingest_asks();
        s.ingest_got();
        assert_eq!(s.background_may_start(at(t0, 203)), Some(at(t0, 208)));
    }

    #[tokio::test]
    async fn a_turn_waits_for_the_share_and_then_starts() {
        tokio::time::pause();
        let turns = Arc::new(WriterTurns::default());
        {
            let _turn = turns.background().await;
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        let asked = turns.ingest();
        drop(asked);
        let asked_at = Instant::now();
        let _next = turns.background().await;
        // Held 10 ms, then a busy receiver: its 30 ms pass before the next turn
        // (the paused clock moves when every task waits).
        assert!(Instant::now() - asked_at >= Duration::from_millis(30));
    }
}
