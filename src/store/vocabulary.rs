//! What one helpdesk of one tenant sent recently: the distinct tags, channels
//! and actor ids of its stored events, each with the number of tickets it was on
//! (`check`'s typo warnings). Bounded: grouped in the database, most used first,
//! at most `limit` values of each kind.

use super::{col, Backend, Store, StoreError};
use crate::contract::lint::{Seen, Vocabulary};
use crate::time::Millis;

impl Backend {
    /// A `FROM` item with one row (`j.value`, text) per element of the JSON
    /// array stored in `column`.
    fn json_elements(self, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_each({column}) AS j"),
            Backend::Postgres => format!("json_array_elements_text({column}::json) AS j(value)"),
        }
    }
}

impl Store {
    /// Tags, channels and actor ids of `tenant`'s `provider` events that happened
    /// at or after `since` (Unix millis), most used first, at most `limit` each.
    /// `None` when there is no such event at all.
    pub async fn vocabulary(
        &self,
        tenant: &str,
        provider: &str,
        since: Millis,
        limit: u32,
    ) -> Result<Option<Vocabulary>, StoreError> {
        let any = sqlx::query(
            "SELECT ticket_id FROM ticket_events WHERE tenant = $1 AND provider = $2 AND occurred_at >= $3 LIMIT 1",
        )
        .bind(tenant)
        .bind(provider)
        .bind(since)
        .fetch_optional(&self.reads)
        .await?;
        if any.is_none() {
            return Ok(None);
        }
        let tags = format!(
            "SELECT j.value AS name, COUNT(DISTINCT e.ticket_id) AS tickets FROM ticket_events e, {} \
             WHERE e.tenant = $1 AND e.provider = $2 AND e.occurred_at >= $3 \
             GROUP BY j.value ORDER BY tickets DESC, name LIMIT $4",
            self.backend.json_elements("e.tags")
        );
        let column = |c: &str| {
            format!(
                "SELECT {c} AS name, COUNT(DISTINCT ticket_id) AS tickets FROM ticket_events \
                 WHERE tenant = $1 AND provider = $2 AND occurred_at >= $3 AND {c} IS NOT NULL \
                 GROUP BY {c} ORDER BY tickets DESC, name LIMIT $4"
            )
        };
        let mut v = Vocabulary::default();
        for (sql, into) in [
            (tags, &mut v.tags),
            (column("channel"), &mut v.channels),
            (column("actor_id"), &mut v.actor_ids),
        ] {
            let rows = sqlx::query(&sql)
                .bind(tenant)
                .bind(provider)
                .bind(since)
                .bind(i64::from(limit))
                .fetch_all(&self.reads)
                .await?;
            *into = rows
                .iter()
                .map(|r| {
                    Ok(Seen {
                        value: col(r, "name")?,
                        tickets: col(r, "tickets")?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
        }
        let cut = |l: &[Seen]| l.len() >= limit as usize;
        v.truncated = cut(&v.tags) || cut(&v.channels) || cut(&v.actor_ids);
        Ok(Some(v))
    }
}
