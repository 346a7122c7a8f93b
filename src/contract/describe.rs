//! The contract in plain words (`outcome-meter check`).

use super::{ContractTerms, NameMatching};
use std::fmt::Write;

pub fn describe(t: &ContractTerms) -> String {
    let mut s = String::new();
    let resolvers: Vec<&str> = t.billable_resolvers.iter().map(|r| r.as_str()).collect();
    let _ = writeln!(s, "Contract version {} (hash {})", t.version, t.hash());
    let _ = writeln!(
        s,
        "- A ticket counts as an outcome when it is resolved by: {}.",
        if resolvers.is_empty() {
            "nobody (nothing is billed)".to_string()
        } else {
            resolvers.join(" or ")
        }
    );
    let _ = writeln!(
        s,
        "- It is billed only if it stays resolved for {}: reopened, answered by the customer or \
         handed to a human within that time, it is not an outcome; the next resolution starts a new window.",
        humantime::format_duration(t.reopen_window)
    );
    let _ = writeln!(
        s,
        "- A hand-off to a human before the resolution disqualifies that resolution."
    );
    if !t.excluded_tags.is_empty() {
        let _ = writeln!(
            s,
            "- Tickets tagged {} are never billed.",
            t.excluded_tags.join(", ")
        );
    }
    if !t.excluded_channels.is_empty() {
        let _ = writeln!(
            s,
            "- Tickets from channel {} are never billed.",
            t.excluded_channels.join(", ")
        );
    }
    let _ = writeln!(s, "- {}", matching_in_words(t.name_matching));
    if t.require_customer_message {
        let _ = writeln!(s, "- The customer must have written on the ticket.");
    }
    for c in &t.categories {
        let mut when = Vec::new();
        if !c.tags_any.is_empty() {
            when.push(format!("tagged {}", c.tags_any.join(" or ")));
        }
        if !c.channels_any.is_empty() {
            when.push(format!("from channel {}", c.channels_any.join(" or ")));
        }
        if c.decline {
            let _ = writeln!(
                s,
                "- Category {}: tickets {} are not billed.",
                c.name,
                when.join(" or ")
            );
        } else {
            let _ = writeln!(
                s,
                "- Category {}: tickets {} are billed {} on meter `{}`.",
                c.name,
                when.join(" or "),
                c.value.unwrap_or(t.meter.value),
                c.event_name.as_deref().unwrap_or(&t.meter.event_name)
            );
        }
    }
    match t.clawback {
        Some(d) => {
            let _ = writeln!(
                s,
                "- Clawback: an outcome already billed is reversed in Stripe if its ticket is reopened within {} of the resolution.",
                humantime::format_duration(d)
            );
        }
        None => {
            let _ = writeln!(s, "- No clawback: once confirmed, an outcome stays billed even if the ticket is reopened later.");
        }
    }
    if let Some(n) = t.caps.per_day {
        let _ = writeln!(s, "- At most {n} outcomes are billed per customer per day (UTC); more are recorded as capped.");
    }
    if let Some(n) = t.caps.per_period {
        let _ = writeln!(s, "- At most {n} outcomes are billed per customer per calendar month (UTC); more are recorded as capped.");
    }
    let _ = writeln!(
        s,
        "- Every other outcome adds {} to Stripe meter `{}`.",
        t.meter.value, t.meter.event_name
    );
    s
}

fn matching_in_words(m: NameMatching) -> &'static str {
    match m {
        NameMatching::Folded => {
            "Tags and channels are compared ignoring case and surrounding whitespace \
             (`Spam`, `spam` and `spam ` are the same tag)."
        }
        NameMatching::Exact => {
            "Tags and channels are compared exactly as written (name_matching = \"exact\"): \
             `Spam` and `spam` are different tags."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_name_the_window_and_meter() {
        let text = describe(&ContractTerms::default());
        assert!(text.contains("3days"), "{text}");
        assert!(text.contains("resolved_ticket"), "{text}");
        assert!(text.contains("resolved by: ai"), "{text}");
        assert!(text.contains("ignoring case"), "{text}");
    }
}
