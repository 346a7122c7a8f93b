//! The reporter against a fake Stripe: retries, permanent failures, dry-run,
//! and crashes between Stripe's accept and the local mark.

use crate::support::*;
use outcome_meter::clock::Clock;
use outcome_meter::outcome::{idempotency_key, outcome_id};
use outcome_meter::settings::StripeMode;
use outcome_meter::stripe::MeterEvent;
use std::time::Duration;
use testkit::fake_stripe::{FakeStripe, Fault};

/// One confirmed, billable outcome waiting in the outbox.
async fn app_with_one_outcome(backend: Backend, stripe: &FakeStripe) -> TestApp {
    with_one_outcome(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await
}

async fn transient_failures_are_retried_until_billed_once(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::StatusWithRetryAfter(429, 30));
    stripe.push_fault(Fault::Status(500));
    stripe.push_fault(Fault::Status(503));
    stripe.push_fault(Fault::Delay(Duration::from_millis(1500))); // longer than the client timeout
    let app = app_with_one_outcome(backend, &stripe).await;

    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("pending", 1));
    app.run_reporter().await;
    assert_eq!(
        app.outcomes().await[0].attempts,
        1,
        "Retry-After: 30s not yet passed"
    );

    for expected_attempts in 2..=4 {
        app.clock.advance(chrono::Duration::minutes(30));
        app.run_reporter().await;
        assert_eq!(app.outcomes().await[0].attempts, expected_attempts);
    }
    // The delayed request was recorded by Stripe after our timeout; the retry is replayed.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    app.clock.advance(chrono::Duration::minutes(30));
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "reported");
    assert_eq!(stripe.events().len(), 1);
    assert_eq!(stripe.requests(), 5);
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(attempts.len(), 5);
    assert_eq!(attempts[0].status_code, Some(429));
    assert!(attempts[0].request_id.is_some());
    app.stop().await;
}

async fn permanent_refusal_is_parked_as_failed_with_stripes_message(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::ShouldRetryFalse(400));
    let app = app_with_one_outcome(backend, &stripe).await;
    app.run_reporter().await;
    let failed = app
        .services
        .store
        .list_outcomes(&outcome_meter::store::OutcomeFilter {
            state: Some(outcome_meter::lifecycle::OutcomeState::Failed),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("400")),
        "{:?}",
        failed[0].last_error
    );
    assert!(failed[0]
        .stripe_request_id
        .as_deref()
        .is_some_and(|r| r.starts_with("req_")));
    app.advance_hours(24);
    app.run_reporter().await;
    assert_eq!(stripe.requests(), 1, "failed outcomes wait for an operator");

    // The operator fixes the cause and replays: same identifier, billed once.
    let n = app
        .services
        .store
        .requeue_failed(
            Some(TENANT),
            None,
            Millis::EPOCH,
            Millis::from_ms(i64::MIN),
            false,
        )
        .await
        .expect("requeue");
    assert_eq!(n, (1, 0, 0));
    assert_eq!(
        app.outcomes().await[0].attempts,
        0,
        "a replayed outcome gets a fresh retry budget"
    );
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

async fn restart_after_stripe_accepted_but_before_the_mark_does_not_double_bill(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.push_fault(Fault::AcceptThenDrop);
    let app = app_with_one_outcome(backend, &stripe).await;
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1, "Stripe has it");
    assert_eq!(
        app.outcomes().await[0].state.as_str(),
        "pending",
        "we do not know it yet"
    );

    let app = app.restart().await;
    app.clock.advance(chrono::Duration::hours(1));
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "reported");
    assert_eq!(
        stripe.events().len(),
        1,
        "the retry met Stripe's duplicate-identifier check"
    );
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(
        attempts.last().map(|a| a.result.as_str()),
        Some("already_exists"),
        "a call without an answer is recorded, so the retry has a new key"
    );
    app.stop().await;
}

async fn crash_with_the_lease_held_mid_call_is_recovered_without_a_second_event(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app_with_one_outcome(backend, &stripe).await;
    let now = Millis::from(t0()) + Duration::from_secs(73 * 3600);
    // A process claims the outcome, sends it, and dies before recording anything.
    let claimed = app
        .services
        .store
        .claim_outcomes(now, now + Duration::from_secs(60), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let o = &claimed[0];
    let client = stripe_client(&stripe);
    let ev = MeterEvent {
        event_name: o.event_name.clone(),
        stripe_customer_id: o.stripe_customer_id.clone(),
        value: o.value,
        identifier: o.id.clone(),
        timestamp: o.confirmed_at.as_ms() / 1000,
        ..Default::default()
    };
    client
        .create_meter_event(&ev, &idempotency_key(&o.id, "meter_event", o.calls), None)
        .await
        .expect("accepted");

    let app = app.restart().await;
    app.run_reporter().await;
    assert_eq!(
        app.outcomes().await[0].state.as_str(),
        "pending",
        "the dead process still holds the lease"
    );
    app.clock.advance(chrono::Duration::seconds(61));
    app.run_reporter().await;
    assert_eq!(app.outcomes().await[0].state.as_str(), "reported");
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

async fn identifier_already_at_stripe_under_another_key_counts_as_delivered(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app_with_one_outcome(backend, &stripe).await;
    let id = outcome_id(TENANT, "generic", "T1", 1);
    let client = stripe_client(&stripe);
    let ev = MeterEvent {
        event_name: "resolved_ticket".into(),
        stripe_customer_id: CUSTOMER.into(),
        value: 1,
        identifier: id.clone(),
        timestamp: t0().timestamp(),
        ..Default::default()
    };
    client
        .create_meter_event(&ev, "some-other-key", None)
        .await
        .expect("accepted");
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "reported");
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(attempts[0].result, "already_exists");
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

/// A drill run with `clock.offset = "+73h"` confirms outcomes 73 hours ahead of
/// Stripe's clock. Stripe refuses timestamps more than 5 minutes ahead, so the
/// reporter holds such an event, unsent and without spending an attempt, with
/// the reason on the outcome, and sends it once Stripe's clock has caught up.
async fn a_timestamp_stripe_would_refuse_as_future_is_held_not_spent(backend: Backend) {
    let stripe = FakeStripe::start().await;
    stripe.set_check_timestamps(true);
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        clock_offset: chrono::Duration::hours(73),
        ..Default::default()
    })
    .await;
    let world = app.clock.clone();
    stripe.set_clock(move || world.now().timestamp());
    // Resolved "now" by the shifted clock; the window passes on that clock too.
    assert_eq!(
        app.send(&event("e1", "T1", "resolved", 73, Some("ai")))
            .await,
        202
    );
    app.advance_hours(74);
    app.run_worker().await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("pending", 0));
    let why = o.last_error.as_deref().unwrap_or_default();
    assert!(why.contains("ahead of Stripe's clock"), "{why}");
    assert_eq!(
        stripe.requests(),
        0,
        "nothing sent that Stripe would refuse"
    );

    // Once the world's clock reaches the timestamp, it is sent and accepted.
    app.advance_hours(73);
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!((o.state.as_str(), o.attempts), ("reported", 1));
    assert_eq!(stripe.events().len(), 1);
    app.stop().await;
}

/// Issue 10.7: an outcome older than Stripe's 35 days is parked with that
/// reason, never sent; the oldest-unbilled gauge sees it; `replay --failed`
/// leaves it; an operator bills it at the current time (`replay --too-old`),
/// the original time in its evidence and on the statement. One whose call had a
/// lost answer or a 5xx is set apart, since Stripe may have it.
async fn an_outcome_too_old_for_stripe_is_parked_and_billed_late_only_by_decision(
    backend: Backend,
) {
    use outcome_meter::accounting::{period::Period, statement};
    use outcome_meter::stripe::{limits, too_old};
    let stripe = FakeStripe::start().await;
    stripe.set_check_timestamps(true);
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    let world = app.clock.clone();
    stripe.set_clock(move || world.now().timestamp());
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.send(&event("e2", "T2", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    // The first call gets a 500 (Stripe may have recorded it: in doubt, retried
    // later); the second a permanent 400 (certainly not recorded: parked).
    stripe.push_fault(Fault::Status(500));
    stripe.push_fault(Fault::ShouldRetryFalse(400));
    app.run_reporter().await;
    let store = &app.services.store;
    let by_state = |state: &str, outcomes: &[outcome_meter::store::OutcomeRow]| {
        outcomes
            .iter()
            .find(|o| o.state.as_str() == state)
            .map(|o| o.id.clone())
            .unwrap_or_default()
    };
    let outcomes = app.outcomes().await;
    let (doubtful, refused) = (
        by_state("pending", &outcomes),
        by_state("failed", &outcomes),
    );
    assert!(!doubtful.is_empty() && !refused.is_empty(), "{outcomes:?}");
    let first_confirmed = outcomes[0].confirmed_at;

    // 40 days later the retry's timestamp is too old: parked, never sent.
    app.clock.advance(chrono::Duration::days(40));
    app.run_reporter().await;
    let parked = app
        .outcomes()
        .await
        .into_iter()
        .find(|o| o.id == doubtful)
        .expect("outcome");
    assert_eq!(parked.state.as_str(), "failed");
    let why = parked.last_error.clone().unwrap_or_default();
    assert!(why.contains("older than Stripe accepts"), "{why}");
    assert!(why.contains("replay --too-old"), "{why}");
    assert!(
        stripe.events().is_empty(),
        "nothing sent that Stripe would refuse"
    );
    let q = store.queue_counts(StripeMode::Test).await.expect("counts");
    assert_eq!(
        q.oldest_unbilled_outcome,
        Some(first_confirmed),
        "the gauge sees failed outcomes"
    );

    let now = app.clock.now();
    let oldest = limits::oldest_acceptable_ms(now);
    let (requeued, left, _) = store
        .requeue_failed(None, None, Millis::from(now), oldest, false)
        .await
        .expect("requeue");
    assert_eq!(
        (requeued, left),
        (0, 2),
        "replay --failed leaves too-old outcomes"
    );

    let found = store
        .too_old_outcomes(None, None, oldest)
        .await
        .expect("too old");
    let plan = too_old::plan(found, false);
    let ids =
        |v: &[outcome_meter::store::TooOld]| v.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&plan.ready), vec![refused.clone()]);
    assert_eq!(
        ids(&plan.in_doubt),
        vec![doubtful.clone()],
        "a 500 leaves it in doubt"
    );
    let n = too_old::rebill(store, &plan.ready, Millis::from(now))
        .await
        .expect("rebill");
    assert_eq!(n, 1);
    app.run_reporter().await;
    let outcomes = app.outcomes().await;
    let billed = outcomes.iter().find(|o| o.id == refused).expect("outcome");
    assert_eq!(billed.state.as_str(), "reported");
    assert_eq!(billed.confirmed_at, Millis::from(now));
    let doubt = outcomes.iter().find(|o| o.id == doubtful).expect("outcome");
    assert_eq!(
        doubt.state.as_str(),
        "failed",
        "in doubt: left for the operator"
    );
    let sent = stripe.events();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].identifier.as_str(), sent[0].timestamp),
        (refused.as_str(), now.timestamp())
    );

    let period = Period {
        from: Millis::from_ms(now.timestamp_millis() - 86_400_000),
        to: Millis::from_ms(now.timestamp_millis() + 86_400_000),
    };
    let st = statement::build(store, TENANT, CUSTOMER, StripeMode::Test, period)
        .await
        .expect("statement");
    let line = st
        .billed
        .iter()
        .find(|b| b.outcome_id == refused)
        .expect("billed line");
    let note = line.billed_late.clone().unwrap_or_default();
    assert!(note.contains("first confirmed"), "{note}");
    assert!(
        line.why.contains("Billed late by operator decision"),
        "{}",
        line.why
    );
    app.stop().await;
}

async fn without_an_api_key_the_reporter_records_what_it_would_send(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    app.send(&event("e1", "T1", "resolved", 0, Some("ai")))
        .await;
    app.advance_hours(73);
    app.run_worker().await;
    app.run_reporter().await;
    let o = &app.outcomes().await[0];
    assert_eq!(o.state.as_str(), "dry_run");
    let attempts = app.services.store.attempts(&o.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].dry_run);
    assert!(
        attempts[0]
            .request
            .contains(&format!("identifier={}", o.id)),
        "{}",
        attempts[0].request
    );
    assert!(attempts[0]
        .request
        .contains("payload%5Bstripe_customer_id%5D=cus_acme"));
    app.stop().await;
}

/// Fencing: a reporter whose lease expired (another process took the outcome,
/// or a clawback voided it) may not call Stripe with its old claim.
async fn a_claim_whose_lease_expired_can_no_longer_send(backend: Backend) {
    let stripe = FakeStripe::start().await;
    let app = app_with_one_outcome(backend, &stripe).await;
    let store = &app.services.store;
    let now = Millis::from(app.clock.now());
    let first = store
        .claim_outcomes(now, now + Duration::from_secs(60), 10)
        .await
        .expect("claim");
    let (id, old) = (first[0].id.clone(), first[0].lease_until);
    assert!(store
        .renew_outcome_lease(&id, old, now + Duration::from_secs(60))
        .await
        .expect("renew"));
    // The holder stalls past its lease; another process claims the outcome.
    let later = now + Duration::from_millis(61_000);
    let second = store
        .claim_outcomes(later, later + Duration::from_millis(60_000), 10)
        .await
        .expect("claim");
    assert_eq!(second.len(), 1);
    assert!(
        !store
            .renew_outcome_lease(&id, old, later + Duration::from_millis(1))
            .await
            .expect("renew"),
        "the stale holder lost the outcome"
    );
    assert!(store
        .renew_outcome_lease(
            &id,
            second[0].lease_until,
            later + Duration::from_millis(60_000)
        )
        .await
        .expect("renew"));
    // Voided by a clawback after that lease expired: nobody may send it any more.
    let much_later = later + Duration::from_millis(120_000);
    assert!(store
        .void_outcome_if_idle(&id, much_later)
        .await
        .expect("void"));
    assert!(!store
        .renew_outcome_lease(
            &id,
            later + Duration::from_millis(60_000),
            much_later + Duration::from_millis(60_000)
        )
        .await
        .expect("renew"));
    app.run_reporter().await;
    assert!(stripe.events().is_empty(), "a voided outcome is never sent");
    app.stop().await;
}

/// A claimed outcome whose row holds a value this build does not know (its
/// sink: a newer release's, or a damaged row) is set aside an hour with the
/// reason, still pending; the outcomes claimed with it are sent in the same
/// pass, and it is sent once it can be read.
async fn an_unreadable_outcome_is_set_aside_and_holds_back_no_other(backend: Backend) {
    use outcome_meter::store::OutcomeFilter;
    let stripe = FakeStripe::start().await;
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    for t in ["S1", "S2"] {
        app.send(&event(&format!("{t}-r"), t, "resolved", 0, Some("ai")))
            .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
    let s1 = outcome_id(TENANT, "generic", "S1", 1);
    let store = &app.services.store;
    assert_eq!(
        store
            .test_support()
            .execute("UPDATE outcomes SET sink = 'paypal' WHERE id = $1", &[&s1])
            .await
            .expect("a sink from elsewhere"),
        1
    );
    app.run_reporter().await;
    let s2 = store
        .list_outcomes(&OutcomeFilter {
            ticket_id: Some("S2".into()),
            ..Default::default()
        })
        .await
        .expect("S2");
    assert_eq!(s2[0].state.as_str(), "reported");
    let sent: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
    assert_eq!(sent, vec![s2[0].id.clone()]);
    let parked = store
        .test_support()
        .text_rows(
            "SELECT state, last_error FROM outcomes WHERE id = $1",
            &[&s1],
        )
        .await
        .expect("S1");
    assert_eq!(parked[0][0], "pending", "set aside, never taken as failed");
    assert!(
        parked[0][1].contains("not sent yet") && parked[0][1].contains("unknown sink `paypal`"),
        "{parked:?}"
    );
    // Set aside an hour, not claimed again before: still one call at Stripe.
    app.run_reporter().await;
    assert_eq!(stripe.events().len(), 1);
    // Repaired, it is sent at its next try.
    store
        .test_support()
        .execute(
            "UPDATE outcomes SET sink = 'stripe_meters' WHERE id = $1",
            &[&s1],
        )
        .await
        .expect("repair");
    app.advance_hours(2);
    app.run_reporter().await;
    let sent: Vec<String> = stripe.events().into_iter().map(|e| e.identifier).collect();
    assert!(sent.contains(&s1), "{sent:?}");
    app.stop().await;
}

/// Three AI-resolved tickets past their window, confirmed, and their outcomes
/// claimed by the reporter's query (sorted by id), as a group of marks finds them.
async fn three_claimed_outcomes(
    backend: Backend,
    stripe: &FakeStripe,
) -> (TestApp, Vec<outcome_meter::store::ClaimedOutcome>) {
    let app = TestApp::spawn(Options {
        backend,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    for i in 0..3 {
        app.send(&event(
            &format!("e{i}"),
            &format!("T{i}"),
            "resolved",
            0,
            Some("ai"),
        ))
        .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
    let now = app.clock.now_ms();
    let mut claimed = app
        .services
        .store
        .claim_outcomes(now, now + Duration::from_secs(600), 10)
        .await
        .expect("claim");
    claimed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(claimed.len(), 3);
    (app, claimed)
}

/// The reporter's group commit (`Store::record_marks`) writes each mark as
/// `record_attempt` and `set_aside` would, all in one transaction: every mark of
/// the group lands, and an attempt never moves an outcome that is no longer
/// pending (voided by a clawback meanwhile); its call is still logged.
async fn a_group_of_marks_lands_whole_and_moves_only_pending_outcomes(backend: Backend) {
    use outcome_meter::lifecycle::OutcomeState;
    use outcome_meter::store::{ClaimedOutcome, OutcomeMark, OwnedAttempt, SetAside};
    use outcome_meter::stripe::mode::StripeMode as Mode;
    let stripe = FakeStripe::start().await;
    let (app, claimed) = three_claimed_outcomes(backend, &stripe).await;
    let store = &app.services.store;
    let now = app.clock.now_ms();
    store
        .test_support()
        .execute(
            "UPDATE outcomes SET state = 'voided' WHERE id = $1",
            &[claimed[2].id.as_str()],
        )
        .await
        .expect("void");
    let reported = |o: &ClaimedOutcome| {
        OutcomeMark::Attempt(OwnedAttempt {
            outcome_id: o.id.clone(),
            now,
            mode: Mode::Test,
            request: "{}".into(),
            idempotency_key: Some(idempotency_key(&o.id, "meter_event", o.calls)),
            status_code: Some(200),
            request_id: Some("req_1".into()),
            livemode: Some(false),
            result: "accepted".into(),
            error: None,
            state: OutcomeState::Reported,
            next_attempt_at: now,
            in_doubt: false,
        })
    };
    let marks = vec![
        reported(&claimed[0]),
        OutcomeMark::SetAside {
            id: claimed[1].id.clone(),
            token: claimed[1].lease_until,
            reason: "held for the test".into(),
            how: SetAside::RetryAt(now + Duration::from_secs(3600)),
        },
        reported(&claimed[2]),
    ];
    store.record_marks(&marks).await.expect("one commit");

    let first = app.outcome(&claimed[0].id).await;
    assert_eq!(first.state, OutcomeState::Reported);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.reported_at, Some(now));
    assert_eq!(first.reported_mode.as_deref(), Some("test"));
    let second = app.outcome(&claimed[1].id).await;
    assert_eq!(second.state, OutcomeState::Pending);
    assert_eq!(second.attempts, 0, "set aside: no attempt spent");
    assert_eq!(second.last_error.as_deref(), Some("held for the test"));
    let third = app.outcome(&claimed[2].id).await;
    assert_eq!(third.state, OutcomeState::Voided, "not pending: not moved");
    assert_eq!(third.reported_at, None);
    for (o, logged) in [(&claimed[0], 1), (&claimed[1], 0), (&claimed[2], 1)] {
        let attempts = store.attempts(&o.id).await.expect("attempts");
        assert_eq!(attempts.len(), logged, "{}", o.id);
    }
    // The next call's key counts the call recorded, and only that one.
    let again = store
        .claim_outcomes(
            now + Duration::from_secs(7200),
            now + Duration::from_secs(9000),
            10,
        )
        .await
        .expect("claim again");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].calls),
        (claimed[1].id.as_str(), 0)
    );
    app.stop().await;
}

/// A group's attempts move their outcomes in one statement when each is about a
/// different outcome (every column as `record_attempt` sets it: calls, the
/// request id kept when none came, the doubt's start), and one by one, in order,
/// when two are about the same outcome.
async fn a_group_of_marks_moves_each_outcome_as_one_attempt_would(backend: Backend) {
    use outcome_meter::lifecycle::OutcomeState;
    use outcome_meter::store::{OutcomeMark, OwnedAttempt};
    use outcome_meter::stripe::mode::StripeMode as Mode;
    let stripe = FakeStripe::start().await;
    let (app, claimed) = three_claimed_outcomes(backend, &stripe).await;
    let store = &app.services.store;
    let now = app.clock.now_ms();
    let later = now + Duration::from_secs(3600);
    let mark = |id: &str, state, request_id: Option<&str>, error: Option<&str>, in_doubt| {
        OutcomeMark::Attempt(OwnedAttempt {
            outcome_id: id.to_string(),
            now,
            mode: Mode::Test,
            request: "{}".into(),
            idempotency_key: Some(format!("key-{id}")),
            status_code: Some(if state == OutcomeState::Reported {
                200
            } else {
                500
            }),
            request_id: request_id.map(str::to_string),
            livemode: Some(false),
            result: "r".into(),
            error: error.map(str::to_string),
            state,
            next_attempt_at: if state == OutcomeState::Pending {
                later
            } else {
                now
            },
            in_doubt,
        })
    };
    let (a, b, c) = (&claimed[0].id, &claimed[1].id, &claimed[2].id);
    // Each about a different outcome: one statement.
    store
        .record_marks(&[
            mark(a, OutcomeState::Reported, Some("req_a"), None, false),
            mark(b, OutcomeState::Pending, None, Some("500 saved"), true),
        ])
        .await
        .expect("group");
    // Two about the same outcome: in order, each its own attempt.
    store
        .record_marks(&[
            mark(c, OutcomeState::Pending, Some("req_c"), Some("429"), false),
            mark(c, OutcomeState::Reported, None, None, false),
        ])
        .await
        .expect("group of one outcome");

    let number = |sql: String| async move { store.test_support().count(&sql).await.expect(&sql) };
    let (oa, ob, oc) = (
        app.outcome(a).await,
        app.outcome(b).await,
        app.outcome(c).await,
    );
    assert_eq!((oa.state, oa.attempts), (OutcomeState::Reported, 1));
    assert_eq!(oa.stripe_request_id.as_deref(), Some("req_a"));
    assert_eq!(
        (oa.reported_at, oa.reported_mode.as_deref()),
        (Some(now), Some("test"))
    );
    assert_eq!((ob.state, ob.attempts), (OutcomeState::Pending, 1));
    assert_eq!(ob.last_error.as_deref(), Some("500 saved"));
    assert_eq!((ob.reported_at, ob.reported_mode), (None, None));
    assert_eq!(
        number(format!(
            "SELECT next_attempt_at FROM outcomes WHERE id = '{b}'"
        ))
        .await,
        later.as_ms()
    );
    assert_eq!(
        number(format!("SELECT doubt_since FROM outcomes WHERE id = '{b}'")).await,
        now.as_ms(),
        "in doubt from this attempt"
    );
    assert_eq!(
        number(format!(
            "SELECT COUNT(*) FROM outcomes WHERE id = '{a}' AND doubt_since IS NULL"
        ))
        .await,
        1
    );
    for id in [a, b] {
        let calls = number(format!("SELECT calls FROM outcomes WHERE id = '{id}'")).await;
        assert_eq!(calls, 1, "{id}");
    }
    assert_eq!((oc.state, oc.attempts), (OutcomeState::Reported, 2));
    assert_eq!(
        oc.stripe_request_id.as_deref(),
        Some("req_c"),
        "kept from the first attempt"
    );
    assert_eq!(
        number(format!("SELECT calls FROM outcomes WHERE id = '{c}'")).await,
        2
    );
    assert_eq!(store.attempts(c).await.expect("attempts").len(), 2);
    app.stop().await;
}

crate::dual!(
    a_group_of_marks_moves_each_outcome_as_one_attempt_would,
    a_group_of_marks_lands_whole_and_moves_only_pending_outcomes,
    an_unreadable_outcome_is_set_aside_and_holds_back_no_other,
    a_claim_whose_lease_expired_can_no_longer_send,
    transient_failures_are_retried_until_billed_once,
    permanent_refusal_is_parked_as_failed_with_stripes_message,
    restart_after_stripe_accepted_but_before_the_mark_does_not_double_bill,
    crash_with_the_lease_held_mid_call_is_recovered_without_a_second_event,
    identifier_already_at_stripe_under_another_key_counts_as_delivered,
    without_an_api_key_the_reporter_records_what_it_would_send,
    a_timestamp_stripe_would_refuse_as_future_is_held_not_spent,
    an_outcome_too_old_for_stripe_is_parked_and_billed_late_only_by_decision
);

/// Stripe allows one call at a time per (customer, meter). Two reporters on one
/// PostgreSQL database (two replicas) never overlap for a pair: the fake refuses
/// overlapping calls with 429 `lock_timeout` and counts them.
#[tokio::test]
async fn replicas_never_call_stripe_concurrently_for_one_pair() {
    if !postgres_or_skip().await {
        return;
    }
    let stripe = FakeStripe::start().await;
    stripe.set_latency(Duration::from_millis(15));
    let app = TestApp::spawn(Options {
        backend: Backend::Postgres,
        stripe: Some(stripe.base_url()),
        ..Default::default()
    })
    .await;
    for i in 0..24 {
        app.send(&event(
            &format!("e{i}"),
            &format!("T{i}"),
            "resolved",
            0,
            Some("ai"),
        ))
        .await;
    }
    app.advance_hours(73);
    app.run_worker().await;
    // Small batches, so both replicas hold claims for the pair at the same time.
    let mut settings = app.settings.clone();
    settings.reporter.batch_size = 3;
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let clock = std::sync::Arc::new(app.clock.clone());
        let r = outcome_meter::app::Services::open(settings.clone(), clock)
            .await
            .expect("replica");
        replicas.push(r);
    }
    let a = replicas[0].reporter().expect("reporter");
    let b = replicas[1].reporter().expect("reporter");
    let (ra, rb) = tokio::join!(a.drain(), b.drain());
    ra.expect("replica a");
    rb.expect("replica b");
    // Whatever one replica gave back, the next pass reports.
    app.run_reporter().await;
    assert_eq!(
        stripe.pair_conflicts(),
        0,
        "two calls for one pair overlapped"
    );
    assert_eq!(stripe.events().len(), 24);
    for r in replicas {
        r.store.close().await;
    }
    app.stop().await;
}

/// On PostgreSQL a pair lock is one process's at a time, and is given up both
/// ways: released (its connection goes back to the lock pool and is reused), or
/// dropped unreleased (its connection is closed, never handed out with the
/// lock still held).
#[tokio::test]
async fn a_pair_lock_is_held_once_and_released_either_way() {
    if !postgres_or_skip().await {
        return;
    }
    let app = TestApp::spawn(Options {
        backend: Backend::Postgres,
        ..Default::default()
    })
    .await;
    let mine = &app.services.store;
    let other = outcome_meter::store::Store::connect(&app.settings.database)
        .await
        .expect("a second replica's store");
    let held = mine
        .try_lock_pair("cus_1", "resolved_ticket")
        .await
        .expect("ask")
        .expect("free at first");
    assert!(
        other
            .try_lock_pair("cus_1", "resolved_ticket")
            .await
            .expect("ask")
            .is_none(),
        "held by the first replica"
    );
    let beside = other
        .try_lock_pair("cus_2", "resolved_ticket")
        .await
        .expect("ask")
        .expect("another pair is free");
    beside.release().await;
    held.release().await;
    // Released: taken again at once, many times over (the connections are reused).
    for _ in 0..50 {
        mine.try_lock_pair("cus_1", "resolved_ticket")
            .await
            .expect("ask")
            .expect("released")
            .release()
            .await;
    }
    let theirs = other
        .try_lock_pair("cus_1", "resolved_ticket")
        .await
        .expect("ask")
        .expect("released by the first replica");
    drop(theirs);
    // Dropped unreleased: its session ends, and the lock with it.
    testkit::poll::until(
        "the dropped lock's session to end",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || async {
            match mine.try_lock_pair("cus_1", "resolved_ticket").await {
                Ok(Some(lock)) => {
                    lock.release().await;
                    true
                }
                _ => false,
            }
        },
    )
    .await;
    other.close().await;
    app.stop().await;
}
