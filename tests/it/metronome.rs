//! The Metronome client and its rules against the fake Metronome: batches of up
//! to 100, dedupe on `transaction_id`, retries that never double count, the
//! 34-day window, corrections, reconcile totals, and authentication.

use crate::support::{t0, Millis};
use chrono::{DateTime, Duration, Utc};
use outcome_meter::clock::{Clock, ManualClock};
use outcome_meter::metronome::rules::{
    batches, check_timestamp, classify, classify_batch, maybe_applied, reversal_event,
    BatchDisposition, Disposition, TimestampCheck,
};
use outcome_meter::metronome::{
    MetricAggregation, MetronomeClient, MetronomeError, OutcomeInput, UsageEvent, UsageQuery,
    WindowSize,
};
use testkit::fake_metronome::{Aggregate, FakeMetronome, Fault};

const CUSTOMER: &str = "d7abd0cd-4ae9-4db7-8676-e986a4ebd8dc";
const ALIAS: &str = "acme";
const METRIC: &str = "9570e4f3-d1da-4b95-ba81-bd40ee002727";
const EVENT_TYPE: &str = "resolved_ticket";

struct World {
    fake: FakeMetronome,
    client: MetronomeClient,
    clock: ManualClock,
}

async fn world() -> World {
    let fake = FakeMetronome::start().await;
    let clock = ManualClock::new(t0());
    let c = clock.clone();
    fake.set_clock(move || c.now().timestamp());
    fake.set_billable_metric(
        METRIC,
        "Resolved tickets",
        EVENT_TYPE,
        Aggregate::Sum("value".into()),
    );
    fake.add_ingest_alias(ALIAS, CUSTOMER);
    let client = MetronomeClient::new(
        &fake.base_url(),
        FakeMetronome::TOKEN,
        std::time::Duration::from_secs(5),
    )
    .expect("client");
    World {
        fake,
        client,
        clock,
    }
}

fn outcome(n: usize, value: i64, confirmed_at: DateTime<Utc>) -> OutcomeInput {
    OutcomeInput {
        id: format!("om_{n:032x}"),
        customer_id: ALIAS.into(),
        event_type: EVENT_TYPE.into(),
        value,
        confirmed_at: Millis::from(confirmed_at),
        ticket_id: format!("T-{n}"),
        provider: "zendesk".into(),
        seq: 1,
        contract_hash: "c0ffee".into(),
    }
}

fn events(n: usize, at: DateTime<Utc>) -> Vec<UsageEvent> {
    events_from(0, n, at)
}

/// `n` events worth 1 each, for outcomes `first..first + n`, a minute apart.
fn events_from(first: usize, n: usize, at: DateTime<Utc>) -> Vec<UsageEvent> {
    (first..first + n)
        .map(|i| {
            let at = at - Duration::minutes((i - first) as i64);
            UsageEvent::from_outcome(&outcome(i, 1, at))
        })
        .collect()
}

fn status(r: &Result<outcome_meter::metronome::Ack, MetronomeError>) -> Option<u16> {
    match r {
        Ok(ack) => Some(ack.status),
        Err(e) => e.status(),
    }
}

#[tokio::test]
async fn a_batch_of_one_hundred_is_recorded_whole_as_sent() {
    let w = world().await;
    let sent = events(100, t0());
    let chunks: Vec<_> = batches(&sent, 100).collect();
    assert_eq!(chunks.len(), 1);
    let result = w.client.ingest(chunks[0]).await;
    assert_eq!(classify(&result), Disposition::Delivered, "{result:?}");
    assert_eq!(w.fake.event_count(), 100);
    assert_eq!(w.fake.requests(), 1);
    let first = &w.fake.events()[0];
    assert_eq!(first.transaction_id, sent[0].transaction_id);
    assert_eq!(first.customer_id, ALIAS);
    assert_eq!(first.event_type, EVENT_TYPE);
    assert_eq!(first.timestamp, "2026-01-01T00:00:00.000Z");
    assert_eq!(first.properties["value"], "1");
    assert_eq!(first.properties["ticket"], "T-0");
    assert_eq!(first.properties["provider"], "zendesk");
    assert_eq!(first.properties["seq"], "1");
    assert_eq!(first.properties["contract_hash"], "c0ffee");
}

#[tokio::test]
async fn more_than_one_hundred_or_none_is_refused_and_nothing_recorded() {
    let w = world().await;
    let too_many = events(101, t0());
    let result = w.client.ingest(&too_many).await;
    assert_eq!(status(&result), Some(400), "{result:?}");
    assert_eq!(classify(&result), Disposition::Permanent);
    let empty = w.client.ingest(&[]).await;
    assert_eq!(status(&empty), Some(400));
    assert_eq!(w.fake.event_count(), 0);
    // `batches` never makes such a request.
    let sizes: Vec<usize> = batches(&too_many, 100).map(<[UsageEvent]>::len).collect();
    assert_eq!(sizes, vec![100, 1]);
    for b in batches(&too_many, 100) {
        let r = w.client.ingest(b).await;
        assert_eq!(classify(&r), Disposition::Delivered, "{r:?}");
    }
    assert_eq!(w.fake.event_count(), 101);
}

#[tokio::test]
async fn a_repeated_transaction_id_is_ignored() {
    let w = world().await;
    let batch = events(3, t0());
    for _ in 0..2 {
        let r = w.client.ingest(&batch).await;
        assert_eq!(classify(&r), Disposition::Delivered, "{r:?}");
    }
    // Regrouped with a new event: only the new one counts.
    let mut regrouped = events(4, t0());
    regrouped.reverse();
    let r = w.client.ingest(&regrouped).await;
    assert_eq!(classify(&r), Disposition::Delivered, "{r:?}");
    assert_eq!(w.fake.event_count(), 4);
    assert_eq!(w.fake.duplicates_ignored(), 6);
    assert_eq!(w.fake.sum(ALIAS, EVENT_TYPE, "value"), 4.0);
}

#[tokio::test]
async fn a_rate_limit_is_retried_no_sooner_than_metronome_asks() {
    let w = world().await;
    w.fake.push_fault(Fault::StatusWithRetryAfter(429, 7));
    let batch = events(10, t0());
    let result = w.client.ingest(&batch).await;
    assert_eq!(
        classify(&result),
        Disposition::Retry {
            after: Some(std::time::Duration::from_secs(7))
        }
    );
    assert!(!maybe_applied(&result), "a 429 records nothing");
    // The reporter's backoff waits at least that long (up to reporter.backoff_max).
    let after = match classify(&result) {
        Disposition::Retry { after } => after,
        _ => None,
    };
    let one = std::time::Duration::from_secs(1);
    let wait = outcome_meter::stripe::retry::backoff(0, one, 600 * one, after, 0.0);
    assert_eq!(wait, 7 * one);
    match &result {
        Err(MetronomeError::Api {
            rate_limit_type,
            request_id,
            message,
            ..
        }) => {
            assert_eq!(rate_limit_type.as_deref(), Some("client"));
            assert!(request_id.is_some());
            assert_eq!(message, "Too many requests");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    assert_eq!(w.fake.event_count(), 0);
    let again = w.client.ingest(&batch).await;
    assert_eq!(classify(&again), Disposition::Delivered);
    assert_eq!(w.fake.event_count(), 10);
}

#[tokio::test]
async fn a_batch_lost_in_flight_or_partly_recorded_is_resent_without_double_counting() {
    let w = world().await;
    let faults = [
        Fault::AcceptThenDrop,
        Fault::AcceptThenStatus(500),
        Fault::AcceptSomeThenStatus(20, 503),
        Fault::Status(502),
    ];
    for (k, fault) in faults.iter().enumerate() {
        let batch = events_from(1000 * k, 50, t0());
        w.fake.push_fault(fault.clone());
        let lost = w.client.ingest(&batch).await;
        assert!(
            matches!(classify(&lost), Disposition::Retry { .. }),
            "{fault:?}: {lost:?}"
        );
        assert!(
            maybe_applied(&lost),
            "{fault:?}: Metronome may hold some of it"
        );
        let resent = w.client.ingest(&batch).await;
        assert_eq!(classify(&resent), Disposition::Delivered, "{fault:?}");
        let expected = 50 * (k + 1);
        assert_eq!(w.fake.event_count(), expected, "{fault:?}");
        assert_eq!(
            w.fake.sum(ALIAS, EVENT_TYPE, "value"),
            expected as f64,
            "{fault:?}"
        );
    }
    // Recorded whole by the drop, the 500 and the partial 503 (20), then resent.
    assert_eq!(w.fake.duplicates_ignored(), 50 + 50 + 20);
    assert_eq!(w.fake.faults_injected(), 4);
}

#[tokio::test]
async fn too_old_is_recognised_before_sending_and_refused_by_metronome() {
    let w = world().await;
    let now = w.clock.now();
    let old = UsageEvent::from_outcome(&outcome(1, 1, now - Duration::days(35)));
    let recent = UsageEvent::from_outcome(&outcome(2, 1, now - Duration::days(33)));
    let future = UsageEvent::from_outcome(&outcome(3, 1, now + Duration::hours(25)));
    assert_eq!(check_timestamp(old.at_ms, now), TimestampCheck::TooOld);
    assert_eq!(
        check_timestamp(recent.at_ms, now),
        TimestampCheck::Acceptable
    );
    assert!(matches!(
        check_timestamp(future.at_ms, now),
        TimestampCheck::Ahead { .. }
    ));
    for refused in [&old, &future] {
        let r = w.client.ingest(std::slice::from_ref(refused)).await;
        assert_eq!(status(&r), Some(400), "{r:?}");
        assert_eq!(
            classify_batch(&r, 1),
            BatchDisposition::All(Disposition::Permanent)
        );
    }
    let r = w.client.ingest(std::slice::from_ref(&recent)).await;
    assert_eq!(classify(&r), Disposition::Delivered, "{r:?}");
    // A day later the same event is older than 34 days less the margin: parked, not resent.
    w.clock.advance(Duration::days(1));
    assert_eq!(
        check_timestamp(recent.at_ms, w.clock.now()),
        TimestampCheck::TooOld
    );
    assert_eq!(w.fake.event_count(), 1);
}

#[tokio::test]
async fn a_refused_batch_is_isolated_so_only_the_bad_event_is_parked() {
    let w = world().await;
    let now = w.clock.now();
    let mut batch = events(3, now);
    batch[1] = UsageEvent::from_outcome(&outcome(9, 1, now - Duration::days(40)));
    let r = w.client.ingest(&batch).await;
    assert_eq!(status(&r), Some(400));
    assert_eq!(classify_batch(&r, batch.len()), BatchDisposition::Isolate);
    assert_eq!(w.fake.event_count(), 0);
    let mut parked = Vec::new();
    for ev in &batch {
        let alone = w.client.ingest(std::slice::from_ref(ev)).await;
        match classify_batch(&alone, 1) {
            BatchDisposition::All(Disposition::Delivered) => {}
            BatchDisposition::All(Disposition::Permanent) => parked.push(ev.transaction_id.clone()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(parked, vec![batch[1].transaction_id.clone()]);
    assert_eq!(w.fake.event_count(), 2);
}

#[tokio::test]
async fn usage_totals_match_what_was_sent_corrections_included() {
    let w = world().await;
    let start = t0() - Duration::days(3);
    let sent: Vec<UsageEvent> = [(1, 1, 2), (2, 2, 1), (3, 3, 0)]
        .iter()
        .map(|&(n, v, days_ago)| {
            UsageEvent::from_outcome(&outcome(
                n,
                v,
                t0() - Duration::days(days_ago) + Duration::hours(1),
            ))
        })
        .collect();
    // Another customer and an event outside the window do not count.
    let mut other = UsageEvent::from_outcome(&outcome(4, 100, t0()));
    other.customer_id = "someone-else".into();
    let outside = UsageEvent::from_outcome(&outcome(5, 100, start - Duration::hours(1)));
    let mut all = sent.clone();
    all.extend([other, outside]);
    assert!(w.client.ingest(&all).await.is_ok());
    let end = t0() + Duration::days(1);
    let total = w.client.usage_total(CUSTOMER, METRIC, start, end).await;
    assert_eq!(total.ok(), Some(6.0));

    // Clawback of the outcome worth 2: a negating event, dated now, subtracts it.
    w.clock.advance(Duration::hours(2));
    let reversal = reversal_event(
        &outcome(2, 2, t0() - Duration::days(1) + Duration::hours(1)),
        Millis::from(w.clock.now()),
        MetricAggregation::Sum,
    )
    .expect("a sum metric");
    assert!(w
        .client
        .ingest(std::slice::from_ref(&reversal))
        .await
        .is_ok());
    assert!(w
        .client
        .ingest(std::slice::from_ref(&reversal))
        .await
        .is_ok());
    let total = w.client.usage_total(CUSTOMER, METRIC, start, end).await;
    assert_eq!(total.ok(), Some(4.0), "the resent correction counts once");

    // Day by day, two aggregates a page: every page is read.
    w.fake.set_usage_page_size(2);
    let before = w.fake.usage_requests();
    let q = UsageQuery::one(CUSTOMER, METRIC, start, end, WindowSize::Day);
    let days = w.client.usage(&q).await.expect("usage");
    assert_eq!(w.fake.usage_requests() - before, 2);
    let values: Vec<Option<f64>> = days.iter().map(|d| d.value).collect();
    assert_eq!(values, vec![None, Some(1.0), Some(2.0), Some(1.0)]);
    assert_eq!(days[0].start_timestamp, "2025-12-29T00:00:00Z");
}

#[tokio::test]
async fn a_bad_token_is_permanent() {
    let w = world().await;
    let client = MetronomeClient::new(
        &w.fake.base_url(),
        "not-the-token",
        std::time::Duration::from_secs(5),
    )
    .expect("client");
    let batch = events(5, t0());
    let r = client.ingest(&batch).await;
    assert_eq!(status(&r), Some(401), "{r:?}");
    assert_eq!(classify(&r), Disposition::Permanent);
    assert_eq!(
        classify_batch(&r, batch.len()),
        BatchDisposition::All(Disposition::Permanent)
    );
    let usage = client
        .usage_total(CUSTOMER, METRIC, t0() - Duration::days(1), t0())
        .await;
    assert!(matches!(
        usage,
        Err(MetronomeError::Api { status: 401, .. })
    ));
    assert_eq!(w.fake.event_count(), 0);
}

#[tokio::test]
async fn no_answer_at_all_is_a_network_error_to_retry() {
    let client = MetronomeClient::new(
        "http://127.0.0.1:1",
        FakeMetronome::TOKEN,
        std::time::Duration::from_secs(2),
    )
    .expect("client");
    let r = client.ingest(&events(1, t0())).await;
    assert!(matches!(r, Err(MetronomeError::Network(_))), "{r:?}");
    assert_eq!(classify(&r), Disposition::Retry { after: None });
}

#[tokio::test]
async fn the_dedupe_window_is_34_days_which_is_why_nothing_is_sent_far_ahead() {
    let w = world().await;
    let start = w.clock.now();
    // Metronome takes a timestamp up to 24 hours ahead; this sink holds it instead.
    let ahead = UsageEvent::from_outcome(&outcome(1, 1, start + Duration::hours(23)));
    assert!(matches!(
        check_timestamp(ahead.at_ms, start),
        TimestampCheck::Ahead { .. }
    ));
    // At most 5 minutes ahead, it is sent.
    let near = UsageEvent::from_outcome(&outcome(2, 1, start + Duration::minutes(5)));
    assert_eq!(
        check_timestamp(near.at_ms, start),
        TimestampCheck::Acceptable
    );
    let both = [ahead.clone(), near.clone()];
    assert!(w.client.ingest(&both).await.is_ok());
    w.clock.advance(Duration::days(34) - Duration::seconds(1));
    assert!(w.client.ingest(&both).await.is_ok());
    assert_eq!(w.fake.event_count(), 2, "within 34 days: ignored");
    // 34 days after acceptance the window has closed. The event sent 23 hours
    // early is then only 33 days old: Metronome takes it again and counts it twice.
    w.clock.advance(Duration::seconds(1));
    let r = w.client.ingest(std::slice::from_ref(&ahead)).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(w.fake.event_count(), 3);
    // The one sent at most 5 minutes early was already past the sink's limit,
    // so it would have been parked, never resent.
    assert_eq!(
        check_timestamp(near.at_ms, w.clock.now()),
        TimestampCheck::TooOld
    );
}
