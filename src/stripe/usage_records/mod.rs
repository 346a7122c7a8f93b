//! Stripe legacy usage records as a billing sink (issue 15): the request and
//! the objects ([`record`]), the calls on [`crate::stripe::StripeClient`]
//! ([`client`]), the pure rules for resends, in-doubt records, clawback and
//! reconcile ([`rules`]), the settings' checks ([`settings`]) and the
//! preflight of a tenant's item ([`item_check`]). The sink that uses them is
//! `crate::reporter` (`usage_records.rs`); see `docs/usage-records.md`.
//!
//! Found in Stripe's documentation (read 2026-08):
//! - `POST /v1/subscription_items/{subscription_item}/usage_records`, form
//!   parameters `quantity` (integer, required), `action` (`increment`, the
//!   default, or `set`: "The `set` action will overwrite the usage quantity at
//!   that timestamp. If the subscription has billing thresholds, `increment` is
//!   the only allowed value") and `timestamp` (integer or `now`: "must be within
//!   the current billing period of the subscription of the provided
//!   `subscription_item`, and must not be in the future"). "When there is more
//!   than one usage record with the same timestamp, Stripe adds the quantity
//!   values together." Answer: the `usage_record` object `{id, object:
//!   "usage_record", livemode, quantity, subscription_item, timestamp}`.
//!   <https://docs.stripe.com/api/usage_records/create?api-version=2025-02-24.acacia>
//! - `GET /v1/subscription_items/{subscription_item}/usage_record_summaries`
//!   (`limit` 1 to 100, default 10; `starting_after`, `ending_before`): objects
//!   `usage_record_summary` `{id, invoice (nullable), livemode, period {start,
//!   end}, subscription_item, total_usage}`; "sorted in reverse-chronological
//!   order (newest first). The first list item represents the most current usage
//!   period that hasn't ended yet [...] should be seen as unstable until the
//!   subscription billing period ends"; a period holds "All usage after the start
//!   date and up to, and including, the end date".
//!   <https://docs.stripe.com/api/usage-record-summary/list?api-version=2025-02-24.acacia>
//! - Removed from API version 2025-03-31.basil on ("Removed: UsageRecordSummary,
//!   UsageRecord"; legacy metered prices can no longer be attached to
//!   subscriptions); the changelog links the last version that has them,
//!   2025-02-24.acacia, and 2025-05-28.basil says "legacy usage records endpoints
//!   [...] are still unavailable on newer API endpoints".
//!   <https://docs.stripe.com/changelog/basil/2025-03-31/deprecate-legacy-usage-based-billing>,
//!   <https://docs.stripe.com/changelog/basil/2025-05-28/reintroduce-billing-thresholds>
//! - "Use idempotency keys to ensure usage isn't reported more than once"; "The
//!   `timestamp` has to be within the current billing period, otherwise the call
//!   fails"; "the Stripe API has a rate limit of 100 calls per second per account".
//!   <https://docs.stripe.com/billing/subscriptions/usage-based-legacy/recording-usage>
//! - Idempotency keys "can be removed from the system automatically after they're
//!   at least 24 hours old"; the first result is saved once execution began, 500s
//!   included. <https://docs.stripe.com/api/idempotent_requests>
//!
//! Seen in reports of Stripe's answers (not in its reference):
//! - A timestamp before the current period: 400 `invalid_request_error`, `param:
//!   timestamp`, "Cannot create the usage record with this timestamp because
//!   timestamps must be after the subscription's last invoice period (or current
//!   period start time)." (<https://github.com/authgear/authgear-server/issues/2430>),
//!   also while the previous period's invoice is still a draft
//!   (<https://github.com/stripe/stripe-node/issues/725>): no grace period.
//! - An item whose price is on a meter: "Cannot create a usage record for `si_…`
//!   because it is not on the legacy metered billing system. Call
//!   /v1/billing/meter_events instead."
//!   (<https://github.com/laravel/cashier-stripe/issues/1709>).
//! - "Once a Usage Record has been created, there is no way to delete it [...] To
//!   correct Usage Records that were originally created with action:increment,
//!   [...] retrieve the current total usage reported for that timestamp, subtract
//!   the quantity they want to delete, and use that value as the quantity" with
//!   `action=set` (a Stripe staff answer, quoted in
//!   <https://doublepost.link/guild/841573134531821608/thread/937871096252858429/p/937871204566597652/>);
//!   "`set` only works if you re-use the same timestamp"
//!   (<https://github.com/stripe/stripe-python/pull/607>).
//!
//! Assumed (Stripe does not say): a negative `quantity` is refused with Stripe's
//! usual 400 "Invalid non-negative integer" (SDKs type it unsigned); the refusal
//! of these endpoints under 2025-03-31.basil or later is a 4xx (its status and
//! text are not documented: [`rules::refusal`] recognises a 404 "Unrecognized
//! request URL" or a message naming the API version); summaries reflect a new
//! record within [`rules::SUMMARY_LAG`].

pub mod client;
pub mod item_check;
pub mod record;
pub mod rules;
pub mod settings;

pub use record::{
    Period, Recorded, SubscriptionItemInfo, UsageAction, UsageRecord, UsageRecordError,
    UsageRecordObject, UsageRecordSummary,
};
