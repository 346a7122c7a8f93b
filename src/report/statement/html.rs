//! The statement as one self-contained HTML page, for a person.

use super::Statement;
use std::fmt::Write;

impl Statement {
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
    fn html_escapes() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
