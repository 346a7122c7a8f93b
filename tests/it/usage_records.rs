//! Stripe legacy usage records against the fake Stripe: the pinned legacy
//! `Stripe-Version`, replays under one idempotency key, summaries, records in
//! doubt after the key's 24 hours, clawback by `action=set`, reconcile, the
//! preflight of a subscription item, and Connect.

use crate::support::t0;
use chrono::{DateTime, Duration, Utc};
use outcome_meter::clock::{Clock, ManualClock};
use outcome_meter::stripe::usage_records::rules::{
    after_same_key, check_timestamp, classify, current_period, item_problems, judge_doubt,
    maybe_applied, park_reason, plan_resend, plan_reversal, reconcile, record_key, refusal,
    reversal_key, Disposition, DoubtVerdict, InDoubt, LineStatus, LocalRecord, PeriodLedger,
    RecordState, Refusal, Resend, Reversal, ReversalInput, SameKeyAnswer, TimestampCheck,
    LEGACY_API_VERSION,
};
use outcome_meter::stripe::usage_records::{Period, Recorded, UsageRecord, UsageRecordSummary};
use outcome_meter::stripe::{StripeClient, StripeError};
use testkit::fake_stripe::{FakeStripe, Fault};

const ITEM: &str = "si_usage_legacy_1";
const DAY: i64 = 86_400;

struct World {
    fake: FakeStripe,
    /// The main client (2025-03-31.basil) and the legacy one made from it.
    basil: StripeClient,
    legacy: StripeClient,
    clock: ManualClock,
    period: Period,
}

async fn world() -> World {
    let fake = FakeStripe::start().await;
    let clock = ManualClock::new(t0());
    let c = clock.clone();
    fake.set_clock(move || c.now().timestamp());
    let now = t0().timestamp();
    let period = Period {
        start: now - 10 * DAY,
        end: now + 20 * DAY,
    };
    fake.add_subscription_item(ITEM, period.start, period.end);
    let basil = StripeClient::new(
        &fake.base_url(),
        FakeStripe::API_KEY,
        "2025-03-31.basil",
        std::time::Duration::from_secs(5),
    )
    .expect("client");
    let legacy = basil.legacy_usage(LEGACY_API_VERSION).expect("legacy");
    World {
        fake,
        basil,
        legacy,
        clock,
        period,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn inc(quantity: i64, timestamp: i64) -> UsageRecord {
    UsageRecord::increment(quantity, timestamp).expect("non-negative")
}

impl World {
    async fn send(&self, r: &UsageRecord, key: &str) -> Result<Recorded, StripeError> {
        self.legacy.create_usage_record(ITEM, r, key, None).await
    }

    async fn summaries(&self) -> Vec<UsageRecordSummary> {
        self.legacy
            .usage_record_summaries(ITEM, None)
            .await
            .expect("summaries")
    }

    async fn stripe_total(&self) -> i64 {
        let sums = self.summaries().await;
        let current = current_period(&sums).expect("a current period");
        sums.iter()
            .find(|s| s.billing_period() == Some(current))
            .map_or(0, |s| s.total_usage)
    }

    /// A form POST of our own (what the typed client never sends).
    async fn raw_post(&self, form: &str, version: Option<&str>) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .post(format!(
                "{}/v1/subscription_items/{ITEM}/usage_records",
                self.fake.base_url()
            ))
            .bearer_auth(FakeStripe::API_KEY)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form.to_string());
        if let Some(v) = version {
            req = req.header("Stripe-Version", v);
        }
        let resp = req.send().await.expect("answer");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or_default())
    }
}

#[tokio::test]
async fn a_usage_record_is_created_on_the_pinned_legacy_version() {
    let w = world().await;
    let ts = t0().timestamp() - 3600;
    let result = w.send(&inc(3, ts), &record_key("om_1", 0)).await;
    assert_eq!(classify(&result), Disposition::Delivered, "{result:?}");
    let recorded = result.expect("recorded");
    assert!(!recorded.ack.replayed);
    assert!(recorded.ack.request_id.is_some());
    assert_eq!(recorded.ack.livemode, Some(false));
    let object = recorded.record.expect("a usage_record object");
    assert!(object.id.starts_with("mbur_"), "{}", object.id);
    assert_eq!(
        (
            object.quantity,
            object.timestamp,
            object.subscription_item.as_str()
        ),
        (3, ts, ITEM)
    );
    let sent = w.fake.usage_records();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].stripe_version.as_deref(), Some("2025-02-24.acacia"));
    assert_eq!(sent[0].action, "increment");
    assert_eq!(
        sent[0].idempotency_key.as_deref(),
        Some("om_1:usage_record:0")
    );
    assert_eq!(sent[0].account, None);
    let sums = w.summaries().await;
    assert_eq!(current_period(&sums), Some(w.period));
    assert_eq!(sums[0].total_usage, 3);
    assert_eq!(sums[0].invoice, None, "the open period is not billed yet");
}

#[tokio::test]
async fn a_resend_under_the_same_key_is_replayed_and_counted_once() {
    let w = world().await;
    let r = inc(2, t0().timestamp() - 60);
    let key = record_key("om_2", 0);
    let first = w.send(&r, &key).await.expect("first");
    let again = w.send(&r, &key).await.expect("replayed");
    assert!(again.ack.replayed, "Idempotent-Replayed: true");
    assert_eq!(again.record, first.record, "the saved answer");
    assert_eq!(w.fake.usage_records().len(), 1);
    assert_eq!(w.stripe_total().await, 2);
    // The same key with other parameters is a bug, never a second record.
    let other = w.send(&inc(5, t0().timestamp() - 60), &key).await;
    assert_eq!(classify(&other), Disposition::Permanent);
    let err = other.expect_err("refused");
    assert_eq!(refusal(&err), Some(Refusal::IdempotencyMismatch));
    assert_eq!(w.stripe_total().await, 2);
}

#[tokio::test]
async fn usage_records_are_refused_without_a_legacy_stripe_version() {
    let w = world().await;
    let r = inc(1, t0().timestamp() - 60);
    let result = w
        .basil
        .create_usage_record(ITEM, &r, &record_key("om_3", 0), None)
        .await;
    assert_eq!(classify(&result), Disposition::Permanent, "{result:?}");
    let err = result.expect_err("refused on 2025-03-31.basil");
    assert_eq!(err.status(), Some(400));
    assert_eq!(refusal(&err), Some(Refusal::ApiVersion));
    let why = park_reason(&err, false);
    assert!(why.contains("stripe.legacy_api_version"), "{why}");
    let sums = w.basil.usage_record_summaries(ITEM, None).await;
    assert_eq!(
        sums.map_err(|e| refusal(&e)),
        Err(Some(Refusal::ApiVersion))
    );
    // No Stripe-Version at all: the account's default, 2025-03-31.basil or later here.
    let form = format!("quantity=1&timestamp={}", t0().timestamp() - 60);
    let (status, body) = w.raw_post(&form, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("API version"));
    assert!(w.fake.usage_records().is_empty());
    // The legacy client is refused for a version without usage records.
    assert!(w.basil.legacy_usage("2025-03-31.basil").is_err());
    w.fake.set_account_api_version("2024-06-20");
    let (status, body) = w.raw_post(&form, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.fake.usage_records().len(), 1);
}

#[tokio::test]
async fn summaries_are_read_page_by_page_newest_first() {
    let w = world().await;
    // 105 closed daily periods after the first one, one record in each, then the open one.
    let mut expected = Vec::new();
    let mut end = w.period.end;
    for i in 0..105i64 {
        w.clock.set(at(end - 10));
        let q = i % 3 + 1;
        let r = w
            .send(&inc(q, end - 20), &record_key(&format!("om_p{i}"), 0))
            .await;
        assert_eq!(classify(&r), Disposition::Delivered, "{r:?}");
        expected.push(q);
        let next = end + DAY;
        assert!(w.fake.start_next_period(ITEM, next).is_some());
        end = next;
    }
    let sums = w.summaries().await;
    assert_eq!(sums.len(), 106, "more than one page of 100");
    assert!(sums
        .windows(2)
        .all(|p| p[0].period.start > p[1].period.start));
    assert_eq!(sums[0].total_usage, 0);
    assert_eq!(sums[0].invoice, None);
    let totals: Vec<i64> = sums[1..].iter().rev().map(|s| s.total_usage).collect();
    assert_eq!(totals, expected);
    assert!(sums[1..].iter().all(|s| s.invoice.is_some()));
    let mut ids: Vec<&str> = sums.iter().map(|s| s.id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 106, "no summary twice");
}

#[tokio::test]
async fn a_record_in_doubt_is_resent_under_its_key_within_23_hours() {
    let w = world().await;
    let first_call = w.clock.now();
    let r = inc(4, first_call.timestamp() - 60);
    let key = record_key("om_4", 0);
    w.fake.push_usage_record_fault(Fault::AcceptThenDrop);
    let lost = w.send(&r, &key).await;
    assert!(maybe_applied(&lost), "{lost:?}");
    assert_eq!(classify(&lost), Disposition::Retry { after: None });
    w.clock.advance(Duration::hours(22));
    assert_eq!(
        plan_resend(first_call, w.clock.now(), true),
        Resend::SameKey
    );
    let again = w.send(&r, &key).await;
    assert_eq!(after_same_key(&again), SameKeyAnswer::Recorded);
    assert!(again.expect("replayed").ack.replayed);
    assert_eq!(w.stripe_total().await, 4, "counted once");
    assert_eq!(w.fake.usage_records().len(), 1);
}

#[tokio::test]
async fn after_23_hours_a_record_in_doubt_is_judged_from_the_summaries_not_resent() {
    let w = world().await;
    let now = t0().timestamp();
    // One acknowledged record, then three calls without a definite answer.
    assert_eq!(
        classify(&w.send(&inc(5, now - 7200), &record_key("om_ok", 0)).await),
        Disposition::Delivered
    );
    let landed = inc(1, now - 3600); // recorded, answer lost
    let saved_500 = inc(2, now - 3000); // execution failed, 500 saved under its key
    let not_executed = inc(3, now - 2400); // 503 before executing, nothing saved
    w.fake.push_usage_record_fault(Fault::AcceptThenDrop);
    w.fake.push_usage_record_fault(Fault::Saved5xx(500));
    w.fake.push_usage_record_fault(Fault::Status(503));
    let first_call = w.clock.now();
    for (r, id) in [
        (&landed, "om_a"),
        (&saved_500, "om_b"),
        (&not_executed, "om_c"),
    ] {
        let result = w.send(r, &record_key(id, 0)).await;
        assert!(maybe_applied(&result), "{id}: {result:?}");
    }
    // Within the key's life, the saved 500 is replayed to its key: still in doubt.
    let replay = w.send(&saved_500, &record_key("om_b", 0)).await;
    assert_eq!(after_same_key(&replay), SameKeyAnswer::StillInDoubt);
    assert_eq!(classify(&replay), Disposition::Retry { after: None });
    let last_call = w.clock.now();

    w.clock.advance(Duration::hours(25));
    let now_w = w.clock.now();
    assert_eq!(
        plan_resend(first_call, now_w, true),
        Resend::CheckSummariesFirst
    );
    let requests = w.fake.usage_record_requests();
    let in_doubt = vec![
        InDoubt {
            id: "om_a".into(),
            quantity: 1,
        },
        InDoubt {
            id: "om_b".into(),
            quantity: 2,
        },
        InDoubt {
            id: "om_c".into(),
            quantity: 3,
        },
    ];
    let ledger = PeriodLedger {
        period: w.period,
        known_total: 5,
        in_doubt: &in_doubt,
        last_call_at: Some(last_call),
    };
    let verdict = judge_doubt(&ledger, &w.summaries().await, now_w);
    assert_eq!(
        verdict,
        DoubtVerdict::Decided {
            landed: vec!["om_a".into()],
            not_landed: vec!["om_b".into(), "om_c".into()],
        }
    );
    assert_eq!(
        w.fake.usage_record_requests(),
        requests,
        "nothing sent to settle"
    );
    // What did not land is sent with a new key, if its timestamp is still acceptable.
    for (r, id) in [(&saved_500, "om_b"), (&not_executed, "om_c")] {
        assert_eq!(
            check_timestamp(r.timestamp, w.period, now_w),
            TimestampCheck::Acceptable
        );
        let result = w.send(r, &record_key(id, 1)).await;
        assert_eq!(
            classify(&result),
            Disposition::Delivered,
            "{id}: {result:?}"
        );
    }
    assert_eq!(w.stripe_total().await, 5 + 1 + 2 + 3, "each counted once");
}

#[tokio::test]
async fn a_blind_resend_after_the_keys_24_hours_counts_twice() {
    // Why `plan_resend` checks the summaries: Stripe forgets the key, and a usage
    // record has no identifier of its own.
    let w = world().await;
    let r = inc(7, t0().timestamp() - 60);
    let key = record_key("om_blind", 0);
    w.fake.push_usage_record_fault(Fault::AcceptThenDrop);
    assert!(maybe_applied(&w.send(&r, &key).await));
    w.clock.advance(Duration::hours(25));
    let again = w.send(&r, &key).await.expect("executed again");
    assert!(!again.ack.replayed);
    assert_eq!(w.stripe_total().await, 14);
}

#[tokio::test]
async fn timestamps_outside_the_current_period_are_refused_with_no_grace() {
    let w = world().await;
    let now = t0().timestamp();
    for (ts, check) in [
        (w.period.start, TimestampCheck::BeforePeriod),
        (
            now + 3600,
            TimestampCheck::Ahead {
                ready_at: at(now + 3630),
            },
        ),
    ] {
        assert_eq!(check_timestamp(ts, w.period, w.clock.now()), check);
        let result = w.send(&inc(1, ts), &record_key("om_t", 0)).await;
        assert_eq!(classify(&result), Disposition::Permanent, "{result:?}");
        assert_eq!(
            refusal(&result.expect_err("refused")),
            Some(Refusal::OutsidePeriod)
        );
    }
    // The period ends; while its invoice is a draft, its usage is closed already.
    let last = w.period.end - 60;
    w.clock.set(at(w.period.end + 1800));
    let invoice = w.fake.start_next_period(ITEM, w.period.end + 30 * DAY);
    assert!(invoice.is_some());
    let sums = w.summaries().await;
    let current = current_period(&sums).expect("current");
    assert_eq!(current.start, w.period.end);
    assert_eq!(
        check_timestamp(last, current, w.clock.now()),
        TimestampCheck::BeforePeriod
    );
    let result = w.send(&inc(1, last), &record_key("om_late", 0)).await;
    let err = result.expect_err("refused");
    assert!(format!("{err}").contains("last invoice period"), "{err}");
    assert!(w.fake.usage_records().is_empty());
}

#[tokio::test]
async fn a_reversal_sets_the_usage_at_its_timestamp_once_or_is_parked() {
    let w = world().await;
    let now = t0().timestamp();
    let ts = now - 600;
    // Two outcomes in the same second, one in another.
    for (q, id, t) in [(1, "om_x", ts), (2, "om_y", ts), (4, "om_z", now - 300)] {
        let r = w.send(&inc(q, t), &record_key(id, 0)).await;
        assert_eq!(classify(&r), Disposition::Delivered);
    }
    assert_eq!(w.stripe_total().await, 7);
    // An increment cannot subtract: the builder refuses, and so does Stripe.
    assert!(UsageRecord::increment(-2, ts).is_err());
    let (status, body) = w
        .raw_post(
            &format!("quantity=-2&timestamp={ts}"),
            Some(LEGACY_API_VERSION),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "quantity");
    assert_eq!(w.stripe_total().await, 7);
    // Reverse om_y: the usage at its second becomes 3 - 2.
    let input = ReversalInput {
        timestamp: ts,
        quantity: 2,
        state: RecordState::Landed,
        at_timestamp: 3,
        others_in_doubt: false,
        current_period: w.period,
        invoice: None,
    };
    let Reversal::Set(set) = plan_reversal(&input) else {
        panic!("a set")
    };
    assert_eq!(
        set.encoded(),
        format!("quantity=1&timestamp={ts}&action=set")
    );
    let r = w.send(&set, &reversal_key("om_y", 0)).await;
    assert_eq!(classify(&r), Disposition::Delivered, "{r:?}");
    assert_eq!(w.stripe_total().await, 5);
    // Sent again (a lost answer, another key a day later): it subtracts once.
    w.clock.advance(Duration::hours(25));
    let r = w.send(&set, &reversal_key("om_y", 1)).await;
    assert_eq!(classify(&r), Disposition::Delivered);
    assert_eq!(w.stripe_total().await, 5);
    // Once the period has ended, a reversal is parked with the invoice to credit.
    let invoice = w.fake.start_next_period(ITEM, w.period.end + 30 * DAY);
    w.clock.set(at(w.period.end + 60));
    let sums = w.summaries().await;
    let current = current_period(&sums).expect("current");
    let past = ReversalInput {
        current_period: current,
        invoice: invoice.as_deref(),
        at_timestamp: 4,
        quantity: 4,
        timestamp: now - 300,
        ..input
    };
    let Reversal::Manual(why) = plan_reversal(&past) else {
        panic!("parked")
    };
    assert!(why.contains(invoice.as_deref().unwrap_or("?")), "{why}");
    // Stripe would have refused it anyway.
    let late = UsageRecord::set(0, now - 300).expect("set");
    let refused = w.send(&late, &reversal_key("om_z", 0)).await;
    assert_eq!(
        refusal(&refused.expect_err("refused")),
        Some(Refusal::OutsidePeriod)
    );
}

#[tokio::test]
async fn reconcile_compares_local_totals_with_the_summaries() {
    let w = world().await;
    let now = t0().timestamp();
    let mut local = Vec::new();
    for (i, q) in [2i64, 3].iter().enumerate() {
        let ts = now - 3600 * (i as i64 + 1);
        assert_eq!(
            classify(
                &w.send(&inc(*q, ts), &record_key(&format!("om_r{i}"), 0))
                    .await
            ),
            Disposition::Delivered
        );
        local.push(LocalRecord {
            timestamp: ts,
            quantity: *q,
            in_doubt: false,
        });
    }
    let r = reconcile(&local, &w.summaries().await, w.clock.now());
    assert_eq!(r.lines.len(), 1);
    assert_eq!(r.lines[0].status, LineStatus::Match);
    assert!(r.lines[0].open);
    assert_eq!((r.lines[0].local, r.lines[0].stripe), (5, 5));
    // Someone else writes on the item: the difference shows.
    let other = w.send(&inc(4, now - 100), "not-outcome-meter").await;
    assert_eq!(classify(&other), Disposition::Delivered);
    let r = reconcile(&local, &w.summaries().await, w.clock.now());
    assert_eq!(r.lines[0].status, LineStatus::Differs { delta: 4 });
}

#[tokio::test]
async fn an_item_not_on_a_legacy_price_or_unknown_is_refused_for_good() {
    let w = world().await;
    let info = w.legacy.subscription_item(ITEM, None).await.expect("item");
    assert_eq!(item_problems(&info), Vec::<String>::new());
    // Read with 2025-03-31.basil, the price no longer says how it aggregates.
    let basil_view = w.basil.subscription_item(ITEM, None).await.expect("item");
    assert_eq!(item_problems(&basil_view).len(), 1);
    w.fake.set_subscription_item_price(ITEM, "max", None);
    let info = w.legacy.subscription_item(ITEM, None).await.expect("item");
    assert!(item_problems(&info)[0].contains("`max`"));
    w.fake
        .set_subscription_item_price(ITEM, "sum", Some("mtr_test_1"));
    let info = w.legacy.subscription_item(ITEM, None).await.expect("item");
    assert!(item_problems(&info)[0].contains("mtr_test_1"));
    let r = w
        .send(&inc(1, t0().timestamp() - 60), &record_key("om_m", 0))
        .await;
    assert_eq!(classify(&r), Disposition::Permanent);
    assert_eq!(
        refusal(&r.expect_err("refused")),
        Some(Refusal::NotLegacyItem)
    );
    let r = w
        .legacy
        .create_usage_record("si_unknown", &inc(1, t0().timestamp() - 60), "k", None)
        .await;
    assert_eq!(refusal(&r.expect_err("404")), Some(Refusal::NoSuchItem));
    assert!(w.fake.usage_records().is_empty());
}

#[tokio::test]
async fn a_connected_accounts_item_is_reached_with_its_stripe_account() {
    let w = world().await;
    let item = "si_connected_1";
    w.fake
        .add_subscription_item_on("acct_1Nv0FGQ9RKHgCVdK", item, w.period.start, w.period.end);
    let r = inc(2, t0().timestamp() - 60);
    let on_account = w
        .legacy
        .create_usage_record(item, &r, "k1", Some("acct_1Nv0FGQ9RKHgCVdK"))
        .await;
    assert_eq!(
        classify(&on_account),
        Disposition::Delivered,
        "{on_account:?}"
    );
    let platform = w.legacy.create_usage_record(item, &r, "k2", None).await;
    assert_eq!(
        refusal(&platform.expect_err("404")),
        Some(Refusal::NoSuchItem)
    );
    let sums = w
        .legacy
        .usage_record_summaries(item, Some("acct_1Nv0FGQ9RKHgCVdK"))
        .await
        .expect("summaries");
    assert_eq!(sums[0].total_usage, 2);
    assert_eq!(
        w.fake.usage_records()[0].account.as_deref(),
        Some("acct_1Nv0FGQ9RKHgCVdK")
    );
    assert_eq!(w.fake.usage_total(item), 2);
}
