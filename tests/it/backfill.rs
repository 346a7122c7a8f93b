//! `backfill`, on SQLite and PostgreSQL, against the fake generic verify_url:
//! ticket histories imported from the helpdesk's API are decided like webhooks
//! (a reopen inside the window is not billed), an event seen both ways counts
//! once, an interrupted backfill continues from its cursor, a 429 is waited out,
//! and outcomes too old for Stripe are recorded but not sent.

use crate::helpdesk_clients::apply_to;
use crate::support::*;
use chrono::{DateTime, Duration, Utc};
use outcome_meter::backfill::{self, BackfillError, Plan, Progress, Silent};
use outcome_meter::store::BackfillRow;
use testkit::fake_helpdesk::generic::{event_body, Generic};
use testkit::fake_helpdesk::{FakeHelpdesk, Happening, Step};
use tokio_util::sync::CancellationToken;

fn days_ago(d: i64) -> DateTime<Utc> {
    t0() - Duration::days(d)
}

async fn app_with_api(backend: Backend, fake: &FakeHelpdesk, stripe: Option<String>) -> TestApp {
    fake.state().signing_secret = GENERIC_SECRET.into();
    TestApp::spawn_tweaked(
        Options {
            backend,
            stripe,
            ..Default::default()
        },
        move |s| {
            let p = s.tenants[0]
                .providers
                .get_mut("generic")
                .expect("generic is configured");
            apply_to(fake, p);
            // Backfill works whatever `verify` says; these tests check the import.
            p.verify = Some(outcome_meter::helpdesk_api::VerifyMode::Off);
        },
    )
    .await
}

/// Twelve tickets over the last 60 days: every third reopened inside its window,
/// the others resolved by the AI agent and left alone. Returns the lives'
/// (ticket, billable, resolved_at).
fn histories(fake: &FakeHelpdesk) -> Vec<(String, bool, DateTime<Utc>)> {
    fake.set_page_size(5);
    (0..12)
        .map(|i| {
            let id = format!("B{i:02}");
            let resolved = days_ago(60 - 5 * i) + Duration::hours(1);
            let mut steps = vec![Step::new(resolved, Happening::Resolved { by_ai: true })];
            let billable = i % 3 != 0;
            if !billable {
                steps.push(Step::new(
                    resolved + Duration::hours(5),
                    Happening::Reopened,
                ));
            }
            fake.set_life(&id, resolved - Duration::hours(1), steps);
            (id, billable, resolved)
        })
        .collect()
}

fn plan(since: DateTime<Utc>) -> Plan {
    plan_for("generic", since)
}

fn plan_for(provider: &str, since: DateTime<Utc>) -> Plan {
    Plan {
        tenant: TENANT.into(),
        provider: provider.into(),
        since: Millis::from(since),
        until: Some(Millis::from(t0())),
        restart: false,
    }
}

/// Cancels the run after `after` pages: Ctrl-C in the middle.
struct StopAfter {
    after: u64,
    cancel: CancellationToken,
}

impl Progress for StopAfter {
    fn start(&mut self, _: &BackfillRow) {}
    fn page(&mut self, row: &BackfillRow) {
        if row.pages >= self.after {
            self.cancel.cancel();
        }
    }
    fn finish(&mut self, _: &BackfillRow) {}
}

async fn imports_decides_and_resumes(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let stripe = testkit::fake_stripe::FakeStripe::start().await;
    let app = app_with_api(backend, &fake, Some(stripe.base_url())).await;
    let lives = histories(&fake);
    // One resolution already came as a webhook: the backfill must not count it twice.
    let first = fake.state().tickets["B01"].steps[0];
    let code = app.send(&event_body("B01", 0, &first).to_string()).await;
    assert_eq!(code, 202);
    app.run_worker().await;

    // Interrupted after the first page (5 tickets of 12)…
    let cancel = CancellationToken::new();
    let mut stop = StopAfter {
        after: 1,
        cancel: cancel.clone(),
    };
    let p = plan(days_ago(61));
    match backfill::run(&app.services, &p, &mut stop, &cancel).await {
        Err(BackfillError::Interrupted { pages: 1 }) => {}
        other => panic!("expected an interruption after one page, got {other:?}"),
    }
    let listed = fake
        .log()
        .iter()
        .filter(|l| l.contains("updated_since"))
        .count();
    assert_eq!(listed, 1, "one page read, nothing asked after Ctrl-C");

    // …and the same command continues from the stored cursor.
    let s = backfill::run(&app.services, &p, &mut Silent, &CancellationToken::new())
        .await
        .expect("backfill continues");
    assert!(s.resumed, "continued");
    assert_eq!(
        s.row.tickets, 12,
        "every ticket imported once over the runs"
    );
    assert_eq!(s.row.pages, 3);
    assert!(s.row.finished_at.is_some());
    let events = app.count("SELECT COUNT(*) FROM ticket_events").await;
    assert_eq!(
        events,
        12 + 4,
        "one event per step, the webhook's included once"
    );

    // Decided: the AI resolutions left alone are outcomes, the reopened ones not;
    // those that became outcomes more than 35 days ago are recorded, not sent.
    let outcomes = app.outcomes().await;
    let mut billed: Vec<&str> = outcomes.iter().map(|o| o.ticket_id.as_str()).collect();
    billed.sort();
    let want: Vec<&str> = lives.iter().filter(|l| l.1).map(|l| l.0.as_str()).collect();
    assert_eq!(billed, want);
    let oldest = t0() - Duration::days(35) + Duration::hours(1);
    let too_old = lives
        .iter()
        .filter(|l| l.1 && l.2 + Duration::hours(72) < oldest)
        .count() as u64;
    assert!(too_old > 0 && too_old < 8, "the scenario has both kinds");
    assert_eq!((s.outcomes, s.too_old), (8, too_old), "{}", s.render());
    assert!(s.render().contains("replay --too-old"));

    // The reporter parks the too-old ones, sends the others.
    app.run_reporter().await;
    let failed = app
        .count("SELECT COUNT(*) FROM outcomes WHERE state = 'failed'")
        .await;
    assert_eq!(failed as u64, too_old, "too old: parked, not sent");
    assert_eq!(
        stripe.events().len() as u64,
        8 - too_old,
        "the others are sent"
    );

    // A rerun of a finished range reads nothing.
    let before = fake.requests();
    let again = backfill::run(&app.services, &p, &mut Silent, &CancellationToken::new())
        .await
        .expect("rerun");
    assert!(again.already_done);
    assert_eq!(fake.requests(), before);
    app.stop().await;
}

async fn rate_limits_are_waited_out(backend: Backend) {
    let fake = FakeHelpdesk::start(Generic).await;
    let app = app_with_api(backend, &fake, None).await;
    histories(&fake);
    fake.set_page_size(50);
    // Every 5th request is refused with Retry-After: 1.
    fake.rate_limit_every(5, 1);
    let s = backfill::run(
        &app.services,
        &plan(days_ago(61)),
        &mut Silent,
        &CancellationToken::new(),
    )
    .await
    .expect("backfill under rate limits");
    assert_eq!(s.row.tickets, 12);
    assert!(fake.rate_limited() >= 2, "the fake did rate-limit");
    assert_eq!(app.count("SELECT COUNT(*) FROM ticket_events").await, 16);
    app.stop().await;
}

async fn without_credentials_it_says_what_to_configure(backend: Backend) {
    let app = TestApp::spawn(Options {
        backend,
        ..Default::default()
    })
    .await;
    let err = backfill::run(
        &app.services,
        &plan(days_ago(10)),
        &mut Silent,
        &CancellationToken::new(),
    )
    .await
    .expect_err("no api credentials");
    assert!(
        err.to_string().contains("[tenants.providers.generic.api]"),
        "{err}"
    );
    app.stop().await;
}

crate::dual!(
    imports_decides_and_resumes,
    rate_limits_are_waited_out,
    without_credentials_it_says_what_to_configure,
);

/// The command as an operator runs it (not a terminal: plain log lines), then
/// again: it says the range is done and reads nothing. Multi-threaded: the fake
/// answers while this thread waits for the child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_a_summary_and_a_rerun_reads_nothing() {
    let fake = FakeHelpdesk::start(Generic).await;
    fake.state().signing_secret = GENERIC_SECRET.into();
    histories(&fake);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("backfill.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[database]
url = "sqlite://{db}"
[stripe]
mode = "dry-run"
[[tenants]]
id = "acme"
stripe_customer_id = "cus_1"
[tenants.providers.generic]
secrets = ["{secret}"]
[tenants.providers.generic.api]
base_url = "{base}"
token = "{token}"
"#,
            db = dir.path().join("om.db").display(),
            secret = GENERIC_SECRET,
            base = fake.base_url(),
            token = fake.token(),
        ),
    )
    .expect("config");
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_outcome-meter"))
            .args([
                "--config",
                &config.display().to_string(),
                "backfill",
                "--tenant",
                "acme",
                "--provider",
                "generic",
                "--since",
                "2025-10-01",
                "--until",
                "2025-12-31",
            ])
            .current_dir(dir.path())
            .env_remove("OUTCOME_METER_CONFIG")
            .env_remove("STRIPE_API_KEY")
            .env("RUST_LOG", "info")
            .output()
            .expect("run outcome-meter")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("backfill acme / generic: 12 ticket(s) on 3 page(s), 16 new event(s)"),
        "{stdout}"
    );
    // Every outcome of 2025 is older than Stripe accepts today.
    assert!(
        stdout
            .contains("outcomes resolved in the range: 8; too old to send (older than 35 days): 8"),
        "{stdout}"
    );
    assert!(stderr.contains("backfill listing done"), "{stderr}");
    let requests = fake.requests();
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already finished"));
    assert_eq!(fake.requests(), requests, "a finished range reads nothing");
}

/// Backfill through each helpdesk's own listing and ticket APIs (their fakes):
/// the same histories give the same outcomes whichever helpdesk they come from.
async fn backfill_through(backend: Backend, vendor: impl testkit::fake_helpdesk::Vendor) {
    let fake = FakeHelpdesk::start(vendor).await;
    let name = fake.vendor().name();
    if name == "generic" {
        fake.state().signing_secret = GENERIC_SECRET.into();
    }
    let app = TestApp::spawn_tweaked(
        Options {
            backend,
            ..Default::default()
        },
        |s| {
            let p = s.tenants[0]
                .providers
                .get_mut(name)
                .expect("the provider is configured");
            apply_to(&fake, p);
            p.verify = Some(outcome_meter::helpdesk_api::VerifyMode::Off);
            // The vendors' real budgets (Front: 25 a minute) pace in real time;
            // this test is about what is imported, not the pacing.
            if let Some(api) = p.api.as_mut() {
                api.requests_per_minute = Some(60_000);
            }
        },
    )
    .await;
    let mut want = Vec::new();
    for i in 0..6i64 {
        let id = format!("{}", 9100 + i);
        let resolved = days_ago(20 - 3 * i) + Duration::hours(2);
        let mut steps = vec![Step::new(resolved, Happening::Resolved { by_ai: true })];
        if i % 3 == 0 {
            steps.push(Step::new(
                resolved + Duration::hours(6),
                Happening::Reopened,
            ));
        } else {
            want.push(id.clone());
        }
        fake.set_life(&id, resolved - Duration::hours(1), steps);
    }
    let s = backfill::run(
        &app.services,
        &plan_for(name, days_ago(25)),
        &mut Silent,
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: backfill: {e}"));
    assert!(s.row.tickets >= 6, "{name}: {}", s.render());
    let mut billed: Vec<String> = app
        .outcomes()
        .await
        .into_iter()
        .map(|o| o.ticket_id)
        .collect();
    billed.sort();
    billed.dedup();
    assert_eq!(billed, want, "{name}: {}", s.render());
    assert_eq!((s.outcomes, s.too_old), (4, 0), "{name}: {}", s.render());
    app.stop().await;
}

async fn zendesk_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::zendesk::Zendesk).await
}
async fn freshdesk_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::freshdesk::Freshdesk).await
}
async fn intercom_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::intercom::Intercom).await
}
async fn helpscout_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::helpscout::HelpScout).await
}
async fn front_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::front::Front).await
}
async fn hubspot_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::hubspot::HubSpot).await
}
async fn gorgias_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::gorgias::Gorgias).await
}
async fn zohodesk_backfill(b: Backend) {
    backfill_through(b, testkit::fake_helpdesk::zohodesk::ZohoDesk::default()).await
}
async fn generic_backfill(b: Backend) {
    backfill_through(b, Generic).await
}

crate::dual!(
    zendesk_backfill,
    freshdesk_backfill,
    intercom_backfill,
    helpscout_backfill,
    front_backfill,
    hubspot_backfill,
    gorgias_backfill,
    zohodesk_backfill,
    generic_backfill,
);
