//! Group commit: one task writes deliveries in batches (one transaction, one
//! fsync for many requests) and answers each request only after its commit.

use crate::store::{NewDelivery, Store, StoreError, Stored};
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
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
    /// Keys committed lately: a redelivery of one is answered without a write.
    recent: Arc<Mutex<RecentKeys>>,
}

/// The keys of the last [`RecentKeys::CAPACITY`] deliveries this process
/// committed (new or duplicate), oldest dropped first. Whole keys, never a
/// hash of them: a false "duplicate" would lose a delivery. A key not found
/// here still goes to the database, whose unique key decides.
#[derive(Debug, Default)]
pub(crate) struct RecentKeys {
    set: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl RecentKeys {
    /// About 16 MiB of keys at most: helpdesks retry within minutes.
    pub(crate) const CAPACITY: usize = 65_536;

    /// The whole key, one string: tenant ids and provider names never hold a NUL.
    fn key(d: &NewDelivery) -> String {
        format!("{}\0{}\0{}", d.tenant, d.provider, d.delivery_key)
    }

    pub(crate) fn contains(&self, d: &NewDelivery) -> bool {
        self.set.contains(Self::key(d).as_str())
    }

    pub(crate) fn insert(&mut self, d: &NewDelivery) {
        let key: Arc<str> = Self::key(d).into();
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > Self::CAPACITY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
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
        let recent = Arc::new(Mutex::new(RecentKeys::default()));
        let committed = recent.clone();
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
                        {
                            let mut recent = lock(&committed);
                            for row in &rows {
                                recent.insert(row);
                            }
                        }
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
        (DeliveryWriter { tx, recent }, handle)
    }

    /// Store one delivery; resolves after it is committed. A redelivery of a
    /// key committed lately is answered at once, without a write.
    pub async fn store(&self, d: NewDelivery) -> Result<Stored, ()> {
        if lock(&self.recent).contains(&d) {
            return Ok(Stored::Duplicate);
        }
        let (reply, wait) = oneshot::channel();
        self.tx.send((d, reply)).await.map_err(|_| ())?;
        wait.await.map_err(|_| ())?
    }
}

fn lock(recent: &Mutex<RecentKeys>) -> std::sync::MutexGuard<'_, RecentKeys> {
    recent
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(key: &str) -> NewDelivery {
        NewDelivery {
            tenant: "acme".into(),
            provider: "generic".into(),
            delivery_key: key.into(),
            received_at: crate::time::Millis::EPOCH,
            headers: "{}".into(),
            body: Vec::new(),
        }
    }

    #[test]
    fn recent_keys_are_exact_and_bounded() {
        let mut r = RecentKeys::default();
        r.insert(&delivery("a"));
        assert!(r.contains(&delivery("a")));
        assert!(!r.contains(&delivery("b")));
        let mut other_tenant = delivery("a");
        other_tenant.tenant = "other".into();
        assert!(!r.contains(&other_tenant), "the whole key counts");
        for i in 0..RecentKeys::CAPACITY {
            r.insert(&delivery(&format!("k{i}")));
        }
        assert!(!r.contains(&delivery("a")), "the oldest is dropped");
        assert_eq!(r.set.len(), RecentKeys::CAPACITY);
        assert_eq!(r.order.len(), RecentKeys::CAPACITY);
    }

    /// A sink that counts its writes.
    struct Counting(Arc<std::sync::atomic::AtomicUsize>);

    impl DeliverySink for Counting {
        fn write(
            &self,
            batch: &[NewDelivery],
        ) -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send {
            self.0
                .fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
            std::future::ready(Ok(vec![Stored::New; batch.len()]))
        }
    }

    #[tokio::test]
    async fn a_redelivery_of_a_recent_key_is_answered_without_a_write() {
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (w, task) = DeliveryWriter::spawn(Counting(writes.clone()), 8, Duration::from_secs(5));
        assert_eq!(w.store(delivery("a")).await, Ok(Stored::New));
        assert_eq!(w.store(delivery("a")).await, Ok(Stored::Duplicate));
        assert_eq!(w.store(delivery("b")).await, Ok(Stored::New));
        assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 2);
        drop(w);
        let _ = task.await;
    }
}
