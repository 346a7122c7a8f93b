//! One Stripe call at a time per (customer, meter), across processes: Stripe
//! allows one concurrent meter-event call per customer and meter. Within a process
//! the reporter already sends a pair's outcomes one after another; on PostgreSQL,
//! where several replicas report, a session-level advisory lock on a connection
//! of its own (from the store's pool of lock connections, never the pool the
//! writes use) keeps a pair with one process at a time. No transaction is open
//! while the lock is held; if the process dies, the connection closes and the
//! lock goes with it. A connection goes back to its pool only after PostgreSQL
//! said the lock was released; otherwise it is closed.

use super::{Backend, Store, StoreError};
use sha2::{Digest, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::Any;

/// Held while one process reports a (customer, meter) pair.
pub struct PairLock {
    held: Option<(PoolConnection<Any>, i64)>,
}

/// The advisory-lock key of a pair: stable across processes and versions.
pub fn pair_key(customer: &str, meter: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(b"outcome-meter:pair:");
    h.update(customer.as_bytes());
    h.update([0]);
    h.update(meter.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

impl Store {
    /// Take the pair, or `None` when another process is reporting it right now.
    pub async fn try_lock_pair(
        &self,
        customer: &str,
        meter: &str,
    ) -> Result<Option<PairLock>, StoreError> {
        if self.backend == Backend::Sqlite {
            return Ok(Some(PairLock { held: None }));
        }
        let key = pair_key(customer, meter);
        // The lock is built before asking: if this task is cancelled while the
        // reply is unread (the lock may have been granted), dropping it closes
        // the connection instead of returning it to the pool.
        let mut lock = PairLock {
            held: Some((self.locks.acquire().await?, key)),
        };
        let Some((conn, _)) = lock.held.as_mut() else {
            return Ok(None);
        };
        let taken: Result<(bool,), _> = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut **conn)
            .await;
        match taken {
            Ok((true,)) => Ok(Some(lock)),
            Ok((false,)) => {
                // Not taken: the connection holds nothing and may be reused.
                lock.held.take();
                Ok(None)
            }
            // Whether the lock was taken is unknown: dropping `lock` closes it.
            Err(e) => Err(e.into()),
        }
    }
}

impl PairLock {
    /// Unlock; the connection goes back to the lock pool once PostgreSQL says
    /// the lock is released, and is closed (which releases it) otherwise.
    pub async fn release(mut self) {
        let Some((conn, key)) = self.held.as_mut() else {
            return;
        };
        let unlocked: Result<(bool,), _> = sqlx::query_as("SELECT pg_advisory_unlock($1)")
            .bind(*key)
            .fetch_one(&mut **conn)
            .await;
        // Only a confirmed unlock lets the connection go back to the pool; on
        // anything else (or if this task is cancelled while waiting) `Drop`
        // closes it, which releases the lock.
        if matches!(unlocked, Ok((true,))) {
            self.held.take();
        }
    }
}

impl Drop for PairLock {
    /// Not released (a task cancelled or failed while holding it): the
    /// connection is closed, never returned with the lock held.
    fn drop(&mut self) {
        if let Some((conn, _)) = self.held.as_mut() {
            conn.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pair_keys_differ_by_customer_and_meter() {
        let a = super::pair_key("cus_1", "resolved_ticket");
        assert_eq!(a, super::pair_key("cus_1", "resolved_ticket"));
        assert_ne!(a, super::pair_key("cus_2", "resolved_ticket"));
        assert_ne!(a, super::pair_key("cus_1", "other"));
        assert_ne!(super::pair_key("a", "bc"), super::pair_key("ab", "c"));
    }
}
