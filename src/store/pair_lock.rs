//! One Stripe call at a time per (customer, meter), across processes: Stripe
//! allows one concurrent meter-event call per customer and meter. Within a process
//! the reporter already sends a pair's outcomes one after another; on PostgreSQL,
//! where several replicas report, a session-level advisory lock on a connection
//! of its own (from the store's pool of lock connections, never the pool the
//! writes use) keeps a pair with one process at a time. No transaction is open
//! while the lock is held; if the process dies, the connection closes and the
//! lock goes with it. A connection goes back to its pool only after PostgreSQL
//! said the lock was released; otherwise it is closed.

use super::close_unless_kept::CloseUnlessKept;
use super::{Backend, Store, StoreError};
use sha2::{Digest, Sha256};

/// Held while one process reports a (customer, meter) pair. Dropped without
/// [`PairLock::release`] (a task cancelled or failed while holding it), its
/// connection is closed, never returned with the lock held.
pub struct PairLock {
    held: Option<(CloseUnlessKept, i64)>,
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
        // Closed unless PostgreSQL says it holds no lock (also when this task
        // is cancelled while the reply is unread: the lock may have been granted).
        let mut conn = CloseUnlessKept::new(self.locks.acquire().await?);
        let taken: Result<(bool,), _> = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        match taken {
            Ok((true,)) => Ok(Some(PairLock {
                held: Some((conn, key)),
            })),
            Ok((false,)) => {
                // Not taken: the connection holds nothing and may be reused.
                conn.keep();
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl PairLock {
    /// Unlock; the connection goes back to the lock pool once PostgreSQL says
    /// the lock is released, and is closed (which releases it) otherwise, also
    /// if this task is cancelled while waiting.
    pub async fn release(mut self) {
        let Some((mut conn, key)) = self.held.take() else {
            return;
        };
        let unlocked: Result<(bool,), _> = sqlx::query_as("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        if matches!(unlocked, Ok((true,))) {
            conn.keep();
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
