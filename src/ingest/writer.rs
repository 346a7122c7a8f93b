//! Group commit: one task writes deliveries in batches (one transaction, one
//! fsync for many requests) and answers each request only after its commit.

use crate::store::{NewDelivery, Store, StoreError, Stored};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<Stored, ()>>;

/// Where the writer commits a batch. The service uses the [`Store`]; the ingest
/// benchmark swaps in a no-op to measure the ceiling of everything else.
pub trait DeliverySink: Send + Sync + 'static {
    /// Commit `batch` durably (all or nothing) and say, per delivery, whether it
    /// is new or a duplicate of one stored before.
    fn write(
        &self,
        batch: &[NewDelivery],
    ) -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send;
}

impl DeliverySink for Store {
    fn write(
        &self,
        batch: &[NewDelivery],
    ) -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send {
        self.insert_deliveries(batch)
    }
}

#[derive(Clone)]
pub struct DeliveryWriter {
    tx: mpsc::Sender<(NewDelivery, Reply)>,
}

impl DeliveryWriter {
    /// Start the writer task. It ends when every `DeliveryWriter` clone is dropped,
    /// after committing what it already received.
    ///
    /// A batch that storage has not committed within `timeout` is answered 503
    /// (it may still commit: the sender's retry is then a duplicate), so a
    /// database outage is answered within `timeout`, not the pool's wait.
    pub fn spawn<S: DeliverySink>(
        sink: S,
        max_batch: usize,
        timeout: Duration,
    ) -> (DeliveryWriter, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<(NewDelivery, Reply)>(max_batch.max(1) * 4);
        let handle = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let (rows, replies): (Vec<NewDelivery>, Vec<Reply>) = batch.drain(..).unzip();
                let written = tokio::time::timeout(timeout, sink.write(&rows))
                    .await
                    .unwrap_or(Err(StoreError::TimedOut(timeout)));
                match written {
                    Ok(results) => {
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, n = rows.len(), "could not store deliveries; answering 503");
                        for reply in replies {
                            let _ = reply.send(Err(()));
                        }
                    }
                }
            }
        });
        (DeliveryWriter { tx }, handle)
    }

    /// Store one delivery; resolves after it is committed.
    pub async fn store(&self, d: NewDelivery) -> Result<Stored, ()> {
        let (reply, wait) = oneshot::channel();
        self.tx.send((d, reply)).await.map_err(|_| ())?;
        wait.await.map_err(|_| ())?
    }
}
