//! What to do with the answer to a Stripe call. Pure.

use super::client::{Ack, StripeError};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Stripe has the event (now, or from an earlier attempt).
    Delivered,
    /// Try again later; `after` is Stripe's `Retry-After` when given.
    Retry { after: Option<Duration> },
    /// Stripe will never accept it as sent: park it for an operator.
    Permanent,
}

/// A 400 from Stripe, as (lower-case message, code): the refusals below are
/// recognised from these.
fn bad_request(err: &StripeError) -> Option<(String, &str)> {
    match err {
        StripeError::Api {
            status: 400, error, ..
        } => Some((
            error.message.as_deref().unwrap_or("").to_ascii_lowercase(),
            error.code.as_deref().unwrap_or(""),
        )),
        _ => None,
    }
}

/// Stripe's answer when an event with the same `identifier` already exists
/// (a 400 whose message says so): the event was delivered before.
pub fn is_duplicate_identifier(err: &StripeError) -> bool {
    bad_request(err).is_some_and(|(msg, code)| says_duplicate(code, &msg))
}

/// Whether an error's `code` or `message` says the identifier was seen before,
/// in the words Stripe uses (`duplicate_meter_event`, "An event already exists
/// with identifier …"); also how its asynchronous reports are read.
pub fn says_duplicate(code: &str, message: &str) -> bool {
    let (code, message) = (code.to_ascii_lowercase(), message.to_ascii_lowercase());
    code.contains("duplicate")
        || code.contains("already_exists")
        || (message.contains("identifier") && message.contains("already exists"))
}

/// Stripe's refusal to cancel an event it received more than 24 hours ago. Stripe
/// does not document this error's code or text: a 400 whose code says `out_of_window`,
/// or whose message speaks of the 24 hours or of the event being too old to cancel.
/// Anything else stays a permanent error (the reversal is parked, never guessed at).
pub fn is_cancel_too_old(err: &StripeError) -> bool {
    bad_request(err).is_some_and(|(msg, code)| {
        code.contains("out_of_window")
            || code.contains("too_old")
            || msg.contains("24 hours")
            || (msg.contains("cancel") && (msg.contains("too old") || msg.contains("no longer")))
    })
}

/// Whether a failed request may nevertheless have been applied by Stripe: no answer
/// (network error, timeout) or a server error.
pub fn maybe_applied(result: &Result<Ack, StripeError>) -> bool {
    match result {
        Ok(_) => false,
        Err(StripeError::Network(_)) => true,
        Err(StripeError::Api { status, .. }) => *status >= 500,
    }
}

pub fn classify(result: &Result<Ack, StripeError>) -> Disposition {
    let err = match result {
        Ok(_) => return Disposition::Delivered,
        Err(e) => e,
    };
    if is_duplicate_identifier(err) {
        return Disposition::Delivered;
    }
    match err {
        StripeError::Network(_) => Disposition::Retry { after: None },
        StripeError::Api {
            status,
            should_retry,
            retry_after,
            ..
        } => {
            let retry = match should_retry {
                Some(explicit) => *explicit,
                // 424: a dependency outside Stripe failed; the request can succeed later.
                None => matches!(status, 409 | 424 | 429) || *status >= 500,
            };
            if retry {
                Disposition::Retry {
                    after: *retry_after,
                }
            } else {
                Disposition::Permanent
            }
        }
    }
}

/// Capped exponential backoff with jitter, never sooner than `retry_after`.
/// `jitter` is in `[0, 1)`: the delay is drawn from the upper half of the step.
pub fn backoff(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let step = base
        .saturating_mul(2u32.saturating_pow(attempt.min(30)))
        .min(max);
    let jittered = step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    // Never sooner than Stripe asks, but a hostile or broken `Retry-After` of a day
    // does not stall the queue beyond `reporter.backoff_max`.
    jittered.max(retry_after.unwrap_or_default().min(max))
}

/// A Stripe error answer, for tests.
#[cfg(test)]
pub(crate) fn api(
    status: u16,
    should_retry: Option<bool>,
    message: &str,
) -> Result<Ack, StripeError> {
    Err(StripeError::Api {
        status,
        error: Box::new(super::client::ApiError {
            kind: "invalid_request_error".into(),
            message: Some(message.into()),
            ..Default::default()
        }),
        request_id: Some("req_1".into()),
        should_retry,
        retry_after: None,
        replayed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_stripe_rules() {
        let ok = Ok(Ack {
            status: 200,
            request_id: None,
            replayed: false,
            livemode: Some(false),
        });
        assert_eq!(classify(&ok), Disposition::Delivered);
        assert_eq!(
            classify(&Err(StripeError::Network("reset".into()))),
            Disposition::Retry { after: None }
        );
        for s in [409, 424, 429, 500, 502, 503] {
            assert_eq!(
                classify(&api(s, None, "x")),
                Disposition::Retry { after: None },
                "{s}"
            );
        }
        for s in [400, 401, 402, 403, 404] {
            assert_eq!(classify(&api(s, None, "x")), Disposition::Permanent, "{s}");
        }
        // The header overrides the status both ways.
        assert_eq!(
            classify(&api(500, Some(false), "x")),
            Disposition::Permanent
        );
        assert_eq!(
            classify(&api(400, Some(true), "x")),
            Disposition::Retry { after: None }
        );
    }

    #[test]
    fn duplicate_identifier_counts_as_delivered() {
        let dup = api(
            400,
            Some(false),
            "An event already exists with identifier om_1. Please use a different identifier.",
        );
        assert_eq!(classify(&dup), Disposition::Delivered);
    }

    #[test]
    fn cancel_too_old_is_recognized_and_nothing_else() {
        let err = |status, message: &str| match api(status, None, message) {
            Err(e) => e,
            Ok(_) => unreachable!(),
        };
        assert!(is_cancel_too_old(&err(
            400,
            "Meter events can only be cancelled within 24 hours of Stripe receiving them."
        )));
        assert!(is_cancel_too_old(&err(
            400,
            "This event is too old to cancel."
        )));
        assert!(!is_cancel_too_old(&err(
            400,
            "Missing required param: event_name."
        )));
        assert!(!is_cancel_too_old(&err(500, "within 24 hours")));
        assert!(!is_cancel_too_old(&StripeError::Network("reset".into())));
    }

    #[test]
    fn only_no_answer_or_a_server_error_may_have_been_applied() {
        assert!(maybe_applied(&Err(StripeError::Network("timeout".into()))));
        assert!(maybe_applied(&api(502, None, "x")));
        assert!(!maybe_applied(&api(400, None, "x")));
        assert!(!maybe_applied(&api(429, None, "x")));
    }

    #[test]
    fn backoff_grows_caps_and_honors_retry_after() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, base, max, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, None, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(3, base, max, None, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(40, base, max, None, 1.0), max);
        assert_eq!(
            backoff(0, base, max, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff(0, base, max, Some(Duration::from_secs(86_400)), 0.5),
            max,
            "Retry-After is honoured up to backoff_max"
        );
    }

    #[test]
    fn duplicate_reports_are_read_as_stripes_synchronous_answers_say_it() {
        assert!(says_duplicate("duplicate_meter_event", ""));
        assert!(says_duplicate("identifier_already_exists", ""));
        assert!(says_duplicate(
            "",
            "An event already exists with identifier om_1."
        ));
        assert!(!says_duplicate(
            "meter_event_customer_not_found",
            "No customer found with id cus_1."
        ));
    }
}
