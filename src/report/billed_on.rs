//! Where an outcome is billed, in words, from the sink frozen on it.

use crate::sink::Sink;

/// "on meter resolved_ticket for cus_1", "as a Stripe usage record on
/// subscription item si_1 for cus_1", …
pub fn billed_on(sink: Sink, event_name: &str, customer: &str, target: Option<&str>) -> String {
    match sink {
        Sink::StripeMeters => format!("on meter {event_name} for {customer}"),
        Sink::Metronome => format!("on Metronome for {}", target.unwrap_or(customer)),
        Sink::StripeUsageRecords => format!(
            "as a Stripe usage record on subscription item {} for {customer}",
            target.unwrap_or("(none)")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sink_says_where() {
        assert_eq!(
            billed_on(Sink::StripeMeters, "resolved_ticket", "cus_1", None),
            "on meter resolved_ticket for cus_1"
        );
        assert_eq!(
            billed_on(
                Sink::StripeUsageRecords,
                "resolved_ticket",
                "cus_1",
                Some("si_1")
            ),
            "as a Stripe usage record on subscription item si_1 for cus_1"
        );
    }
}
