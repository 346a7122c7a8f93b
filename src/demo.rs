//! `outcome-meter demo`: the whole pipeline on a throwaway SQLite file, with a
//! manual clock moved past the reopen window and Stripe in dry-run.

use crate::accounting::period::Period;
use crate::accounting::{explain::explain, outcomes, statement};
use crate::app::{start, AppError, Roles, Services};
use crate::clock::{Clock, ManualClock};
use crate::providers::generic;
use crate::settings::{Settings, TenantSettings};
use crate::store::OutcomeFilter;
use crate::time::Millis;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SECRET: &str = "demo-signing-secret";
const TENANT: &str = "demo";
const CUSTOMER: &str = "cus_demo";

fn event(
    id: &str,
    ticket: &str,
    kind: &str,
    at: chrono::DateTime<chrono::Utc>,
    resolver: Option<&str>,
) -> String {
    let mut v = serde_json::json!({
        "event_id": id, "ticket_id": ticket, "type": kind,
        "occurred_at": at.to_rfc3339(), "channel": "chat", "tags": ["demo"],
    });
    if let Some(r) = resolver {
        v["resolver"] = r.into();
    }
    v.to_string()
}

/// Where the demo writes the statement page: beside its database,
/// `data/demo.db` -> `data/demo-statement.html`.
pub fn statement_path(db_path: &str) -> PathBuf {
    let db = Path::new(db_path);
    let stem = db
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "demo".into());
    db.with_file_name(format!("{stem}-statement.html"))
}

/// Run the demo; returns the report to print.
pub async fn run(mut settings: Settings, db_path: &str) -> Result<String, AppError> {
    let _ = std::fs::remove_file(db_path);
    settings.database.url = format!("sqlite://{db_path}");
    // Always a dry-run: the demo's clock runs ahead of Stripe's.
    settings.stripe.api_key.clear();
    settings.stripe.mode = Some(crate::stripe::mode::StripeMode::DryRun);
    settings.tenants = vec![TenantSettings::generic(TENANT, CUSTOMER, SECRET)];
    let clock = ManualClock::new(chrono::Utc::now());
    let services = Services::open(settings, Arc::new(clock.clone())).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| AppError::Listen {
            addr: "127.0.0.1:0".into(),
            source,
        })?;
    let running = start(
        &services,
        listener,
        None,
        Roles {
            receiver: true,
            worker: false,
            reporter: false,
        },
    )
    .await?;
    let url = format!("http://{}/webhooks/generic/demo", running.addr);
    let t0 = clock.now();
    let mut out = String::new();
    send_script(&url, &clock, t0, &mut out).await;
    running.stop().await?;
    confirm_and_report(&services, &clock, &mut out).await?;
    show_outcomes(&services, &mut out).await?;
    // What finance would get: the statement page of the days the demo covered.
    let page = write_statement(&services, db_path, t0, clock.now()).await?;
    let shown = std::fs::canonicalize(&page).unwrap_or_else(|_| page.clone());
    let _ = writeln!(
        out,
        "\nStatement page (what finance gets, open it in a browser): {}",
        shown.display()
    );
    let _ = writeln!(out, "\nDatabase kept at {db_path}; try: outcome-meter explain demo D-103 (with database.url pointing there)");
    services.store.close().await;
    Ok(out)
}

/// The demo's webhooks, from `t0`: each with what it shows (empty: the same
/// ticket as the one before).
fn script(t0: chrono::DateTime<chrono::Utc>) -> [(&'static str, String); 10] {
    let h = chrono::Duration::hours;
    [
        (
            "Ticket D-100: AI resolves, nobody reopens",
            event("e1", "D-100", "resolved", t0, Some("ai")),
        ),
        (
            "Ticket D-101: AI resolves, customer replies 2h later",
            event("e2", "D-101", "resolved", t0, Some("ai")),
        ),
        (
            "",
            event("e3", "D-101", "customer_replied", t0 + h(2), None),
        ),
        (
            "Ticket D-102: a human resolves",
            event("e4", "D-102", "resolved", t0, Some("human")),
        ),
        (
            "Ticket D-103: handed to a human, then AI resolves",
            event("e5", "D-103", "handed_off_to_human", t0, None),
        ),
        ("", event("e6", "D-103", "resolved", t0 + h(1), Some("ai"))),
        (
            "Ticket D-104: AI resolves, reopened, AI resolves again",
            event("e7", "D-104", "resolved", t0, Some("ai")),
        ),
        ("", event("e8", "D-104", "reopened", t0 + h(3), None)),
        ("", event("e9", "D-104", "resolved", t0 + h(4), Some("ai"))),
        (
            "Redelivery of D-100's event",
            event("e1", "D-100", "resolved", t0, Some("ai")),
        ),
    ]
}

/// Send the script, signed, to `url`, then a forged webhook; say each answer.
async fn send_script(
    url: &str,
    clock: &ManualClock,
    t0: chrono::DateTime<chrono::Utc>,
    out: &mut String,
) {
    let http = reqwest::Client::new();
    let _ = writeln!(out, "Sending signed webhooks to {url}");
    let script = script(t0);
    for (label, body) in script.iter().chain(std::iter::once(&(
        "A forged webhook (wrong secret)",
        event("x1", "D-999", "resolved", t0, Some("ai")),
    ))) {
        let secret = if body.contains("D-999") {
            "wrong"
        } else {
            SECRET
        };
        let sig = generic::sign(secret, clock.now().timestamp(), body.as_bytes());
        let status = match http
            .post(url)
            .header("Outcome-Signature", sig)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("error: {e}"),
        };
        if !label.is_empty() {
            let _ = writeln!(out, "  {label}");
        }
        let _ = writeln!(out, "      -> HTTP {status}");
    }
}

/// Process the deliveries, move the clock past the reopen window, confirm and
/// report (a dry-run).
async fn confirm_and_report(
    services: &Services,
    clock: &ManualClock,
    out: &mut String,
) -> Result<(), AppError> {
    let worker = services.worker();
    let reporter = services.reporter()?;
    worker.drain().await?;
    let _ = writeln!(
        out,
        "\nMoving the clock 80 hours ahead (the default reopen window is 72h)..."
    );
    clock.advance(chrono::Duration::hours(80));
    let (_, confirmed) = worker.drain().await?;
    reporter.drain().await?;
    let _ = writeln!(
        out,
        "Confirmation pass looked at {confirmed} due ticket(s).\n"
    );
    Ok(())
}

/// The outcomes, what a dry-run would have sent for each, and the trails of two
/// tickets.
async fn show_outcomes(services: &Services, out: &mut String) -> Result<(), AppError> {
    let listing = outcomes::page(&services.store, &OutcomeFilter::default()).await?;
    out.push_str(&outcomes::render(&listing));
    for o in &listing.outcomes {
        for a in services.store.attempts(&o.id).await? {
            let _ = writeln!(
                out,
                "  dry-run, would POST /v1/billing/meter_events: {}",
                a.request
            );
        }
    }
    for ticket in ["D-101", "D-104"] {
        out.push('\n');
        out.push_str(
            &explain(&services.store, "demo", ticket, None)
                .await?
                .render(),
        );
    }
    Ok(())
}

/// Write the statement page of the whole UTC days from `t0` to `now` beside
/// the database; returns where.
async fn write_statement(
    services: &Services,
    db_path: &str,
    t0: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PathBuf, AppError> {
    let day = |t: chrono::DateTime<chrono::Utc>| {
        Millis::from(t.date_naive().and_time(chrono::NaiveTime::MIN).and_utc())
    };
    let period = Period {
        from: day(t0),
        to: day(now) + std::time::Duration::from_secs(86_400),
    };
    let st = statement::build(
        &services.store,
        TENANT,
        CUSTOMER,
        crate::stripe::mode::StripeMode::DryRun,
        period,
    )
    .await?;
    let page = statement_path(db_path);
    std::fs::write(&page, st.to_html()).map_err(|source| AppError::Write {
        path: page.display().to_string(),
        source,
    })?;
    Ok(page)
}
