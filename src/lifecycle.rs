//! The lifecycle states the database stores, one enum per column. Pure.
//!
//! Each state is spelled in one place: [`as_str`](OutcomeState::as_str) is what
//! the column holds, and what `Display` and JSON show, unchanged. Reading a
//! value this build does not know is an error ([`UnknownValue`]), never a
//! default: the store decodes every state column when it reads a row, and
//! callers match on the enum exhaustively.
//!
//! SQL keeps its state literals in the query text (`WHERE state = 'pending'`):
//! SQLite uses the partial indexes (`outcomes_pending`, …) only when the literal
//! is there. A state bound as a parameter is bound as `as_str()`.

use std::fmt;
use std::str::FromStr;

/// A stored value this build does not know (a newer release's, or a damaged
/// row): an error, never taken as some known value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {column} `{value}` (known: {}){}", .known.join(", "), in_row(.row))]
pub struct UnknownValue {
    /// Where it was stored: `table.column`.
    pub column: &'static str,
    /// What was stored.
    pub value: String,
    /// What this build knows for that column.
    pub known: &'static [&'static str],
    /// The row it was read from (`outcome om_…`), when the reader says.
    pub row: Option<String>,
}

impl UnknownValue {
    /// The same, read from `row` (`outcome om_…`, `delivery 12`).
    pub fn in_row(self, row: String) -> UnknownValue {
        UnknownValue {
            row: Some(row),
            ..self
        }
    }
}

/// ` in <row>`, or nothing.
fn in_row(row: &Option<String>) -> String {
    row.as_ref().map(|r| format!(" in {r}")).unwrap_or_default()
}

/// One enum per stored column: its variants, each with its stored spelling;
/// `as_str`, `Display` (the spelling, padded as asked), `FromStr` and
/// `TryFrom<&str>` (an [`UnknownValue`] naming the column), and `Serialize`
/// (the spelling).
macro_rules! stored_states {
    (
        $(#[$meta:meta])*
        pub enum $name:ident in $column:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $spelling:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Where it is stored (`table.column`).
            pub const COLUMN: &'static str = $column;

            /// The stored spelling (also what `Display` and JSON show).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $spelling, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $( $spelling => Ok($name::$variant), )+
                    other => Err(UnknownValue {
                        column: $column,
                        value: other.to_string(),
                        known: &[$($spelling),+],
                        row: None,
                    }),
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = UnknownValue;

            fn try_from(s: &str) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

stored_states! {
    /// Where a webhook delivery stands in the inbox (`deliveries.status`).
    pub enum DeliveryStatus in "deliveries.status" {
        /// Waiting to be parsed and replayed (the worker claims it with a lease).
        Pending = "pending",
        /// Parsed; its events are stored.
        Processed = "processed",
        /// Authentic but unparseable: kept, with the error, for `replay --quarantined`.
        Quarantined = "quarantined",
    }
}

stored_states! {
    /// What was decided of one resolution (`decisions.status`).
    pub enum DecisionStatus in "decisions.status" {
        /// Inside its reopen window: not final yet.
        InWindow = "in_window",
        /// Reopened inside its window: not an outcome.
        Reopened = "reopened",
        /// Due, but held until the helpdesk's API confirms it (verification).
        Held = "held",
        /// Confirmed as a billable outcome.
        Confirmed = "confirmed",
        /// Final, and the contract does not bill it.
        NotBillable = "not_billable",
        /// Billable, but over a cap of the contract: recorded, never billed.
        Capped = "capped",
    }
}

stored_states! {
    /// An outcome's place in the outbox (`outcomes.state`).
    pub enum OutcomeState in "outcomes.state" {
        /// To be sent (again) from `next_attempt_at`.
        Pending = "pending",
        /// The billing system has it.
        Reported = "reported",
        /// Recorded as it would have been sent (dry-run mode).
        DryRun = "dry_run",
        /// Parked for an operator: refused, out of retries, too old or in doubt.
        Failed = "failed",
        /// Accepted by Stripe, then rejected in its asynchronous validation.
        RejectedByStripe = "rejected_by_stripe",
        /// Over a cap of the contract: recorded, never sent.
        Capped = "capped",
        /// Clawed back before it was ever sent.
        Voided = "voided",
        /// Clawed back after it was sent (its reversal is done).
        Reversed = "reversed",
    }
}

stored_states! {
    /// A clawback reversal's progress (`reversals.state`).
    pub enum ReversalState in "reversals.state" {
        /// To be carried out (again) from `next_attempt_at`.
        Pending = "pending",
        /// Carried out (or nothing was left to reverse).
        Done = "done",
        /// Parked for an operator, with the reason.
        Failed = "failed",
    }
}

stored_states! {
    /// A Stripe event notification's processing (`stripe_events.state`).
    pub enum StripeEventState in "stripe_events.state" {
        /// To be processed (claimed with a lease).
        Pending = "pending",
        /// Processed: what it names is marked.
        Processed = "processed",
        /// A type outcome-meter does not act on.
        Ignored = "ignored",
        /// Given up on, with the error.
        Failed = "failed",
    }
}

stored_states! {
    /// What a check of a resolution with the helpdesk's API found
    /// (`verifications.result`).
    pub enum CheckResult in "verifications.result" {
        /// The helpdesk shows nothing that undoes the resolution.
        Agreed = "agreed",
        /// It showed something no webhook brought that undoes it (fed in as events).
        Disagreed = "disagreed",
        /// No usable answer (network, 5xx, 429, refused credentials, unknown ticket).
        Unreachable = "unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value parses back from its spelling, shows it, and serializes to it;
    /// the spellings are distinct; anything else is an error naming the column.
    fn round_trips<T>(all: &[T], column: &str)
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = UnknownValue>,
        T: for<'a> TryFrom<&'a str, Error = UnknownValue> + serde::Serialize,
    {
        let mut seen = std::collections::HashSet::new();
        for &v in all {
            let s = v.to_string();
            assert!(seen.insert(s.clone()), "{s} spelled twice");
            assert_eq!(s.parse::<T>(), Ok(v));
            assert_eq!(T::try_from(s.as_str()), Ok(v));
            assert_eq!(
                serde_json::to_string(&v).ok(),
                Some(format!("\"{s}\"")),
                "{s} in JSON"
            );
        }
        for unknown in ["", "PENDING", "pending ", "refund"] {
            let err = unknown.parse::<T>().expect_err("unknown");
            assert_eq!((err.column, err.value.as_str()), (column, unknown));
            assert_eq!(T::try_from(unknown), Err(err.clone()));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("unknown {column} `{unknown}` (known: ")),
                "{text}"
            );
        }
    }

    fn spellings<T: Copy + fmt::Display>(all: &[T]) -> Vec<String> {
        all.iter().map(T::to_string).collect()
    }

    #[test]
    fn every_state_round_trips_and_an_unknown_one_is_an_error() {
        round_trips(DeliveryStatus::ALL, "deliveries.status");
        round_trips(DecisionStatus::ALL, "decisions.status");
        round_trips(OutcomeState::ALL, "outcomes.state");
        round_trips(ReversalState::ALL, "reversals.state");
        round_trips(StripeEventState::ALL, "stripe_events.state");
        round_trips(CheckResult::ALL, "verifications.result");
    }

    #[test]
    fn the_stored_spellings_never_change() {
        // What the databases already hold (and the SQL literals, the partial
        // indexes and the JSON outputs name): renaming one is a migration.
        assert_eq!(
            spellings(DeliveryStatus::ALL),
            ["pending", "processed", "quarantined"]
        );
        assert_eq!(
            spellings(DecisionStatus::ALL),
            [
                "in_window",
                "reopened",
                "held",
                "confirmed",
                "not_billable",
                "capped"
            ]
        );
        assert_eq!(
            spellings(OutcomeState::ALL),
            [
                "pending",
                "reported",
                "dry_run",
                "failed",
                "rejected_by_stripe",
                "capped",
                "voided",
                "reversed"
            ]
        );
        assert_eq!(spellings(ReversalState::ALL), ["pending", "done", "failed"]);
        assert_eq!(
            spellings(StripeEventState::ALL),
            ["pending", "processed", "ignored", "failed"]
        );
        assert_eq!(
            spellings(CheckResult::ALL),
            ["agreed", "disagreed", "unreachable"]
        );
        assert_eq!(OutcomeState::COLUMN, "outcomes.state");
    }

    #[test]
    fn display_is_the_spelling_and_takes_a_width() {
        assert_eq!(OutcomeState::DryRun.to_string(), "dry_run");
        assert_eq!(format!("[{:<9}]", ReversalState::Done), "[done     ]");
        assert_eq!(
            "voided".parse::<ReversalState>().map_err(|e| e.to_string()),
            Err("unknown reversals.state `voided` (known: pending, done, failed)".into())
        );
        assert_eq!(
            "voided"
                .parse::<ReversalState>()
                .map_err(|e| e.in_row("reversal of outcome om_1".into()).to_string()),
            Err("unknown reversals.state `voided` (known: pending, done, failed) in reversal of outcome om_1".into())
        );
    }
}
