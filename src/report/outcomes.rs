//! `outcome-meter outcomes`: the outbox as a table.

use super::fmt_ms;
use crate::store::OutcomeRow;
use std::fmt::Write;

pub fn render(rows: &[OutcomeRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<36} {:<10} {:<14} {:>4} {:<21} {:<20} {:>5} {:<9} stripe",
        "outcome", "tenant", "ticket", "seq", "confirmed", "meter", "value", "state"
    );
    for o in rows {
        let stripe = match (&o.stripe_request_id, &o.last_error) {
            (_, Some(e)) if o.state != "reported" => e.clone(),
            (Some(r), _) => r.clone(),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "{:<36} {:<10} {:<14} {:>4} {:<21} {:<20} {:>5} {:<9} {}",
            o.id,
            o.tenant,
            o.ticket_id,
            o.seq,
            fmt_ms(o.confirmed_at),
            o.event_name,
            o.value,
            o.state,
            stripe
        );
    }
    let _ = writeln!(s, "{} outcome(s)", rows.len());
    s
}
