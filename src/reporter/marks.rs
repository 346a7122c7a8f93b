//! The reporter's group commit. What ends the handling of a claimed outcome (a
//! mark: the attempt of a call and the outcome's new state, or the outcome set
//! aside) is written by one task, every mark that arrived while the last group
//! was being written in one transaction: one commit, one fsync, for many calls.
//! Each sender is told when its own mark is committed, or that it was not (the
//! group's one failure, told to every mark in it: none is lost in silence).
//!
//! A pair's task hands a mark over and goes on with its next call; it waits for
//! every one of its marks before it gives its pair up (the pair lock, the end of
//! the pass). A mark lost in a crash leaves its outcome pending under its lease,
//! with `calls` unchanged: the resend, once the lease has expired, carries the
//! same identifier and the same idempotency key, as a call whose answer was lost.

use crate::store::{OutcomeMark, Store, StoreError};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Marks per transaction at most.
pub(crate) const MARKS_PER_COMMIT: usize = 512;

type Committed = Result<(), Arc<StoreError>>;
type Reply = oneshot::Sender<Committed>;

/// Where the writer commits a group. The reporter uses the [`Store`]; the unit
/// tests swap in sinks that fail or record.
pub(crate) trait MarkSink: Send + Sync + 'static {
    /// Commit `marks`, all or none.
    fn write(&self, marks: &[OutcomeMark]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

impl MarkSink for Store {
    fn write(&self, marks: &[OutcomeMark]) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.record_marks(marks)
    }
}

/// Hands marks to the writer task (which ends once every clone is dropped,
/// after writing what it already received).
#[derive(Clone)]
pub(crate) struct MarkWriter {
    tx: mpsc::Sender<(OutcomeMark, Reply)>,
}

/// A mark handed to the writer, not yet known to be committed.
#[must_use = "a mark is committed only once its sender has heard so"]
pub(crate) struct PendingMark(oneshot::Receiver<Committed>);

impl PendingMark {
    /// Wait until the mark is committed, or say why it was not.
    pub(crate) async fn committed(self) -> Result<(), StoreError> {
        answer(self.0.await)
    }

    /// Without waiting: `None` while its group is being written.
    fn try_committed(&mut self) -> Option<Result<(), StoreError>> {
        match self.0.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => None,
            Ok(r) => Some(answer(Ok(r))),
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(writer_gone())),
        }
    }
}

fn answer(r: Result<Committed, oneshot::error::RecvError>) -> Result<(), StoreError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StoreError::Group(e)),
        Err(_) => Err(writer_gone()),
    }
}

/// The writer stopped (its task panicked or its runtime is shutting down)
/// before answering: the mark may not be committed.
pub(crate) fn writer_gone() -> StoreError {
    StoreError::Group(Arc::new(StoreError::from(sqlx::Error::WorkerCrashed)))
}

/// A group (or a single mark) that was not written, logged once.
fn refused(e: StoreError, marks: usize) -> Arc<StoreError> {
    tracing::error!(error = %e, marks, "could not record the reporter's marks; their outcomes stay pending under their claims, resent after the lease with the same keys");
    Arc::new(e)
}

impl MarkWriter {
    /// Start the writer task, writing up to `max_batch` marks per transaction.
    pub(crate) fn spawn<S: MarkSink>(sink: S, max_batch: usize) -> MarkWriter {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<(OutcomeMark, Reply)>(max_batch * 4);
        tokio::spawn(async move {
            let mut group = Vec::with_capacity(max_batch);
            while let Some(first) = rx.recv().await {
                group.push(first);
                while group.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => group.push(item),
                        Err(_) => break,
                    }
                }
                let (marks, replies): (Vec<OutcomeMark>, Vec<Reply>) = group.drain(..).unzip();
                match sink.write(&marks).await {
                    Ok(()) => {
                        for reply in replies {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    // One mark the database refuses for good must not fail the others
                    // (other pairs' calls Stripe accepted): each is written alone.
                    Err(e) if !e.is_transient() && marks.len() > 1 => {
                        tracing::warn!(error = %e, marks = marks.len(), "a group of the reporter's marks was refused; writing them one by one");
                        for (mark, reply) in marks.iter().zip(replies) {
                            let alone = sink.write(std::slice::from_ref(mark)).await;
                            let _ = reply.send(alone.map_err(|e| refused(e, 1)));
                        }
                    }
                    Err(e) => {
                        let e = refused(e, marks.len());
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        MarkWriter { tx }
    }

    /// Whether the writer task has stopped: no mark handed now would be
    /// committed, so no call may be made.
    pub(crate) fn is_gone(&self) -> bool {
        self.tx.is_closed()
    }

    /// Hand `mark` to the writer; its commit is awaited from the answer.
    pub(crate) async fn hand(&self, mark: OutcomeMark) -> PendingMark {
        let (reply, wait) = oneshot::channel();
        // A writer that is gone drops the reply with the refused message: the
        // mark then answers `writer_gone`.
        let _ = self.tx.send((mark, reply)).await;
        PendingMark(wait)
    }
}

/// The marks one task has handed over and not yet seen committed.
#[derive(Default)]
pub(crate) struct Outstanding(VecDeque<PendingMark>);

impl Outstanding {
    pub(crate) fn push(&mut self, mark: PendingMark) {
        self.0.push_back(mark);
    }

    /// Forget the marks already committed, oldest first; the first that failed
    /// is the error (its group's failure). Never waits.
    pub(crate) fn check(&mut self) -> Result<(), StoreError> {
        while let Some(first) = self.0.front_mut() {
            match first.try_committed() {
                None => return Ok(()),
                Some(r) => {
                    self.0.pop_front();
                    r?;
                }
            }
        }
        Ok(())
    }

    /// Wait for every mark (none is left behind); the first failure is the result.
    pub(crate) async fn all_committed(self) -> Result<(), StoreError> {
        let mut first_err = None;
        for mark in self.0 {
            if let Err(e) = mark.committed().await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SetAside;
    use crate::time::Millis;
    use std::sync::Mutex;

    fn mark(id: &str) -> OutcomeMark {
        OutcomeMark::SetAside {
            id: id.into(),
            token: Millis::EPOCH,
            reason: "test".into(),
            how: SetAside::Park,
        }
    }

    /// Records each group it is given; fails the groups holding `fail`.
    #[derive(Clone, Default)]
    struct Recording {
        groups: Arc<Mutex<Vec<Vec<String>>>>,
        fail: Option<&'static str>,
        /// The failure is storage's (transient), not the data's.
        transient: bool,
    }

    impl MarkSink for Recording {
        fn write(
            &self,
            marks: &[OutcomeMark],
        ) -> impl Future<Output = Result<(), StoreError>> + Send {
            let ids: Vec<String> = marks.iter().map(|m| m.outcome_id().to_string()).collect();
            let failed = self.fail.is_some_and(|f| ids.iter().any(|id| id == f));
            self.groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ids);
            std::future::ready(if failed && self.transient {
                Err(StoreError::TimedOut(std::time::Duration::from_secs(1)))
            } else if failed {
                Err(StoreError::corrupt("the group's commit failed"))
            } else {
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn marks_handed_together_are_committed_together_and_all_land() {
        let sink = Recording::default();
        let w = MarkWriter::spawn(sink.clone(), 64);
        let mut out = Outstanding::default();
        for i in 0..100 {
            out.push(w.hand(mark(&format!("o{i}"))).await);
        }
        out.all_committed().await.unwrap();
        let groups = sink.groups.lock().unwrap().clone();
        let written: Vec<String> = groups.iter().flatten().cloned().collect();
        let expected: Vec<String> = (0..100).map(|i| format!("o{i}")).collect();
        assert_eq!(written, expected, "every mark, once, in order");
        assert!(
            groups.len() < 100,
            "marks share commits: {} groups",
            groups.len()
        );
        assert!(groups.iter().all(|g| g.len() <= 64));
    }

    #[tokio::test]
    async fn a_group_storage_could_not_commit_fails_every_mark_in_it() {
        let sink = Recording {
            fail: Some("bad"),
            transient: true,
            ..Recording::default()
        };
        // One group: the writer task has not run yet when all three are handed over.
        let w = MarkWriter::spawn(sink.clone(), 64);
        let a = w.hand(mark("a")).await;
        let bad = w.hand(mark("bad")).await;
        let c = w.hand(mark("c")).await;
        let results = [
            a.committed().await,
            bad.committed().await,
            c.committed().await,
        ];
        let groups = sink.groups.lock().unwrap().clone();
        assert_eq!(groups, vec![vec!["a", "bad", "c"]]);
        for r in results {
            let e = r.unwrap_err();
            assert!(matches!(e, StoreError::Group(_)), "{e}");
            assert!(e.is_transient(), "storage's failure, retried: {e}");
        }
        // A later group commits on its own.
        w.hand(mark("d")).await.committed().await.unwrap();
    }

    #[tokio::test]
    async fn a_mark_the_database_refuses_fails_alone_and_the_rest_of_its_group_lands() {
        let sink = Recording {
            fail: Some("bad"),
            ..Recording::default()
        };
        let w = MarkWriter::spawn(sink.clone(), 64);
        let a = w.hand(mark("a")).await;
        let bad = w.hand(mark("bad")).await;
        let c = w.hand(mark("c")).await;
        a.committed().await.unwrap();
        let e = bad.committed().await.unwrap_err();
        assert!(e.to_string().contains("the group's commit failed"), "{e}");
        assert!(!e.is_transient(), "{e}");
        c.committed().await.unwrap();
        let groups = sink.groups.lock().unwrap().clone();
        assert_eq!(
            groups,
            vec![vec!["a", "bad", "c"], vec!["a"], vec!["bad"], vec!["c"]],
            "the group, then each mark alone"
        );
    }

    #[tokio::test]
    async fn outstanding_marks_report_the_first_failure_and_wait_for_all() {
        let sink = Recording {
            fail: Some("bad"),
            ..Recording::default()
        };
        let w = MarkWriter::spawn(sink.clone(), 1);
        let mut out = Outstanding::default();
        out.push(w.hand(mark("a")).await);
        out.push(w.hand(mark("bad")).await);
        out.push(w.hand(mark("c")).await);
        let e = out.all_committed().await.unwrap_err();
        assert!(e.to_string().contains("the group's commit failed"), "{e}");
        let groups = sink.groups.lock().unwrap().clone();
        assert_eq!(
            groups,
            vec![vec!["a"], vec!["bad"], vec!["c"]],
            "all written"
        );
    }

    #[tokio::test]
    async fn a_writer_that_is_gone_fails_its_marks() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let w = MarkWriter { tx };
        assert!(w.is_gone(), "no call is made without a writer");
        let e = w.hand(mark("a")).await.committed().await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }
}
