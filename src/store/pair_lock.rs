//! One Stripe call at a time per (customer, meter), across processes: Stripe
//! allows one concurrent meter-event call per customer and meter. Within a process
//! the reporter already sends a pair's outcomes one after another; on PostgreSQL,
//! where several replicas report, a session-level advisory lock on a dedicated
//! connection keeps a pair with one process at a time. No transaction is open
//! while the lock is held; if the process dies, the connection closes and the
//! lock goes with it.

use super::{Backend, Store, StoreError};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection};

/// Held while one process reports a (customer, meter) pair.
pub struct PairLock {
    held: Option<(AnyConnection, i64)>,
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
        // Detached: never returned to the pool with the lock still held.
        let mut conn = self.pool.acquire().await?.detach();
        let key = pair_key(customer, meter);
        let (taken,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if taken {
            Ok(Some(PairLock {
                held: Some((conn, key)),
            }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

impl PairLock {
    /// Unlock and close the dedicated connection.
    pub async fn release(self) {
        if let Some((mut conn, key)) = self.held {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut conn)
                .await;
            let _ = conn.close().await;
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
