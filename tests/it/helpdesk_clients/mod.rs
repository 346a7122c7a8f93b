//! Each helpdesk API client against its fake (crates/testkit `fake_helpdesk`):
//! status and history normalized into events, pagination, 429 with
//! `Retry-After`, outages, refused credentials, unknown tickets.

mod freshdesk;
mod front;
mod generic;
mod gorgias;
mod helpscout;
mod hubspot;
mod intercom;
mod zendesk;
mod zohodesk;

use chrono::{DateTime, Duration, Utc};
use outcome_meter::event::EventKind;
use outcome_meter::helpdesk_api::{self, ApiError, ApiSettings, HelpdeskApi};
use outcome_meter::providers::ProviderSettings;
use std::sync::Arc;
use testkit::fake_helpdesk::{FakeHelpdesk, Happening, Step};

/// 2026-01-01T00:00:00Z.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).expect("t0")
}

pub fn at(hours: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hours)
}

/// Provider settings with API credentials for `fake` (and a webhook secret the
/// generic provider also signs answers with).
pub fn settings_for(fake: &FakeHelpdesk) -> ProviderSettings {
    let mut p = ProviderSettings {
        secrets: vec![fake.signing_secret()],
        ai_agent_ids: vec![fake.vendor().ai_agent_id()],
        ..Default::default()
    };
    apply_to(fake, &mut p);
    p
}

/// Point `p` at `fake`: its `[api]` credentials, the AI agent's id, and the
/// provider settings the vendor's fake needs (e.g. HubSpot's closed stages).
pub fn apply_to(fake: &FakeHelpdesk, p: &mut ProviderSettings) {
    let mut api = ApiSettings {
        base_url: Some(fake.base_url()),
        user: Some(fake.user()),
        token: fake.token(),
        ..Default::default()
    };
    for (key, value) in fake.vendor().extra_settings() {
        // A value starting with `/` is a path on the fake (an OAuth token endpoint).
        let value = if value.starts_with('/') {
            format!("{}{value}", fake.base_url())
        } else {
            value
        };
        match key {
            "org_id" => api.org_id = Some(value),
            "token_url" => api.token_url = Some(value),
            "refresh_token" => api.refresh_token = value,
            "status_property" => api.status_property = Some(value),
            "base_url" => api.base_url = Some(value),
            "closed_stage_ids" => {
                if !p.closed_stage_ids.contains(&value) {
                    p.closed_stage_ids.push(value)
                }
            }
            other => panic!("unknown extra setting {other}"),
        }
    }
    p.api = Some(api);
    let ai = fake.vendor().ai_agent_id();
    if !p.ai_agent_ids.contains(&ai) {
        p.ai_agent_ids.push(ai);
    }
}

/// Resolved by the AI agent, the customer wrote, an agent reopened it and handed it
/// to a human, who resolved it: the history every client must read.
pub fn ai_then_human_life(fake: &FakeHelpdesk, id: &str) {
    fake.set_life(
        id,
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(5), Happening::CustomerReplied),
            Step::new(at(6), Happening::Reopened),
            Step::new(at(7), Happening::HandedOff),
            Step::new(at(9), Happening::Resolved { by_ai: false }),
        ],
    );
}

/// Three resolutions with customer messages between: more events and messages
/// than a fake's page holds.
pub fn three_resolutions_life(fake: &FakeHelpdesk, id: &str) {
    fake.set_life(
        id,
        at(0),
        vec![
            Step::new(at(1), Happening::Resolved { by_ai: true }),
            Step::new(at(2), Happening::CustomerReplied),
            Step::new(at(3), Happening::CustomerReplied),
            Step::new(at(4), Happening::Resolved { by_ai: true }),
            Step::new(at(5), Happening::CustomerReplied),
            Step::new(at(6), Happening::HandedOff),
            Step::new(at(7), Happening::Resolved { by_ai: false }),
        ],
    );
}

/// Tickets `1`, `2`, `3` created at hours 1, 2, 3, each with a customer message
/// five minutes later: a listing of three.
pub fn three_replied_tickets(fake: &FakeHelpdesk) {
    for (id, h) in [("1", 1), ("2", 2), ("3", 3)] {
        fake.set_life(
            id,
            at(h),
            vec![Step::new(
                at(h) + Duration::minutes(5),
                Happening::CustomerReplied,
            )],
        );
    }
}

pub fn client(fake: &FakeHelpdesk) -> Arc<dyn HelpdeskApi> {
    let s = settings_for(fake);
    helpdesk_api::client_for(fake.vendor().name(), &s)
        .expect("client builds")
        .expect("verification is on")
}

/// The checks every provider's client must pass against its fake.
pub async fn common_checks(fake: &FakeHelpdesk) {
    let api = client(fake);
    // A ticket resolved by the AI agent, reopened by the customer, resolved again.
    ai_then_human_life(fake, "101");
    fake.set_life(
        "102",
        at(0),
        vec![Step::new(at(2), Happening::Resolved { by_ai: true })],
    );
    fake.set_life(
        "103",
        at(0),
        vec![
            Step::new(at(2), Happening::Resolved { by_ai: true }),
            Step::new(at(3), Happening::Reopened),
        ],
    );

    let look = api.look("102", None).await.expect("look 102");
    assert!(look.resolved, "102 is resolved: {look:?}");
    let resolved: Vec<_> = look
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Resolved)
        .collect();
    assert!(
        resolved.iter().any(|e| e.occurred_at == at(2)),
        "the resolution at its time: {look:?}"
    );
    assert!(look.events.iter().all(|e| e.ticket_id == "102"));

    let look = api.look("103", Some(at(2))).await.expect("look 103");
    assert!(!look.resolved, "103 is open again: {look:?}");
    let sight = api.sight();
    if sight.status_history {
        assert!(
            look.events
                .iter()
                .any(|e| e.kind == EventKind::Reopened && e.occurred_at == at(3)),
            "the reopen at its time: {look:?}"
        );
    }

    // The long history (paginated by the fake: 2 items a page).
    let look = api.look("101", Some(at(1))).await.expect("look 101");
    assert!(look.resolved);
    if sight.customer_messages {
        let replied = look
            .events
            .iter()
            .any(|e| e.kind == EventKind::CustomerReplied && e.occurred_at == at(5))
            || look.last_customer_message_at == Some(at(5));
        assert!(replied, "the customer's message at 5h: {look:?}");
    }
    if sight.assignments {
        assert!(
            look.events
                .iter()
                .any(|e| e.kind == EventKind::HandedOffToHuman && e.occurred_at == at(7)),
            "the hand-off at 7h: {look:?}"
        );
    }
    if sight.status_history {
        let ai = look
            .events
            .iter()
            .find(|e| e.kind == EventKind::Resolved && e.occurred_at == at(1));
        if let Some(ai) = ai {
            assert_eq!(
                ai.resolver,
                Some(outcome_meter::event::Resolver::Ai),
                "the AI agent's resolution is the AI's"
            );
        }
        let human = look
            .events
            .iter()
            .find(|e| e.kind == EventKind::Resolved && e.occurred_at == at(9))
            .expect("the human's resolution at 9h");
        assert_eq!(human.resolver, Some(outcome_meter::event::Resolver::Human));
    }
    // The answer kept as evidence is JSON without message bodies.
    assert!(look.answer.is_object() || look.answer.is_array());

    // An unknown ticket.
    match api.look("999", None).await {
        Err(ApiError::NotFound(_)) => {}
        other => panic!("unknown ticket: {other:?}"),
    }

    // 429 with Retry-After: the client says how long to wait.
    fake.rate_limit_every(1, 7);
    match api.look("102", None).await {
        Err(ApiError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)))
        }
        other => panic!("rate limited: {other:?}"),
    }
    fake.state().rate_limit_every = None;

    // An outage.
    fake.set_outage(true);
    let fresh = client(fake);
    match fresh.look("102", None).await {
        Err(ApiError::Unreachable {
            status: Some(503), ..
        }) => {}
        other => panic!("outage: {other:?}"),
    }
    fake.set_outage(false);

    // Wrong credentials.
    let mut s = settings_for(fake);
    if let Some(api) = s.api.as_mut() {
        api.token = "wrong-token-123456".into();
    }
    let wrong = helpdesk_api::client_for(fake.vendor().name(), &s)
        .expect("client builds")
        .expect("on");
    match wrong.look("102", None).await {
        Err(ApiError::Refused { .. }) => {}
        other => panic!("wrong credentials: {other:?}"),
    }
}

/// The listing backfill uses: every ticket changed in the range exactly once
/// over all pages (the fake has 2 a page), none outside it; a cursor from the
/// middle resumes; a 429 on a page says how long to wait.
pub async fn common_listing_checks(fake: &FakeHelpdesk) {
    let api = client(fake);
    for (id, hours) in [("201", 1), ("202", 2), ("203", 3), ("204", 4), ("205", 30)] {
        fake.set_life(
            id,
            at(hours),
            vec![Step::new(
                at(hours) + Duration::minutes(10),
                Happening::Resolved { by_ai: true },
            )],
        );
    }
    let (since, until) = (at(0), at(24));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut second_cursor = None;
    let mut pages = 0;
    loop {
        let page = api
            .changed_tickets(since, until, cursor.as_deref())
            .await
            .expect("a page");
        pages += 1;
        assert!(pages < 50, "the listing ends");
        seen.extend(page.ticket_ids.clone());
        if pages == 1 {
            second_cursor = page.next.clone();
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen,
        vec!["201", "202", "203", "204"],
        "tickets changed in the range"
    );
    assert!(pages >= 2, "the listing was paginated ({pages} page(s))");
    // Resume from the second page's cursor: the rest, without the first page.
    if let Some(c) = second_cursor {
        let page = api
            .changed_tickets(since, until, Some(&c))
            .await
            .expect("resume");
        assert!(!page.ticket_ids.is_empty());
    }
    fake.rate_limit_every(1, 9);
    match api.changed_tickets(since, until, None).await {
        Err(ApiError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(std::time::Duration::from_secs(9)))
        }
        other => panic!("rate limited listing: {other:?}"),
    }
    fake.state().rate_limit_every = None;
}
