//! How statements, `explain` and `outcomes` name where an outcome was billed
//! (its frozen `outcomes.sink`): one place for the words of every sink. Pure.

use crate::lifecycle::OutcomeState;
use crate::sink::Sink;

/// What an outcome became at its sink, for a line that shows a billed outcome.
pub fn billed_as(sink: Sink) -> &'static str {
    match sink {
        Sink::StripeMeters => "Stripe meter event",
        Sink::Metronome => "Metronome usage event",
        Sink::StripeUsageRecords => "Stripe usage record",
    }
}

/// The billing system of a sink, by name.
pub fn system(sink: Sink) -> &'static str {
    match sink {
        Sink::StripeMeters | Sink::StripeUsageRecords => "Stripe",
        Sink::Metronome => "Metronome",
    }
}

/// For an outcome sent (or recorded as sent) to a sink other than Stripe's meter
/// events, the line saying where, with the key it is known by there; `None` for
/// meter events, whose wording already says Stripe, and for unsent outcomes.
pub fn sent_note(sink: Sink, state: OutcomeState, identifier: &str) -> Option<String> {
    if sink == Sink::StripeMeters {
        return None;
    }
    let verb = match state {
        OutcomeState::DryRun => "recorded (dry-run) as it would be sent to",
        OutcomeState::Reported | OutcomeState::Reversed => "sent to",
        OutcomeState::Pending
        | OutcomeState::Failed
        | OutcomeState::RejectedByStripe
        | OutcomeState::Capped
        | OutcomeState::Voided => return None,
    };
    Some(match sink {
        Sink::Metronome => {
            format!("{verb} Metronome as a usage event, transaction_id {identifier}")
        }
        other => format!("{verb} {} as a {}", system(other), billed_as(other)),
    })
}

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
    fn a_metronome_outcome_says_metronome() {
        assert_eq!(
            sent_note(Sink::Metronome, OutcomeState::Reported, "om_1").as_deref(),
            Some("sent to Metronome as a usage event, transaction_id om_1")
        );
        assert!(sent_note(Sink::Metronome, OutcomeState::DryRun, "om_1")
            .is_some_and(|n| n.contains("dry-run") && n.contains("Metronome")));
        assert_eq!(
            sent_note(Sink::Metronome, OutcomeState::Pending, "om_1"),
            None
        );
        assert_eq!(
            sent_note(Sink::StripeMeters, OutcomeState::Reported, "om_1"),
            None
        );
        assert_eq!(system(Sink::StripeUsageRecords), "Stripe");
    }

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
