//! The generic `verify_url` client: signed answers bound to the request.

use super::*;
use testkit::fake_helpdesk::generic::Generic;

#[tokio::test]
async fn generic_client_reads_status_and_history() {
    let fake = FakeHelpdesk::start(Generic).await;
    common_checks(&fake).await;
}

#[tokio::test]
async fn generic_answers_signed_with_another_secret_are_refused() {
    let fake = FakeHelpdesk::start(Generic).await;
    fake.set_life(
        "1",
        at(0),
        vec![Step::new(at(1), Happening::Resolved { by_ai: true })],
    );
    let api = client(&fake);
    fake.state().signing_secret = "someone-elses-secret".into();
    match api.look("1", None).await {
        Err(ApiError::Malformed { detail, .. }) => assert!(detail.contains("signature")),
        other => panic!("forged answer: {other:?}"),
    }
}

#[tokio::test]
async fn generic_lists_changed_tickets() {
    let fake = FakeHelpdesk::start(Generic).await;
    common_listing_checks(&fake).await;
}
