//! The statement as one CSV table, for a spreadsheet.
//!
//! Text cells can hold what a helpdesk sent (ticket ids, tags and channels in the
//! evidence and reasons, actor names): a spreadsheet would run such a cell as a formula
//! when it starts with `=`, `+`, `-`, `@`, a tab or a carriage return. Following
//! OWASP's CSV-injection guidance, every text cell starting with one of those gets a
//! leading `'`, which spreadsheets show as text (the JSON statement keeps the values as
//! they are). Numeric columns (`seq`, `value`) hold integers this program formats:
//! they are never prefixed, so a reversal's `-1` stays a number a spreadsheet can sum.

use super::model::{BilledLine, MeterTotals, NotBilledLine, ReversalLine, Statement};

/// One CSV cell: text (neutralized, then quoted) or an integer we formatted.
enum Cell<'a> {
    Text(&'a str),
    Int(i64),
}

use Cell::{Int, Text};

/// OWASP: a cell starting with one of these is a formula (or becomes one) in Excel,
/// LibreOffice or Google Sheets.
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// A text cell that a spreadsheet reads as text: `'` before a formula start.
fn neutralize(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(FORMULA_START) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// RFC 4180 quoting: a field with a comma, quote or line break is quoted.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn cell(c: &Cell<'_>) -> String {
    match c {
        Text(s) => csv_field(&neutralize(s)),
        Int(n) => n.to_string(),
    }
}

impl Statement {
    /// One CSV table: a `line` column says billed / not_billed / reversal / total. A
    /// reversal line's `confirmed_at` is when it counts at Stripe, its `value` is minus
    /// the reversed value, its `evidence` the reopening event.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "line,ticket_id,provider,seq,resolved_at,confirmed_at,meter,value,state,stripe_identifier,stripe_request_id,reason,detail,evidence,method\n",
        );
        for b in &self.billed {
            s += &billed_row(b);
        }
        for n in &self.not_billed {
            s += &not_billed_row(n);
        }
        for r in &self.reversals {
            s += &reversal_row(r);
        }
        for t in &self.totals {
            s += &total_row(t, &self.mode);
        }
        s
    }
}

/// One CSV line of these cells.
fn row(cols: &[Cell<'_>]) -> String {
    cols.iter().map(cell).collect::<Vec<_>>().join(",") + "\n"
}

fn billed_row(b: &BilledLine) -> String {
    row(&[
        Text("billed"),
        Text(&b.ticket_id),
        Text(&b.provider),
        Int(b.seq),
        Text(&b.resolved_at),
        Text(&b.confirmed_at),
        Text(&b.event_name),
        Int(b.value),
        Text(b.state.as_str()),
        Text(&b.stripe_identifier),
        Text(b.stripe_request_id.as_deref().unwrap_or("")),
        Text("billable"),
        Text(&match &b.status_note {
            Some(note) => format!("{} ({note})", b.why),
            None => b.why.clone(),
        }),
        Text(&b.evidence_events.join("; ")),
        Text(""),
    ])
}

fn not_billed_row(n: &NotBilledLine) -> String {
    row(&[
        Text("not_billed"),
        Text(&n.ticket_id),
        Text(&n.provider),
        Int(n.seq),
        Text(&n.resolved_at),
        Text(n.confirmed_at.as_deref().unwrap_or("")),
        Text(n.event_name.as_deref().unwrap_or("")),
        Int(0),
        Text(&n.status),
        Text(""),
        Text(""),
        Text(&n.reason),
        Text(&n.detail),
        Text(""),
        Text(""),
    ])
}

fn reversal_row(r: &ReversalLine) -> String {
    let detail = match &r.error {
        Some(e) => format!("{} ({e})", r.explanation),
        None => r.explanation.clone(),
    };
    row(&[
        Text("reversal"),
        Text(&r.ticket_id),
        Text(&r.provider),
        Int(r.seq),
        Text(""),
        Text(&r.at),
        Text(&r.event_name),
        Int(-r.value),
        Text(r.state.as_str()),
        Text(&r.stripe_identifier),
        Text(r.stripe_request_id.as_deref().unwrap_or("")),
        Text(&r.clause),
        Text(&detail),
        Text(&reopen_evidence(r)),
        Text(&r.method),
    ])
}

/// A meter's totals, in the statement's `mode`.
fn total_row(t: &MeterTotals, mode: &str) -> String {
    row(&[
        Text("total"),
        Text(""),
        Text(""),
        Text(""),
        Text(""),
        Text(""),
        Text(&t.event_name),
        Int(t.net_value),
        Text("net_sent_to_stripe"),
        Text(""),
        Text(""),
        Text(""),
        Text(&format!(
            "reported {} (value {}), reversed {} (value {}), awaiting {}, dry-run {}, capped {}, rejected by Stripe {} (value {}), reported in another Stripe mode (not billed in {}) {}",
            t.reported_count, t.reported_value, t.reversed_count, t.reversed_value, t.awaiting_count,
            t.dry_run_count, t.capped_count, t.rejected_count, t.rejected_value, mode, t.other_mode_count
        )),
        Text(""),
        Text(""),
    ])
}

/// The reopening event of a reversal: `<reopened_at> <kind> (event <key>)`.
fn reopen_evidence(r: &ReversalLine) -> String {
    format!(
        "{} {} (event {})",
        r.reopened_at, r.reopen_kind, r.reopen_event_key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    #[test]
    fn text_cells_that_start_a_formula_are_neutralized_numbers_are_not() {
        for hostile in ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            let out = cell(&Text(hostile));
            assert!(
                out.starts_with('\'') || out.starts_with("\"'"),
                "{hostile:?} -> {out:?}"
            );
        }
        assert_eq!(
            cell(&Text("=HYPERLINK(\"http://evil.example\",\"x\")")),
            "\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\""
        );
        assert_eq!(
            cell(&Text("\rx")),
            "\"'\rx\"",
            "quoted: it holds a line break"
        );
        assert_eq!(cell(&Text("a=b")), "a=b", "only the first character counts");
        assert_eq!(cell(&Text("")), "");
        assert_eq!(cell(&Int(-1)), "-1", "a reversal's value stays a number");
    }
}
