//! The statement as one self-contained HTML page, for a person: a finance reader on
//! a laptop. It fits a 1,200-pixel window (fixed table layouts whose cells wrap long
//! values), says reasons and states in words ([`crate::accounting::words`]) and times to
//! the minute in UTC. Every value from outside is escaped ([`escape`]).

use super::model::{BilledLine, NotBilledLine, ReversalLine, Statement};
use crate::accounting::words;
use crate::lifecycle::{DecisionStatus, OutcomeState};
use chrono::{DateTime, Duration, Utc};
use std::fmt::Write;

const STYLE: &str = "*{box-sizing:border-box}\
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1.5em 2em;max-width:1400px;color:#222;line-height:1.35;overflow-wrap:anywhere}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.8em 0;width:100%;table-layout:fixed}\
table.compact{width:auto;min-width:24em;table-layout:auto}\
td,th{border:1px solid #ccc;padding:4px 6px;font-size:.85em;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f3f3f3;overflow-wrap:break-word}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:.92em}ul.events{margin:0;padding-left:1.1em}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;border-radius:6px;padding:.8em 1.2em;min-width:10em}\
.card b{display:block;font-size:1.8em}.muted{color:#666;font-size:.85em}\
#chart{max-width:100%;height:auto}";

/// A time as finance reads it: `2026-01-04 00:05 UTC` (to the minute, no
/// milliseconds); anything that is not RFC 3339 as it is.
pub(crate) fn when(s: &str) -> String {
    match DateTime::parse_from_rfc3339(s) {
        Ok(t) => t
            .with_timezone(&Utc)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string(),
        Err(_) => s.to_string(),
    }
}

/// A sentence with RFC 3339 times in it (decision details and explanations are
/// stored with them) with each time as [`when`] writes it.
pub(crate) fn times_in_words(text: &str) -> String {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let mut out = String::with_capacity(text.len());
    let (mut i, mut copied) = (0, 0);
    while i < b.len() {
        // `YYYY-MM-DDTHH:MM` starts a time; it runs over digits, `:`, `.`, `+`, `-`, `Z`.
        if digits(i..i + 4)
            && b.get(i + 4) == Some(&b'-')
            && b.get(i + 10) == Some(&b'T')
            && digits(i + 11..i + 13)
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
        {
            let end = (i..b.len())
                .find(|&j| !matches!(b[j], b'0'..=b'9' | b':' | b'.' | b'+' | b'-' | b'Z' | b'T'))
                .unwrap_or(b.len());
            if let Some(t) = text
                .get(i..end)
                .filter(|t| DateTime::parse_from_rfc3339(t).is_ok())
            {
                out.push_str(&text[copied..i]);
                out.push_str(&when(t));
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// The period in words: whole UTC days as `2026-01-01 to 2026-01-31 (UTC days, both
/// included)`, otherwise its two ends.
fn period(from: &str, to: &str) -> String {
    let day = |s: &str| {
        DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| t.format("%H:%M:%S").to_string() == "00:00:00")
    };
    match (day(from), day(to)) {
        (Some(f), Some(t)) if t > f => format!(
            "{} to {} (UTC days, both included)",
            f.format("%Y-%m-%d"),
            (t - Duration::days(1)).format("%Y-%m-%d")
        ),
        _ => format!("from {} up to {}", when(from), when(to)),
    }
}

/// `<colgroup>` with these widths (percent), so a fixed layout never grows wider
/// than the page.
fn cols(widths: &[u32]) -> String {
    let mut s = String::from("<colgroup>");
    for w in widths {
        let _ = write!(s, "<col style=\"width:{w}%\">");
    }
    s + "</colgroup>"
}

/// A ticket cell: its id, then provider and resolution number, muted.
fn ticket(id: &str, provider: &str, seq: i64) -> String {
    format!(
        "<td>{} <span class=\"muted\">{} #{seq}</span></td>",
        escape(id),
        escape(provider)
    )
}

/// The state in words, and why it is not billed yet when it is not.
fn state_cell(b: &BilledLine) -> String {
    let mut cell = escape(words::outcome_state(b.state));
    if let Some(note) = &b.status_note {
        let _ = write!(cell, "<div class=\"muted note\">{}</div>", escape(note));
    }
    cell
}

impl Statement {
    /// One self-contained page (inline CSS and SVG, no scripts, no external files).
    pub fn to_html(&self) -> String {
        let e = escape;
        let mut h = String::new();
        let net = self.net_value();
        let disq = self.disqualified_count();
        let period = period(&self.from, &self.to);
        let _ = write!(
            h,
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Outcome statement {tenant}, {period}</title>
<style>{STYLE}</style></head><body>
<h1>Outcome statement: {tenant}</h1>
<p>Stripe customer <code>{customer}</code> · {period} · Stripe mode <b id="stripe-mode">{mode}</b>. Outcomes are counted when they were confirmed, resolutions when they were resolved; all times are UTC. Billable outcomes include those still awaiting report or recorded in dry run; the net value is what Stripe has received for the period in this mode (an event sent in another Stripe mode is counted under "other mode", not billed here). Reversals (clawback) count where Stripe applies them: a cancelled event with its outcome, a correcting event at its own time, which can be the next period.</p>
<div class="cards">
<div class="card">Billable outcomes<b id="billed-count">{billed}</b></div>
<div class="card">Net value sent to Stripe<b id="net-value">{net}</b></div>
<div class="card">Resolutions not billed<b id="disqualified-count">{disq}</b></div>
</div>"#,
            tenant = e(&self.tenant),
            customer = e(&self.stripe_customer_id),
            mode = e(&self.mode.replace('_', "-")),
            period = e(&period),
            billed = self.billed_count,
        );
        h += "<h2>Not billed, by reason</h2>";
        if self.disqualified_by_reason.is_empty() {
            h += "<p class=\"muted\">Every resolution of this period was billed or is still in its reopen window.</p>";
        } else {
            h += "<table id=\"reasons\" class=\"compact\"><tr><th>reason</th><th class=\"num\">resolutions</th></tr>";
            for (reason, n) in &self.disqualified_by_reason {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td class=\"num\" data-reason=\"{}\">{n}</td></tr>",
                    e(&words::reason(reason)),
                    e(reason)
                );
            }
            h += "</table>";
        }
        h += "<h2>Outcomes per day</h2>";
        h += &self.chart();
        h += "<h2>Totals per meter</h2><table id=\"totals\"><tr><th>meter</th><th class=\"num\">reported</th><th class=\"num\">reported value</th><th class=\"num\">reversed</th><th class=\"num\">reversed value</th><th class=\"num\">net value sent</th><th class=\"num\">awaiting report</th><th class=\"num\">dry run</th><th class=\"num\">capped</th><th class=\"num\">rejected by Stripe</th><th class=\"num\">other mode</th></tr>";
        for t in &self.totals {
            let _ = write!(
                h,
                "<tr data-meter=\"{m}\"><td>{m}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num net\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num rejected\">{}</td><td class=\"num\">{}</td></tr>",
                t.reported_count,
                t.reported_value,
                t.reversed_count,
                t.reversed_value,
                t.net_value,
                t.awaiting_count,
                t.dry_run_count,
                t.capped_count,
                t.rejected_count,
                t.other_mode_count,
                m = e(&t.event_name)
            );
        }
        h += "</table>";
        self.billed_table(&mut h);
        self.not_billed_table(&mut h);
        self.reversals_table(&mut h);
        h += "<p class=\"muted\">Generated by outcome-meter. Each Stripe identifier is the meter event's <code>identifier</code>; <code>outcome-meter explain</code> gives the full trail of any ticket.</p></body></html>\n";
        h
    }

    fn billed_table(&self, h: &mut String) {
        let e = escape;
        *h += "<h2>Outcomes</h2>";
        if self.billed.is_empty() {
            *h += "<p class=\"muted\">No outcome was confirmed in this period.</p>";
            return;
        }
        *h += "<table id=\"billed\">";
        *h += &cols(&[12, 9, 9, 11, 5, 9, 13, 15, 17]);
        *h += "<tr><th>ticket</th><th>resolved</th><th>confirmed</th><th>meter</th><th class=\"num\">value</th><th>state</th><th>Stripe identifier</th><th>why</th><th>evidence</th></tr>";
        for b in &self.billed {
            let mut evidence = String::from("<ul class=\"events\">");
            for ev in &b.evidence {
                let _ = write!(
                    evidence,
                    "<li>{}: {}</li>",
                    e(&when(&ev.occurred_at)),
                    e(&words::event(&ev.kind, ev.resolver.as_deref()))
                );
            }
            evidence += "</ul>";
            let _ = write!(
                h,
                "<tr class=\"outcome\" data-state=\"{state}\">{}<td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code>{}</td><td>{}<div class=\"muted\">contract {}</div></td><td>{evidence}</td></tr>",
                ticket(&b.ticket_id, &b.provider, b.seq),
                e(&when(&b.resolved_at)),
                e(&when(&b.confirmed_at)),
                match b.sink {
                    crate::sink::Sink::StripeMeters => e(&b.event_name),
                    _ => e(&b.billed_on),
                },
                b.value,
                state_cell(b),
                e(&b.stripe_identifier),
                crate::accounting::sink_words::sent_note(b.sink, b.state, &b.stripe_identifier)
                    .map(|n| format!("<div class=\"muted\">{}</div>", e(&n)))
                    .unwrap_or_default(),
                e(&b.why),
                e(&b.contract),
                state = e(b.state.as_str()),
            );
        }
        *h += "</table>";
    }

    fn not_billed_table(&self, h: &mut String) {
        let e = escape;
        *h += "<h2>Resolutions not billed</h2>";
        if self.not_billed.is_empty() {
            *h += "<p class=\"muted\">None in this period.</p>";
            return;
        }
        *h += "<table id=\"not-billed\">";
        *h += &cols(&[18, 12, 22, 48]);
        *h += "<tr><th>ticket</th><th>resolved</th><th>reason</th><th>detail</th></tr>";
        for n in &self.not_billed {
            let _ = write!(
                h,
                "<tr class=\"not-billed\" data-status=\"{}\" data-reason=\"{}\">{}<td>{}</td><td>{}{}</td><td>{}{}</td></tr>",
                e(&n.status),
                e(&n.reason),
                ticket(&n.ticket_id, &n.provider, n.seq),
                e(&when(&n.resolved_at)),
                e(&words::reason(&n.reason)),
                if n.status == DecisionStatus::InWindow.as_str() && n.reason != "awaiting_reopen_window" {
                    format!("<div class=\"muted\">{}</div>", e(&words::status(&n.status)))
                } else {
                    String::new()
                },
                e(&times_in_words(&n.detail)),
                capped_note(n),
            );
        }
        *h += "</table>";
    }

    fn reversals_table(&self, h: &mut String) {
        let e = escape;
        *h += "<h2>Reversals (clawback)</h2>";
        if self.reversals.is_empty() {
            *h += "<p class=\"muted\">No reversal in this period.</p>";
            return;
        }
        *h += "<table id=\"reversals\">";
        *h += &cols(&[11, 9, 11, 5, 9, 6, 14, 9, 10, 16]);
        *h += "<tr><th>ticket</th><th>counts at</th><th>meter</th><th class=\"num\">value</th><th>method</th><th>state</th><th>Stripe event</th><th>Stripe request</th><th>reopened by</th><th>why</th></tr>";
        for r in &self.reversals {
            let _ = write!(
                h,
                "<tr class=\"reversal\" data-counted=\"{}\" data-method=\"{}\">{}<td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><code>{}</code><div class=\"muted\">reverses <code>{}</code></div></td><td><code>{}</code></td><td>{}</td><td>{}: {}<div class=\"muted\">contract {}</div>{}</td></tr>",
                r.counted,
                e(&r.method),
                ticket(&r.ticket_id, &r.provider, r.seq),
                e(&when(&r.at)),
                e(&r.event_name),
                -r.value,
                e(&words::reversal_method(&r.method)),
                e(words::reversal_state(r.state)),
                e(&r.stripe_identifier),
                e(&r.outcome_id),
                e(r.stripe_request_id.as_deref().unwrap_or("")),
                reopened_by(r),
                e(&r.clause),
                e(&times_in_words(&r.explanation)),
                e(&r.contract),
                r.error
                    .as_deref()
                    .map(|x| format!("<div class=\"muted\">{}</div>", e(&times_in_words(x))))
                    .unwrap_or_default()
            );
        }
        *h += "</table>";
    }

    /// A small inline SVG bar chart of billed outcomes per day.
    fn chart(&self) -> String {
        if self.per_day.is_empty() {
            return "<p class=\"muted\">No outcomes in this period.</p>".into();
        }
        let max = self.per_day.values().copied().max().unwrap_or(1).max(1) as f64;
        let (bar, gap, height) = (24.0, 8.0, 120.0);
        let width = self.per_day.len() as f64 * (bar + gap) + gap;
        // The view box scales it down to the page's width for a long period.
        let mut s = format!(
            r#"<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" viewBox="0 0 {width} {h}" role="img" aria-label="outcomes per day">"#,
            h = height + 40.0
        );
        let e = escape;
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
                day = e(day),
                short = e(day.get(5..).unwrap_or(day))
            );
        }
        s + "</svg>"
    }
}

/// A capped outcome's (or one Stripe rejected) confirmation and meter, under its detail.
fn capped_note(n: &NotBilledLine) -> String {
    match (&n.confirmed_at, &n.event_name) {
        (Some(at), Some(meter)) if n.status == OutcomeState::RejectedByStripe.as_str() => format!(
            "<div class=\"muted\">confirmed {} on meter {}, not billed: resend with <code>outcome-meter replay --rejected</code> once the cause is fixed</div>",
            escape(&when(at)),
            escape(meter)
        ),
        (Some(at), Some(meter)) => format!(
            "<div class=\"muted\">confirmed {} on meter {}, not sent to Stripe</div>",
            escape(&when(at)),
            escape(meter)
        ),
        _ => String::new(),
    }
}

/// The reopening event of a reversal, in words.
fn reopened_by(r: &ReversalLine) -> String {
    format!(
        "{}: {}<div class=\"muted\">event {}</div>",
        escape(&when(&r.reopened_at)),
        escape(&words::event(&r.reopen_kind, None)),
        escape(&r.reopen_event_key)
    )
}

/// HTML-escapes text for element content and quoted attribute values.
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
    fn times_read_to_the_minute() {
        assert_eq!(when("2026-01-04T00:05:07.123Z"), "2026-01-04 00:05 UTC");
        assert_eq!(when("2026-01-04T01:05:00+01:00"), "2026-01-04 00:05 UTC");
        assert_eq!(when("not a time"), "not a time");
        assert_eq!(
            times_in_words(
                "reopened at 2026-01-04T19:00:00+00:00 within (ends 2026-01-04T02:00:00.5Z)."
            ),
            "reopened at 2026-01-04 19:00 UTC within (ends 2026-01-04 02:00 UTC)."
        );
        assert_eq!(
            times_in_words("id x2026-01-04T19:00:00Z é 1999"),
            "id x2026-01-04T19:00:00Z é 1999"
        );
        assert_eq!(
            period("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            "2026-01-01 to 2026-01-31 (UTC days, both included)"
        );
        assert_eq!(
            period("2026-01-01T06:00:00Z", "2026-01-02T00:00:00Z"),
            "from 2026-01-01 06:00 UTC up to 2026-01-02 00:00 UTC"
        );
    }

    #[test]
    fn html_escapes() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
