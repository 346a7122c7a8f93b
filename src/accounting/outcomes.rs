//! `outcome-meter outcomes`: the outbox as a table, one page at a time.

use super::fmt_ms;
use crate::lifecycle::OutcomeState;
use crate::store::{OutcomeCursor, OutcomeFilter, OutcomeRow, Store, StoreError};
use crate::time::Millis;
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
/// Printed as a table by [`render`], as JSON through [`OutcomePageView`].
#[derive(Debug, Clone)]
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

/// One page as `outcomes --json` prints it: an interface scripts read
/// (documented in docs/operations.md, "`outcomes`"), so its fields, their
/// order and their values stay as they are whatever the store's rows become.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomePageView {
    pub total: i64,
    pub count: usize,
    pub after: Option<String>,
    pub next_after: Option<String>,
    pub outcomes: Vec<OutcomeView>,
}

/// One outcome in `outcomes --json`: the stored outcome with its state and
/// sink spelled as stored, its evidence the stored JSON text, times in Unix
/// milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeView {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub ticket_id: String,
    pub seq: i64,
    pub resolved_at: i64,
    pub confirmed_at: i64,
    pub event_name: String,
    pub value: i64,
    pub stripe_customer_id: String,
    pub contract_version: String,
    pub contract_hash: String,
    pub evidence: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub stripe_request_id: Option<String>,
    pub reported_at: Option<i64>,
    pub reported_mode: Option<String>,
    pub stripe_resends: i64,
    pub sink: &'static str,
    pub sink_target: Option<String>,
}

impl From<&OutcomePage> for OutcomePageView {
    fn from(page: &OutcomePage) -> Self {
        OutcomePageView {
            total: page.total,
            count: page.count,
            after: page.after.clone(),
            next_after: page.next_after.clone(),
            outcomes: page.outcomes.iter().map(OutcomeView::from).collect(),
        }
    }
}

impl From<&OutcomeRow> for OutcomeView {
    fn from(row: &OutcomeRow) -> Self {
        OutcomeView {
            id: row.id.clone(),
            tenant: row.tenant.clone(),
            provider: row.provider.clone(),
            ticket_id: row.ticket_id.clone(),
            seq: row.seq,
            resolved_at: row.resolved_at.as_ms(),
            confirmed_at: row.confirmed_at.as_ms(),
            event_name: row.event_name.clone(),
            value: row.value,
            stripe_customer_id: row.stripe_customer_id.clone(),
            contract_version: row.contract_version.clone(),
            contract_hash: row.contract_hash.clone(),
            evidence: row.evidence.to_string(),
            state: row.state.to_string(),
            attempts: row.attempts,
            last_error: row.last_error.clone(),
            stripe_request_id: row.stripe_request_id.clone(),
            reported_at: row.reported_at.map(Millis::as_ms),
            reported_mode: row.reported_mode.clone(),
            stripe_resends: row.stripe_resends,
            sink: row.sink.as_str(),
            sink_target: row.sink_target.clone(),
        }
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

    /// The keys of a pretty-printed JSON object at `depth` (in spaces), in order.
    fn keys_at(json: &str, depth: usize) -> Vec<String> {
        let indent = " ".repeat(depth);
        json.lines()
            .filter_map(|l| l.strip_prefix(&indent))
            .filter(|l| l.starts_with('"'))
            .filter_map(|l| l.split_once("\": ").map(|(k, _)| k[1..].to_string()))
            .collect()
    }

    /// The outcome fields docs/operations.md lists for `outcomes --json`, in order.
    fn documented_fields() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let table = text
            .split_once("| field | value |")
            .map(|(_, rest)| rest)
            .unwrap_or_default();
        table
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split(" | ").next())
            .flat_map(|cell| cell.split('`').skip(1).step_by(2))
            .map(str::to_string)
            .collect()
    }

    /// `outcomes --json` is an interface (docs/operations.md): its field names
    /// and their order are pinned here.
    #[test]
    fn the_json_view_keeps_its_documented_fields() {
        let row = OutcomeRow {
            evidence: r#"{"resolver":"ai"}"#.into(),
            ..OutcomeRow::sample(
                "om_1",
                crate::lifecycle::OutcomeState::Pending,
                crate::time::Millis::EPOCH,
            )
        };
        let mut p = page(1, 1, None, None);
        p.outcomes.push(row);
        let json = serde_json::to_string_pretty(&OutcomePageView::from(&p)).unwrap_or_default();
        assert_eq!(
            keys_at(&json, 2),
            ["total", "count", "after", "next_after", "outcomes"],
            "{json}"
        );
        assert_eq!(keys_at(&json, 6), documented_fields(), "{json}");
        assert_eq!(
            keys_at(&json, 6),
            [
                "id",
                "tenant",
                "provider",
                "ticket_id",
                "seq",
                "resolved_at",
                "confirmed_at",
                "event_name",
                "value",
                "stripe_customer_id",
                "contract_version",
                "contract_hash",
                "evidence",
                "state",
                "attempts",
                "last_error",
                "stripe_request_id",
                "reported_at",
                "reported_mode",
                "stripe_resends",
                "sink",
                "sink_target",
            ],
            "{json}"
        );
        // The evidence is the stored JSON text (a string), the sink its stored name.
        assert!(
            json.contains(r#""evidence": "{\"resolver\":\"ai\"}","#),
            "{json}"
        );
        assert!(json.contains(r#""sink": "stripe_meters","#), "{json}");
        assert!(json.contains(r#""after": null,"#), "{json}");
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
