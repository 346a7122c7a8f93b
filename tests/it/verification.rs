//! Verification before billing, end to end on SQLite and PostgreSQL: a due
//! outcome is checked with the helpdesk's API (a fake that knows each ticket's
//! true life) before it is billed. A reopen whose webhook was lost is learned and
//! the outcome is not billed; an agreeing helpdesk is named in the evidence; an
//! unreachable one holds the outcome, with backoff and `Retry-After`, up to
//! `verify.max_hold`, then `verify.on_unreachable` decides.

use crate::helpdesk_clients::apply_to;
use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use outcome_meter::accounting::explain;
use outcome_meter::event::{EventKind, Resolver, TicketEvent};
use outcome_meter::helpdesk_api::OnUnreachable;
use testkit::fake_helpdesk::{generic::Generic, FakeHelpdesk, Happening, Step, Vendor};

fn at(hours: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hours)
}

/// An app whose tenant verifies `fake`'s provider before billing.
async fn app_verifying(
    backend: Backend,
    fake: &FakeHelpdesk,
    tweak: impl FnOnce(&mut outcome_meter::settings::Settings),
) -> TestApp {
    let name = fake.vendor().name();
    if name == "generic" {
        // The generic verify_url signs its answers with the tenant's webhook secret.
        fake.state().signing_secret = GENERIC_SECRET.into();
    }
    TestApp::spawn_tweaked(
        Options {
            backend,
            ..Default::default()
        },
        move |s| {
            let p = s.tenants[0]
                .providers
                .get_mut(name)
                .expect("the provider is configured");
            apply_to(fake, p);
            s.verify.retry_base = std::time::Duration::from_secs(60);
            tweak(s);
        },
    )
    .await
}

/// The resolution a webhook brought (the same for every provider: the state
/// machine sees normalized events).
fn resolved_by_ai(ticket: &str, hours: i64) -> TicketEvent {
    TicketEvent {
        event_key: format!("webhook-{ticket}-resolved"),
        ticket_id: ticket.into(),
        kind: EventKind::Resolved,
        occurred_at: at(hours),
        resolver: Some(Resolver::Ai),
        actor_id: None,
        tags: vec![],
        channel: None,
    }
}

impl TestApp {
    async fn webhooks_arrived(&self, provider: &str, events: &[TicketEvent]) {
        self.services
            .worker()
            .import_events(TENANT, provider, events)
            .await
            .expect("import");
    }

    fn metric(&self, line_start: &str) -> f64 {
        let text = self.services.metrics.render(Millis::EPOCH);
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    async fn decision_status(&self, ticket: &str) -> Vec<String> {
        let rows = self
            .services
            .store
            .ticket_decisions(TENANT, ticket)
            .await
            .expect("decisions");
        rows.into_iter().map(|d| d.status.to_string()).collect()
    }
}

/// A lost reopen is learned from the API and not billed; an agreeing helpdesk is
/// named in the evidence. Run for each provider's fake.
pub async fn lost_reopen_is_caught(backend: Backend, vendor: impl Vendor) {
    let fake = FakeHelpdesk::start(vendor).await;
    let app = app_verifying(backend, &fake, |_| {}).await;
    let p = fake.vendor().name();
    // 501: the customer wrote and an agent reopened it inside the window, then a
    // human solved it: neither webhook arrived. 502: nothing happened after.
    fake.set_life(
        "501",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(5), Happening::CustomerReplied),
            Step::new(at(6), Happening::Reopened),
            Step::new(at(8), Happening::Resolved { by_ai: false }),
        ],
    );
    fake.set_life(
        "502",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    app.webhooks_arrived(p, &[resolved_by_ai("501", 1), resolved_by_ai("502", 1)])
        .await;
    app.run_worker().await;
    assert!(app.outcomes().await.is_empty(), "nothing inside the window");
    assert_eq!(
        fake.requests(),
        0,
        "nothing is checked before the window ends"
    );

    app.advance_hours(80);
    app.run_worker().await;
    let outcomes = app.outcomes().await;
    let billed: Vec<&str> = outcomes.iter().map(|o| o.ticket_id.as_str()).collect();
    assert_eq!(
        billed,
        vec!["502"],
        "{p}: only the ticket that held is billed"
    );
    let ev = &outcomes[0].evidence;
    assert!(
        ev.contains(&format!("verified with {p} at")),
        "{p}: the evidence names the check: {ev}"
    );
    let statuses = app.decision_status("501").await;
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("reopened"),
        "{p}: 501 reopened inside its window: {statuses:?}"
    );
    let learned = app
        .count("SELECT COUNT(*) FROM ticket_events WHERE ticket_id = '501' AND learned_from IS NOT NULL")
        .await;
    assert!(
        learned >= 1,
        "{p}: the reopen is stored as learned by verification"
    );
    // explain shows the learned reopen and the check.
    let x = explain::explain(&app.services.store, TENANT, "501", None)
        .await
        .expect("explain");
    let text = x.render();
    assert!(
        text.contains("(learned from the helpdesk's API, check"),
        "{p}: explain marks the learned events: {text}"
    );
    assert!(
        text.contains("Checks with the helpdesk's API before billing:")
            && text.contains(": #1 disagreed:"),
        "{p}: explain lists the check: {text}"
    );
    let billed = explain::explain(&app.services.store, TENANT, "502", None)
        .await
        .expect("explain")
        .render();
    assert!(
        billed.contains(&format!("verified with {p} at")),
        "{p}: the billed ticket's decision says it was verified: {billed}"
    );
    assert_eq!(
        app.metric(&format!(
            "outcome_meter_verifications_total{{provider=\"{p}\",result=\"disagreed\"}}"
        )),
        1.0
    );
    assert_eq!(
        app.metric(&format!(
            "outcome_meter_verifications_total{{provider=\"{p}\",result=\"agreed\"}}"
        )),
        1.0
    );
    // The customer's statement says so too.
    let period = outcome_meter::accounting::period::Period::parse("2025-12-01", "2026-02-01")
        .expect("period");
    let st = outcome_meter::accounting::statement::build(
        &app.services.store,
        TENANT,
        CUSTOMER,
        app.services.settings.stripe.mode(),
        period,
    )
    .await
    .expect("statement");
    let json = serde_json::to_string(&st).expect("statement JSON");
    assert!(
        json.contains(&format!("verified with {p} at")),
        "{p}: the statement line names the check: {json}"
    );
    // Settling again asks nothing more: the checks are recorded.
    let before = fake.requests();
    app.run_worker().await;
    assert_eq!(fake.requests(), before);
    app.stop().await;
}

async fn generic_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, Generic).await
}

async fn front_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::front::Front).await
}

async fn intercom_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::intercom::Intercom).await
}

async fn helpscout_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::helpscout::HelpScout).await
}

async fn zendesk_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::zendesk::Zendesk).await
}

async fn freshdesk_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::freshdesk::Freshdesk).await
}

async fn gorgias_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::gorgias::Gorgias).await
}

async fn zohodesk_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(
        backend,
        testkit::fake_helpdesk::zohodesk::ZohoDesk::default(),
    )
    .await
}

async fn hubspot_lost_reopen(backend: Backend) {
    lost_reopen_is_caught(backend, testkit::fake_helpdesk::hubspot::HubSpot).await
}

/// An unreachable helpdesk holds the outcome and retries with backoff; when it
/// answers, the outcome is billed, verified.
async fn outage_holds_then_bills_when_it_answers(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_verifying(backend, &fake, |_| {}).await;
    fake.set_life(
        "601",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    app.webhooks_arrived("generic", &[resolved_by_ai("601", 1)])
        .await;
    fake.set_outage(true);
    app.advance_hours(80);
    app.run_worker().await;
    assert!(
        app.outcomes().await.is_empty(),
        "held while the helpdesk is down"
    );
    assert_eq!(app.decision_status("601").await, vec!["held".to_string()]);
    assert_eq!(
        app.metric("outcome_meter_helpdesk_api_errors_total{provider=\"generic\",status=\"503\"}"),
        1.0
    );
    // Not asked again before the backoff (retry_base 1 min) has passed.
    let asked = fake.requests();
    app.run_worker().await;
    assert_eq!(fake.requests(), asked, "no retry before the backoff");
    app.clock.advance(Duration::minutes(2));
    app.run_worker().await;
    assert_eq!(fake.requests(), asked + 1, "retried after the backoff");
    assert!(app.outcomes().await.is_empty());
    fake.set_outage(false);
    app.advance_hours(1);
    app.run_worker().await;
    let outcomes = app.outcomes().await;
    assert_eq!(outcomes.len(), 1, "billed once the helpdesk agrees");
    assert!(outcomes[0].evidence.contains("verified with generic at"));
    app.stop().await;
}

/// Past `verify.max_hold`: `hold` keeps the outcome unbilled; `bill` bills it
/// with "not verified" in its evidence.
async fn past_max_hold_follows_on_unreachable(backend: Backend) {
    for policy in [OnUnreachable::Hold, OnUnreachable::Bill] {
        let fake = FakeHelpdesk::start(Generic).await;
        let app = app_verifying(backend, &fake, |s| {
            s.verify.max_hold = std::time::Duration::from_secs(6 * 3600);
            s.verify.on_unreachable = policy;
        })
        .await;
        fake.set_life(
            "701",
            at(0),
            vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
        );
        app.webhooks_arrived("generic", &[resolved_by_ai("701", 1)])
            .await;
        fake.set_outage(true);
        app.advance_hours(80);
        for _ in 0..8 {
            app.run_worker().await;
            app.advance_hours(1);
        }
        app.run_worker().await;
        let outcomes = app.outcomes().await;
        match policy {
            OnUnreachable::Hold => {
                assert!(outcomes.is_empty(), "hold: never billed unverified");
                assert!(
                    app.metric("outcome_meter_verification_holds_total{provider=\"generic\",reason=\"past_max_hold\"}") >= 1.0
                );
            }
            OnUnreachable::Bill => {
                assert_eq!(outcomes.len(), 1, "bill: billed after max_hold");
                assert!(
                    outcomes[0]
                        .evidence
                        .contains("not verified: generic could not be asked"),
                    "{}",
                    outcomes[0].evidence
                );
            }
        }
        app.stop().await;
    }
}

/// A ticket the helpdesk does not know (404) is held, and never billed
/// unverified, even with `on_unreachable = "bill"` past `max_hold`.
async fn an_unknown_ticket_is_never_billed_unverified(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_verifying(backend, &fake, |s| {
        s.verify.max_hold = std::time::Duration::from_secs(3600);
        s.verify.on_unreachable = OnUnreachable::Bill;
    })
    .await;
    // The fake has no life for 777: it answers 404.
    app.webhooks_arrived("generic", &[resolved_by_ai("777", 1)])
        .await;
    app.advance_hours(80);
    for _ in 0..4 {
        app.run_worker().await;
        app.advance_hours(1);
    }
    app.run_worker().await;
    assert!(
        app.outcomes().await.is_empty(),
        "404: never billed unverified"
    );
    assert_eq!(app.decision_status("777").await, vec!["held".to_string()]);
    assert!(
        app.metric("outcome_meter_verification_holds_total{provider=\"generic\",reason=\"needs_attention\"}") >= 1.0
    );
    app.stop().await;
}

/// A 429's Retry-After is honoured: no new check before it has passed.
async fn rate_limit_retry_after_is_honoured(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_verifying(backend, &fake, |_| {}).await;
    fake.set_life(
        "801",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    app.webhooks_arrived("generic", &[resolved_by_ai("801", 1)])
        .await;
    fake.rate_limit_every(1, 600);
    app.advance_hours(80);
    app.run_worker().await;
    assert!(app.outcomes().await.is_empty());
    let asked = fake.requests();
    app.clock.advance(Duration::minutes(5));
    app.run_worker().await;
    assert_eq!(fake.requests(), asked, "Retry-After: 600 s not yet passed");
    fake.state().rate_limit_every = None;
    app.clock.advance(Duration::minutes(6));
    app.run_worker().await;
    assert_eq!(app.outcomes().await.len(), 1);
    app.stop().await;
}

/// A resolution whose webhook was lost, before a resolution the contract does not
/// bill: that one is settled (declined) on webhooks alone unless it is checked
/// too, freezing a history one resolution short. The ticket's later AI
/// resolution must then be billed under its true number (seq 3), and the lost
/// first one (seq 1) learned and billed, not seq 2 (the human's).
async fn a_lost_resolution_before_a_declined_one_is_learned(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_verifying(backend, &fake, |_| {}).await;
    let life = vec![
        Step::new(at(1), Happening::Resolved { by_ai: true }), // webhook lost
        Step::new(at(80), Happening::Reopened),                // after the 72 h window
        Step::new(at(81), Happening::Resolved { by_ai: false }),
        Step::new(at(160), Happening::Reopened),
        Step::new(at(161), Happening::Resolved { by_ai: true }),
    ];
    fake.set_life("901", at(0), life.clone());
    let delivered: Vec<TicketEvent> = life
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, step)| {
            let body = testkit::fake_helpdesk::generic::event_body("901", i, step);
            TicketEvent {
                event_key: testkit::fake_helpdesk::generic::event_id("901", i),
                ticket_id: "901".into(),
                kind: match step.what {
                    Happening::Resolved { .. } => EventKind::Resolved,
                    _ => EventKind::Reopened,
                },
                occurred_at: step.at,
                resolver: body["resolver"].as_str().map(|r| {
                    if r == "ai" {
                        Resolver::Ai
                    } else {
                        Resolver::Human
                    }
                }),
                actor_id: None,
                tags: vec![],
                channel: None,
            }
        })
        .collect();
    app.webhooks_arrived("generic", &delivered).await;
    app.advance_hours(300);
    for _ in 0..4 {
        app.run_worker().await;
        app.advance_hours(1);
    }
    let mut seqs: Vec<i64> = app.outcomes().await.iter().map(|o| o.seq).collect();
    seqs.sort();
    assert_eq!(
        seqs,
        vec![1, 3],
        "the true resolutions billed under their true numbers"
    );
    app.stop().await;
}

/// A contract change while resolutions wait (pinned to the contract they were
/// first decided under): the verification pass checks the resolution the
/// confirmer gates, so nothing is held for want of a check.
async fn pinned_resolutions_are_checked_after_a_contract_change(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_verifying(backend, &fake, |s| {
        s.contract.reopen_window = std::time::Duration::from_secs(3600);
    })
    .await;
    fake.set_life(
        "901",
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(3), Happening::Reopened),
            Step::new(at(4), Happening::Resolved { by_ai: true }),
        ],
    );
    let mut second = resolved_by_ai("901", 4);
    second.event_key = "webhook-901-resolved-again".into();
    let reopen = TicketEvent {
        event_key: "webhook-901-reopened".into(),
        kind: EventKind::Reopened,
        resolver: None,
        ..resolved_by_ai("901", 3)
    };
    app.webhooks_arrived("generic", &[resolved_by_ai("901", 1), reopen, second])
        .await;
    app.run_worker().await;
    // Redeploy with a 72 h window: both resolutions stay judged by the 1 h one.
    let mut app = app;
    app.settings.contract.reopen_window = std::time::Duration::from_secs(72 * 3600);
    let app = app.restart().await;
    app.advance_hours(6);
    app.run_worker().await;
    let mut seqs: Vec<i64> = app.outcomes().await.iter().map(|o| o.seq).collect();
    seqs.sort();
    let x = explain::explain(&app.services.store, TENANT, "901", None)
        .await
        .expect("explain")
        .render();
    assert_eq!(
        seqs,
        vec![1, 2],
        "both pinned resolutions verified and billed: {x}"
    );
    assert!(app.decision_status("901").await.iter().all(|s| s != "held"));
    app.stop().await;
}

/// A ticket pinned to a stored contract that cannot be read is skipped by the
/// verification pass (and postponed by the confirmer), never the pass: the other
/// due ticket is checked with the helpdesk and billed.
async fn an_unreadable_pinned_contract_skips_its_ticket_not_the_pass(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_verifying(backend, &fake, |s| {
        s.contract.reopen_window = std::time::Duration::from_secs(3600);
    })
    .await;
    for ticket in ["911", "912"] {
        fake.set_life(
            ticket,
            at(0),
            vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
        );
    }
    app.webhooks_arrived("generic", &[resolved_by_ai("911", 1)])
        .await;
    app.run_worker().await;
    let pinned = app
        .services
        .store
        .ticket_decisions(TENANT, "911")
        .await
        .expect("decisions")
        .first()
        .map(|d| d.contract_hash.clone())
        .expect("911 is decided");
    // Redeploy with a 2 h window; 911 stays pinned to the 1 h one, damaged now.
    let mut app = app;
    app.settings.contract.reopen_window = std::time::Duration::from_secs(2 * 3600);
    let app = app.restart().await;
    assert_eq!(
        app.services
            .store
            .test_support()
            .execute(
                "UPDATE contracts SET terms = $1 WHERE hash = $2",
                &["{\"clawback\": 30}", &pinned]
            )
            .await
            .expect("damage the stored terms"),
        1
    );
    app.webhooks_arrived("generic", &[resolved_by_ai("912", 1)])
        .await;
    app.advance_hours(6);
    app.run_worker().await;
    let billed: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.ticket_id)
        .collect();
    assert_eq!(billed, vec!["912".to_string()]);
    assert_eq!(app.decision_status("912").await, vec!["confirmed"]);
    assert_eq!(app.decision_status("911").await, vec!["in_window"]);
    app.stop().await;
}

crate::dual!(
    an_unreadable_pinned_contract_skips_its_ticket_not_the_pass,
    pinned_resolutions_are_checked_after_a_contract_change,
    a_lost_resolution_before_a_declined_one_is_learned,
    generic_lost_reopen,
    front_lost_reopen,
    hubspot_lost_reopen,
    intercom_lost_reopen,
    helpscout_lost_reopen,
    zendesk_lost_reopen,
    freshdesk_lost_reopen,
    gorgias_lost_reopen,
    zohodesk_lost_reopen,
    outage_holds_then_bills_when_it_answers,
    past_max_hold_follows_on_unreachable,
    rate_limit_retry_after_is_honoured,
    an_unknown_ticket_is_never_billed_unverified,
);
