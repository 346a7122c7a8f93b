//! `outcome-meter outcomes`: the outbox as a table, one page at a time.

use super::fmt_ms;
use crate::lifecycle::OutcomeState;
use crate::store::{OutcomeCursor, OutcomeFilter, OutcomeRow, Store, StoreError};
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("no outcome `{0}` to list after: --after takes an outcome id, such as the `next_after` of a previous page")]
    UnknownCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of the outcome listing (ordered by confirmation time, then id).
#[derive(Debug, Clone, Serialize)]
pub struct OutcomePage {
    /// Outcomes matching the filter, on every page.
    pub total: i64,
    /// Outcomes on this page.
    pub count: usize,
    /// The outcome id this page starts after (`--after`), if any.
    pub after: Option<String>,
    /// Pass as `--after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
    pub outcomes: Vec<OutcomeRow>,
}

impl OutcomePage {
    /// Some outcomes matching the filter are not on this page.
    pub fn is_partial(&self) -> bool {
        i64::try_from(self.count).map_or(true, |n| n < self.total)
    }
}

/// Where outcome `id` stands in the listing, for `--after`.
pub async fn cursor(store: &Store, id: &str) -> Result<OutcomeCursor, PageError> {
    store
        .outcome_cursor(id)
        .await?
        .ok_or_else(|| PageError::UnknownCursor(id.to_string()))
}

/// The outcomes matching `filter` after `filter.after` (exclusive), at most
/// `filter.limit` of them (0: all), with the total and the cursor of the next page.
pub async fn page(store: &Store, filter: &OutcomeFilter) -> Result<OutcomePage, StoreError> {
    // One row more than asked says whether there is a next page.
    let probe = OutcomeFilter {
        limit: if filter.limit == 0 {
            0
        } else {
            filter.limit.saturating_add(1)
        },
        ..filter.clone()
    };
    let mut outcomes = store.list_outcomes(&probe).await?;
    let more = filter.limit != 0 && outcomes.len() > filter.limit as usize;
    if more {
        outcomes.truncate(filter.limit as usize);
    }
    let next_after = if more {
        outcomes.last().map(|o| o.id.clone())
    } else {
        None
    };
    Ok(OutcomePage {
        total: store.count_outcomes(filter).await?,
        count: outcomes.len(),
        after: filter.after.as_ref().map(|c| c.id.clone()),
        next_after,
        outcomes,
    })
}

pub fn render(page: &OutcomePage) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36} {:<10} {:<10} {:<14} {:>4} {:<21} {:<20} {:>5} {:<14} stripe",
        "outcome", "tenant", "helpdesk", "ticket", "seq", "confirmed", "meter", "value", "state"
    );
    for o in &page.outcomes {
        let _ = writeln!(
            s,
            "{:<36} {:<10} {:<10} {:<14} {:>4} {:<21} {:<20} {:>5} {:<14} {}",
            o.id,
            o.tenant,
            o.provider,
            o.ticket_id,
            o.seq,
            fmt_ms(o.confirmed_at),
            o.event_name,
            o.value,
            state_column(o),
            stripe_column(o)
        );
    }
    s.push_str(&footer(page));
    s
}

/// The state, and for a reported outcome the Stripe mode it was reported in
/// (`reported (test)` is not billed in live mode).
fn state_column(o: &OutcomeRow) -> String {
    match (o.state, o.reported_mode.as_deref()) {
        (OutcomeState::Reported, Some(mode)) if o.sink == crate::sink::Sink::Metronome => {
            format!("reported to Metronome ({mode})")
        }
        (OutcomeState::Reported, Some(mode)) => format!("reported ({mode})"),
        (state, _) => state.to_string(),
    }
}

/// Stripe's error for an outcome not reported, else its request id.
fn stripe_column(o: &OutcomeRow) -> String {
    match (&o.stripe_request_id, &o.last_error) {
        (_, Some(e)) if o.state != OutcomeState::Reported => e.clone(),
        (Some(r), _) => r.clone(),
        _ => String::new(),
    }
}

/// The total, and when this page is not everything, how to get the rest.
fn footer(page: &OutcomePage) -> String {
    if !page.is_partial() {
        return format!("{} outcome(s)\n", page.total);
    }
    let mut s = format!("showing {} of {} outcome(s)", page.count, page.total);
    if let Some(after) = &page.after {
        let _ = write!(s, " after {after}");
    }
    match &page.next_after {
        Some(next) => {
            let _ = write!(
                s,
                "\nnext page: --after {next} (--limit N sets the page size, --limit 0 lists all)"
            );
        }
        None => s.push_str("; this is the last page"),
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(total: i64, count: usize, after: Option<&str>, next: Option<&str>) -> OutcomePage {
        OutcomePage {
            total,
            count,
            after: after.map(str::to_string),
            next_after: next.map(str::to_string),
            outcomes: Vec::new(),
        }
    }

    #[test]
    fn a_complete_listing_prints_the_total() {
        assert_eq!(footer(&page(3, 3, None, None)), "3 outcome(s)\n");
        assert_eq!(footer(&page(0, 0, None, None)), "0 outcome(s)\n");
    }

    #[test]
    fn a_cut_listing_says_so_and_how_to_go_on() {
        let f = footer(&page(1224, 100, None, Some("om_x")));
        assert!(f.starts_with("showing 100 of 1224 outcome(s)\n"), "{f}");
        assert!(f.contains("--after om_x"), "{f}");
        let f = footer(&page(1224, 24, Some("om_y"), None));
        assert_eq!(
            f,
            "showing 24 of 1224 outcome(s) after om_y; this is the last page\n"
        );
    }
}
