//! `outcome-meter statement`: every billed outcome of a period with its evidence,
//! every resolution not billed and why, and totals that match what Stripe received.

use super::clause::deciding_clause;
use super::fmt_ms;
pub use super::ledger::MeterTotals;
use super::ledger::{reversal_applied, reversal_effective_at, totals};
use super::period::Period;
use crate::store::{OutcomeFilter, Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct BilledLine {
    /// Also the Stripe meter event `identifier`.
    pub outcome_id: String,
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub resolved_at: String,
    pub confirmed_at: String,
    pub event_name: String,
    pub value: i64,
    /// pending | reported | dry_run | failed | capped | voided | reversed
    pub state: String,
    pub stripe_request_id: Option<String>,
    pub why: String,
    pub evidence_events: Vec<String>,
    pub contract: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotBilledLine {
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub resolved_at: String,
    /// reopened | not_billable | capped | in_window
    pub status: String,
    pub reason: String,
    pub detail: String,
}

/// A clawback reversal, in the period where Stripe applies it (a correcting event at
/// its own timestamp; a cancel, or a reversal not done, with its outcome).
#[derive(Debug, Clone, Serialize)]
pub struct ReversalLine {
    /// The reversed outcome (its meter event's `identifier`).
    pub outcome_id: String,
    /// The Stripe event this reversal is: the cancelled event's identifier, or the
    /// correcting event's (`<outcome id>_reversal`).
    pub stripe_identifier: String,
    pub ticket_id: String,
    pub provider: String,
    pub seq: i64,
    pub event_name: String,
    /// The reversed outcome's value.
    pub value: i64,
    /// What it changes at Stripe in this period: minus the value once applied, else 0.
    pub net_effect: i64,
    /// cancel | correction | void | dry_run | manual | none (not yet attempted: empty)
    pub method: String,
    /// pending | done | failed
    pub state: String,
    /// Applied at Stripe (done, by cancel or correction): counted in the totals.
    pub counted: bool,
    /// When it counts: the correcting event's timestamp, else the outcome's.
    pub at: String,
    pub stripe_request_id: Option<String>,
    pub reopen_event_key: String,
    pub reopen_kind: String,
    pub reopened_at: String,
    /// The contract clause (`clawback`) and its explanation.
    pub clause: String,
    pub explanation: String,
    pub contract: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    pub tenant: String,
    pub stripe_customer_id: String,
    pub from: String,
    pub to: String,
    pub billed: Vec<BilledLine>,
    pub not_billed: Vec<NotBilledLine>,
    pub reversals: Vec<ReversalLine>,
    pub totals: Vec<MeterTotals>,
    pub billed_count: i64,
    pub disqualified_by_reason: BTreeMap<String, i64>,
    /// Billed outcomes per day of confirmation (UTC), for the chart.
    pub per_day: BTreeMap<String, i64>,
}

/// Build the statement of `tenant` for `period` (outcomes by confirmation time,
/// decisions by resolution time).
pub async fn build(
    store: &Store,
    tenant: &str,
    customer: &str,
    period: Period,
) -> Result<Statement, StoreError> {
    let outcomes = store
        .list_outcomes(&OutcomeFilter {
            tenant: Some(tenant.to_string()),
            confirmed_from: Some(period.from),
            confirmed_to: Some(period.to),
            ..Default::default()
        })
        .await?;
    let reversal_rows = store.reversals(tenant).await?;
    let totals = totals(&outcomes, &reversal_rows, period);
    let mut per_day: BTreeMap<String, i64> = BTreeMap::new();
    let mut billed = Vec::with_capacity(outcomes.len());
    let mut billed_count = 0;
    for o in &outcomes {
        if matches!(
            o.state.as_str(),
            "reported" | "pending" | "failed" | "dry_run"
        ) {
            billed_count += 1;
            *per_day
                .entry(fmt_ms(o.confirmed_at)[..10].to_string())
                .or_default() += 1;
        }
        let ev: serde_json::Value = serde_json::from_str(&o.evidence).unwrap_or_default();
        let evidence_events = ev["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {}{}",
                            e["occurred_at"].as_str().unwrap_or(""),
                            e["kind"].as_str().unwrap_or(""),
                            e["resolver"]
                                .as_str()
                                .map(|r| format!(" by {r}"))
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        billed.push(BilledLine {
            outcome_id: o.id.clone(),
            ticket_id: o.ticket_id.clone(),
            provider: o.provider.clone(),
            seq: o.seq,
            resolved_at: fmt_ms(o.resolved_at),
            confirmed_at: fmt_ms(o.confirmed_at),
            event_name: o.event_name.clone(),
            value: o.value,
            state: o.state.clone(),
            stripe_request_id: o.stripe_request_id.clone(),
            why: ev["explanation"].as_str().unwrap_or_default().to_string(),
            evidence_events,
            contract: format!("{} ({})", o.contract_version, o.contract_hash),
        });
    }
    let mut reversals = Vec::new();
    for r in &reversal_rows {
        let at = reversal_effective_at(r);
        if at < period.from || at >= period.to {
            continue;
        }
        let ev: serde_json::Value = serde_json::from_str(&r.evidence).unwrap_or_default();
        let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        let method = r.method.clone().unwrap_or_default();
        let counted = reversal_applied(r);
        reversals.push(ReversalLine {
            outcome_id: r.outcome_id.clone(),
            stripe_identifier: if method == "correction" {
                format!("{}_reversal", r.outcome_id)
            } else {
                r.outcome_id.clone()
            },
            ticket_id: r.ticket_id.clone(),
            provider: r.provider.clone(),
            seq: ev["seq"].as_i64().unwrap_or_default(),
            event_name: r.event_name.clone(),
            value: r.value,
            net_effect: if counted { -r.value } else { 0 },
            method,
            state: r.state.clone(),
            counted,
            at: fmt_ms(at),
            stripe_request_id: r.stripe_request_id.clone(),
            reopen_event_key: r.reopen_event_key.clone(),
            reopen_kind: text(&ev["reopen"]["kind"]),
            reopened_at: fmt_ms(r.reopened_at),
            clause: text(&ev["clause"]),
            explanation: text(&ev["explanation"]),
            contract: format!(
                "{} ({})",
                text(&ev["contract"]["version"]),
                text(&ev["contract"]["hash"])
            ),
            error: r.last_error.clone(),
        });
    }
    let mut not_billed = Vec::new();
    let mut disqualified_by_reason: BTreeMap<String, i64> = BTreeMap::new();
    for d in store.decisions_in(tenant, period.from, period.to).await? {
        if d.status == "confirmed" {
            continue;
        }
        let reason = deciding_clause(&d).kind.to_string();
        if d.status != "in_window" {
            *disqualified_by_reason.entry(reason.clone()).or_default() += 1;
        }
        not_billed.push(NotBilledLine {
            ticket_id: d.ticket_id,
            provider: d.provider,
            seq: d.seq,
            resolved_at: fmt_ms(d.resolved_at),
            status: d.status,
            reason,
            detail: d.detail,
        });
    }
    Ok(Statement {
        tenant: tenant.to_string(),
        stripe_customer_id: customer.to_string(),
        from: fmt_ms(period.from),
        to: fmt_ms(period.to),
        billed,
        not_billed,
        reversals,
        totals: totals.into_values().collect(),
        billed_count,
        disqualified_by_reason,
        per_day,
    })
}

impl ReversalLine {
    /// The reopening event, in words.
    pub fn reopen_evidence(&self) -> String {
        format!(
            "{} {} (event {})",
            self.reopened_at, self.reopen_kind, self.reopen_event_key
        )
    }
}

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
                "",
                "",
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

    /// One self-contained page (inline CSS and SVG, no scripts, no external files).
    pub fn to_html(&self) -> String {
        let e = escape;
        let mut h = String::new();
        let net: i64 = self.totals.iter().map(|t| t.net_value).sum();
        let disq: i64 = self.disqualified_by_reason.values().sum();
        let _ = write!(
            h,
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Outcome statement {tenant} {from} to {to}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}h1{{font-size:1.4em}}table{{border-collapse:collapse;margin:1em 0;width:100%}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:.9em;text-align:left;vertical-align:top}}th{{background:#f3f3f3}}
.cards{{display:flex;gap:1em;flex-wrap:wrap}}.card{{border:1px solid #ccc;border-radius:6px;padding:.8em 1.2em;min-width:10em}}
.card b{{display:block;font-size:1.8em}}.muted{{color:#777;font-size:.85em}}</style></head><body>
<h1>Outcome statement: {tenant}</h1>
<p>Stripe customer <code>{customer}</code> · period from {from} up to {to} (UTC; outcomes by confirmation time, resolutions by resolution time). Billable outcomes include those still awaiting report or recorded in dry-run; the net value is what Stripe has received for the period. Reversals (clawback) count where Stripe applies them: a cancelled event with its outcome, a correcting event at its own time, which can be the next period.</p>
<div class="cards">
<div class="card">Billable outcomes<b id="billed-count">{billed}</b></div>
<div class="card">Net value sent to Stripe<b id="net-value">{net}</b></div>
<div class="card">Resolutions not billed<b id="disqualified-count">{disq}</b></div>
</div>"#,
            tenant = e(&self.tenant),
            customer = e(&self.stripe_customer_id),
            from = e(&self.from),
            to = e(&self.to),
            billed = self.billed_count,
        );
        h += "<h2>Not billed, by reason</h2><table id=\"reasons\"><tr><th>reason</th><th>resolutions</th></tr>";
        for (reason, n) in &self.disqualified_by_reason {
            let _ = write!(
                h,
                "<tr><td>{}</td><td data-reason=\"{}\">{n}</td></tr>",
                e(reason),
                e(reason)
            );
        }
        h += "</table><h2>Outcomes per day</h2>";
        h += &self.chart();
        h += "<h2>Totals per meter</h2><table id=\"totals\"><tr><th>meter</th><th>reported</th><th>reported value</th><th>reversed</th><th>reversed value</th><th>net value sent</th><th>awaiting report</th><th>dry-run</th><th>capped</th></tr>";
        for t in &self.totals {
            let _ = write!(
                h,
                "<tr data-meter=\"{m}\"><td>{m}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"net\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                t.reported_count,
                t.reported_value,
                t.reversed_count,
                t.reversed_value,
                t.net_value,
                t.awaiting_count,
                t.dry_run_count,
                t.capped_count,
                m = e(&t.event_name)
            );
        }
        h += "</table><h2>Outcomes</h2><table id=\"billed\"><tr><th>ticket</th><th>resolved</th><th>confirmed</th><th>meter</th><th>value</th><th>state</th><th>Stripe identifier</th><th>why</th><th>evidence</th></tr>";
        for b in &self.billed {
            let _ = write!(
                h,
                "<tr class=\"outcome\"><td>{} <span class=\"muted\">{} #{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}<div class=\"muted\">contract {}</div></td><td>{}</td></tr>",
                e(&b.ticket_id),
                e(&b.provider),
                b.seq,
                e(&b.resolved_at),
                e(&b.confirmed_at),
                e(&b.event_name),
                b.value,
                e(&b.state),
                e(&b.outcome_id),
                e(&b.why),
                e(&b.contract),
                b.evidence_events.iter().map(|x| e(x)).collect::<Vec<_>>().join("<br>")
            );
        }
        h += "</table><h2>Resolutions not billed</h2><table id=\"not-billed\"><tr><th>ticket</th><th>resolved</th><th>status</th><th>reason</th><th>detail</th></tr>";
        for n in &self.not_billed {
            let _ = write!(
                h,
                "<tr class=\"not-billed\"><td>{} <span class=\"muted\">{} #{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e(&n.ticket_id),
                e(&n.provider),
                n.seq,
                e(&n.resolved_at),
                e(&n.status),
                e(&n.reason),
                e(&n.detail)
            );
        }
        h += "</table><h2>Reversals (clawback)</h2>";
        if self.reversals.is_empty() {
            h += "<p class=\"muted\">No reversal in this period.</p>";
        } else {
            h += "<table id=\"reversals\"><tr><th>ticket</th><th>counts at</th><th>meter</th><th>value</th><th>method</th><th>state</th><th>Stripe event</th><th>Stripe request</th><th>reopened by</th><th>why</th></tr>";
        }
        for r in &self.reversals {
            let _ = write!(
                h,
                "<tr class=\"reversal\" data-counted=\"{}\"><td>{} <span class=\"muted\">{} #{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code><div class=\"muted\">reverses <code>{}</code></div></td><td><code>{}</code></td><td>{}</td><td>{}: {}<div class=\"muted\">contract {}</div>{}</td></tr>",
                r.counted,
                e(&r.ticket_id),
                e(&r.provider),
                r.seq,
                e(&r.at),
                e(&r.event_name),
                -r.value,
                e(if r.method.is_empty() { "(not yet attempted)" } else { &r.method }),
                e(&r.state),
                e(&r.stripe_identifier),
                e(&r.outcome_id),
                e(r.stripe_request_id.as_deref().unwrap_or("")),
                e(&r.reopen_evidence()),
                e(&r.clause),
                e(&r.explanation),
                e(&r.contract),
                r.error
                    .as_deref()
                    .map(|x| format!("<div class=\"muted\">{}</div>", e(x)))
                    .unwrap_or_default()
            );
        }
        if !self.reversals.is_empty() {
            h += "</table>";
        }
        h += "<p class=\"muted\">Generated by outcome-meter. Each Stripe identifier is the meter event's <code>identifier</code>; `outcome-meter explain` gives the full trail of any ticket.</p></body></html>\n";
        h
    }

    /// A small inline SVG bar chart of billed outcomes per day.
    fn chart(&self) -> String {
        if self.per_day.is_empty() {
            return "<p class=\"muted\">No outcomes in this period.</p>".into();
        }
        let max = self.per_day.values().copied().max().unwrap_or(1).max(1) as f64;
        let (bar, gap, height) = (24.0, 8.0, 120.0);
        let width = self.per_day.len() as f64 * (bar + gap) + gap;
        let mut s = format!(
            r#"<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" role="img" aria-label="outcomes per day">"#,
            height + 40.0
        );
        for (i, (day, n)) in self.per_day.iter().enumerate() {
            let x = gap + i as f64 * (bar + gap);
            let hgt = (*n as f64 / max) * height;
            let _ = write!(
                s,
                r##"<rect x="{x}" y="{y}" width="{bar}" height="{hgt}" fill="#4a7bd0" data-day="{day}" data-count="{n}"><title>{day}: {n}</title></rect><text x="{tx}" y="{ty}" font-size="10" text-anchor="middle">{n}</text><text x="{tx}" y="{dy}" font-size="8" text-anchor="middle">{short}</text>"##,
                y = height - hgt + 12.0,
                tx = x + bar / 2.0,
                ty = height - hgt + 10.0,
                dy = height + 24.0,
                short = &day[5..]
            );
        }
        s + "</svg>"
    }
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_and_csv_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}
