//! The statement as one CSV table, for a spreadsheet.

use super::Statement;

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
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
        let row = |cols: &[&str]| {
            cols.iter()
                .map(|c| csv_field(c))
                .collect::<Vec<_>>()
                .join(",")
                + "\n"
        };
        for b in &self.billed {
            s += &row(&[
                "billed",
                &b.ticket_id,
                &b.provider,
                &b.seq.to_string(),
                &b.resolved_at,
                &b.confirmed_at,
                &b.event_name,
                &b.value.to_string(),
                &b.state,
                &b.outcome_id,
                b.stripe_request_id.as_deref().unwrap_or(""),
                "billable",
                &b.why,
                &b.evidence_events.join("; "),
                "",
            ]);
        }
        for n in &self.not_billed {
            s += &row(&[
                "not_billed",
                &n.ticket_id,
                &n.provider,
                &n.seq.to_string(),
                &n.resolved_at,
                n.confirmed_at.as_deref().unwrap_or(""),
                n.event_name.as_deref().unwrap_or(""),
                "0",
                &n.status,
                "",
                "",
                &n.reason,
                &n.detail,
                "",
                "",
            ]);
        }
        for r in &self.reversals {
            let detail = match &r.error {
                Some(e) => format!("{} ({e})", r.explanation),
                None => r.explanation.clone(),
            };
            s += &row(&[
                "reversal",
                &r.ticket_id,
                &r.provider,
                &r.seq.to_string(),
                "",
                &r.at,
                &r.event_name,
                &(-r.value).to_string(),
                &r.state,
                &r.stripe_identifier,
                r.stripe_request_id.as_deref().unwrap_or(""),
                &r.clause,
                &detail,
                &r.reopen_evidence(),
                &r.method,
            ]);
        }
        for t in &self.totals {
            s += &row(&[
                "total",
                "",
                "",
                "",
                "",
                "",
                &t.event_name,
                &t.net_value.to_string(),
                "net_sent_to_stripe",
                "",
                "",
                "",
                &format!(
                    "reported {} (value {}), reversed {} (value {}), awaiting {}, dry-run {}, capped {}",
                    t.reported_count, t.reported_value, t.reversed_count, t.reversed_value, t.awaiting_count,
                    t.dry_run_count, t.capped_count
                ),
                "",
                "",
            ]);
        }
        s
    }
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
}
