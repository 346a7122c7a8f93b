//! Chaos: the real binary under SIGKILLs at random moments, a fake Stripe that
//! fails after recording, shuffled and repeated deliveries, and garbage traffic.
//! At the end the events Stripe accepted must equal what an independent oracle
//! computes from the scenario: nothing lost, nothing twice, nothing disqualified.
//!
//! Every sink is in the run: by default `acme` bills through Stripe meter
//! events, `globex` through Metronome, `initech` through Stripe's legacy usage
//! records (and `umbrella`, the customer Stripe rejects, through meter events);
//! `OUTCOME_METER_CHAOS_SINK=metronome` (or another sink's name) puts the first
//! three on that one sink. Each fake faults, drops after accepting and is
//! checked for lost and doubled outcomes on its own.
//!
//! Lost webhooks (the second test, [`lost_webhooks_are_never_billed_wrongly`]): the
//! same run, but a share of the helpdesk's events (10%, or
//! `OUTCOME_METER_CHAOS_DROP=<0..1>`), picked from the run's seed, is never sent,
//! not even as a redelivery; every tenant's generic provider verifies before
//! billing against a fake `verify_url` that knows every ticket's true life (the
//! dropped events included). Checked: everything billed is in the oracle of the
//! true life, once (nothing a lost reopen, reply, hand-off or tag disqualifies);
//! none of what a webhook-only service would have billed wrongly (the oracle of
//! the delivered events minus the truth) is billed; and exactly: the billed set
//! is the truth of every ticket whose delivered events show a resolution standing
//! past its window (those are checked, and a ticket's first check reads its whole
//! life), nothing of the others. Printed: the wrong bills verification prevented,
//! and the true outcomes not billed, split into those whose resolution's webhook
//! was lost (only backfill can learn those) and the rest.
//!
//! Small by default (CI). Larger: `OUTCOME_METER_CHAOS_TICKETS=20000`; replay a
//! run with the seed it printed: `OUTCOME_METER_CHAOS_SEED=<seed>`; keep the service's
//! warnings and errors with `OUTCOME_METER_CHAOS_LOG=<file>`. One of the two:
//! `cargo test --test it chaos::lost_webhooks -- --nocapture`.

mod scenario;

use crate::support::GENERIC_SECRET;
use chrono::{Duration as Span, Utc};
use outcome_meter::providers::generic::sign;
use outcome_meter::sink::Sink;
use scenario::{generate, oracle, oracle_resolutions, WINDOW_HOURS};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::fake_helpdesk::{generic::Generic, FakeHelpdesk};
use testkit::fake_metronome::{self, FakeMetronome};
use testkit::fake_stripe::{FakeStripe, Fault};
use testkit::process::{free_addr, ServeCommand, ServeProcess};
use tokio::sync::Mutex;

const TENANTS: [&str; 4] = ["acme", "globex", "initech", "umbrella"];
const MAX_BODY: usize = 16 * 1024;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The tenant whose Stripe customer passes the preflight but fails Stripe's
/// asynchronous validation: its events are accepted (200), then rejected.
const REJECTED_TENANT: &str = "umbrella";

/// The signing secret of the event destination that tells the service so.
const WHSEC: &str = "whsec_chaos_destination_secret";

fn customer(tenant: &str) -> String {
    format!("cus_{tenant}")
}

/// A tenant's Metronome customer (an ingest alias) and legacy subscription item.
fn metronome_customer(tenant: &str) -> String {
    format!("{tenant}-metronome")
}

fn subscription_item(tenant: &str) -> String {
    format!("si_{tenant}")
}

/// Where each tenant bills (see the module's comment).
fn sinks() -> BTreeMap<&'static str, Sink> {
    let one = std::env::var("OUTCOME_METER_CHAOS_SINK")
        .ok()
        .map(|s| Sink::parse(&s).expect("OUTCOME_METER_CHAOS_SINK names a sink"));
    let defaults = [
        Sink::StripeMeters,
        Sink::Metronome,
        Sink::StripeUsageRecords,
    ];
    TENANTS
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let sink = match (t, one) {
                (REJECTED_TENANT, _) => Sink::StripeMeters,
                (_, Some(s)) => s,
                _ => defaults[i % defaults.len()],
            };
            (t, sink)
        })
        .collect()
}

/// What the billing systems recorded, by outcome id (a repeat is a double bill).
struct Billed {
    by_outcome: BTreeMap<String, usize>,
    total: usize,
}

impl Billed {
    fn read(
        stripe: &FakeStripe,
        metronome: &FakeMetronome,
        sinks: &BTreeMap<&str, Sink>,
    ) -> Billed {
        let on = |tenant: &str, sink: Sink| sinks.get(tenant) == Some(&sink);
        let tenant_of =
            |f: &dyn Fn(&str) -> String, id: &str| TENANTS.iter().copied().find(|t| f(t) == id);
        let mut ids = Vec::new();
        for e in stripe.events() {
            let tenant = tenant_of(&customer, &e.customer).expect("a known customer");
            assert!(on(tenant, Sink::StripeMeters), "{tenant} got a meter event");
            assert_eq!(
                (e.value.as_str(), e.event_name.as_str()),
                ("1", "resolved_ticket")
            );
            ids.push(e.identifier.clone());
        }
        for e in metronome.events() {
            let tenant = tenant_of(&metronome_customer, &e.customer_id).expect("a known customer");
            assert!(
                on(tenant, Sink::Metronome),
                "{tenant} got a Metronome event"
            );
            assert_eq!(
                (e.number("value"), e.event_type.as_str()),
                (Some(1.0), "resolved_ticket")
            );
            ids.push(e.transaction_id.clone());
        }
        for r in stripe.usage_records() {
            let tenant = tenant_of(&subscription_item, &r.subscription_item).expect("a known item");
            assert!(
                on(tenant, Sink::StripeUsageRecords),
                "{tenant} got a usage record"
            );
            assert_eq!((r.quantity, r.action.as_str()), (1, "increment"));
            // No identifier at Stripe: the outcome is named by the record's key.
            let key = r
                .idempotency_key
                .expect("every usage record is sent with a key");
            ids.push(key.split(':').next().unwrap_or_default().to_string());
        }
        let mut by_outcome = BTreeMap::new();
        for id in &ids {
            *by_outcome.entry(id.clone()).or_insert(0) += 1;
        }
        Billed {
            by_outcome,
            total: ids.len(),
        }
    }
}

struct Endpoints<'a> {
    stripe: &'a str,
    metronome: &'a str,
    /// The fake generic `verify_url` and its token: verification on for every tenant.
    verify: Option<(&'a str, &'a str)>,
}

fn write_config(path: &Path, db: &Path, at: &Endpoints<'_>, offset_ms: i64) {
    let mut toml = format!(
        r#"
[server]
max_body_bytes = {MAX_BODY}
[database]
url = "sqlite://{db}"
[worker]
poll_interval = "20ms"
batch_size = 64
lease = "1s"
[reporter]
poll_interval = "20ms"
batch_size = 32
rate_per_second = 2000.0
concurrency = 4
backoff_base = "10ms"
backoff_max = "200ms"
max_attempts = 1000
[stripe]
mode = "test"
api_key = "{key}"
api_base = "{stripe}"
timeout = "300ms"
webhook_secret = "{WHSEC}"
[metronome]
api_base = "{metronome}"
api_token = "{metronome_token}"
environment = "sandbox"
timeout = "300ms"
rate_per_second = 2000.0
[clock]
offset = "{offset}ms"
[contract]
reopen_window = "{WINDOW_HOURS}h"
excluded_tags = ["{tag}"]
"#,
        db = db.display(),
        key = FakeStripe::API_KEY,
        stripe = at.stripe,
        metronome = at.metronome,
        metronome_token = FakeMetronome::TOKEN,
        offset = offset_ms,
        tag = scenario::EXCLUDED_TAG,
    );
    if at.verify.is_some() {
        // Quick retries after the fake's 429s (the service's clock runs in real time).
        toml += "[verify]\nretry_base = \"100ms\"\nretry_max = \"1s\"\nconcurrency = 8\n";
    }
    for (t, sink) in sinks() {
        toml += &format!(
            "[[tenants]]\nid = \"{t}\"\nstripe_customer_id = \"{}\"\nsink = \"{sink}\"\n\
             metronome_customer_id = \"{}\"\nstripe_subscription_item = \"{}\"\n\
             [tenants.providers.generic]\nsecrets = [\"{GENERIC_SECRET}\"]\n",
            customer(t),
            metronome_customer(t),
            subscription_item(t),
        );
        if let Some((url, token)) = at.verify {
            toml += &format!(
                "[tenants.providers.generic.api]\nbase_url = \"{url}\"\ntoken = \"{token}\"\n\
                 requests_per_minute = 600000\n"
            );
        }
    }
    std::fs::write(path, toml).expect("write chaos config");
}

/// One request of the traffic.
#[derive(Clone, Debug)]
enum Item {
    /// An authentic event: the helpdesk retries until it gets a 2xx.
    Event { tenant: String, body: String },
    /// A request that must be refused (status) or quarantined (202/200), once.
    Garbage { kind: Garbage, n: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Garbage {
    Unsigned,
    BadSignature,
    Stale,
    NotJson,
    Oversized,
    UnknownTenant,
    /// Signed JSON the provider cannot interpret: stored, quarantined, acknowledged.
    Unparseable,
}

const GARBAGE: [Garbage; 7] = [
    Garbage::Unsigned,
    Garbage::BadSignature,
    Garbage::Stale,
    Garbage::NotJson,
    Garbage::Oversized,
    Garbage::UnknownTenant,
    Garbage::Unparseable,
];

impl Garbage {
    fn expected(self, status: u16) -> bool {
        match self {
            Garbage::Unsigned | Garbage::BadSignature | Garbage::Stale => status == 401,
            Garbage::NotJson => status == 400,
            Garbage::Oversized => status == 413,
            Garbage::UnknownTenant => status == 404,
            Garbage::Unparseable => status == 202 || status == 200,
        }
    }
}

/// The service process, restarted after every kill on the same address.
struct Target {
    serve: ServeCommand,
    addr: String,
    proc: Mutex<ServeProcess>,
    kills: AtomicUsize,
    offset_ms: std::sync::atomic::AtomicI64,
}

impl Target {
    async fn start(serve: ServeCommand, http: &reqwest::Client, offset_ms: i64) -> Target {
        let addr = free_addr();
        let proc = boot(&serve, &addr, http).await;
        Target {
            serve,
            addr,
            proc: Mutex::new(proc),
            kills: AtomicUsize::new(0),
            offset_ms: offset_ms.into(),
        }
    }

    /// SIGKILL, then start again (the port may take a moment to be free).
    async fn kill_and_restart(&self, http: &reqwest::Client) {
        let mut p = self.proc.lock().await;
        p.kill();
        self.kills.fetch_add(1, Ordering::Relaxed);
        *p = boot(&self.serve, &self.addr, http).await;
    }

    /// The service's clock, for signing.
    fn now_unix(&self) -> i64 {
        (Utc::now() + Span::milliseconds(self.offset_ms.load(Ordering::Relaxed))).timestamp()
    }

    fn url(&self, tenant: &str) -> String {
        format!("http://{}/webhooks/generic/{tenant}", self.addr)
    }
}

async fn boot(serve: &ServeCommand, addr: &str, http: &reqwest::Client) -> ServeProcess {
    let mut last = String::new();
    for _ in 0..50 {
        match serve.spawn_on(addr) {
            Ok(mut p) => match p.wait_ready(http, Duration::from_secs(20)).await {
                Ok(()) => return p,
                Err(e) => last = e,
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not restart outcome-meter: {last}");
}

/// Send one item; returns the status of a garbage request.
async fn send(target: &Target, http: &reqwest::Client, item: &Item) -> Option<u16> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no answer for {item:?}");
        let t = target.now_unix();
        let req = match item {
            Item::Event { tenant, body } => http
                .post(target.url(tenant))
                .header(
                    "Outcome-Signature",
                    sign(GENERIC_SECRET, t, body.as_bytes()),
                )
                .body(body.clone()),
            Item::Garbage { kind, n } => garbage_request(target, http, *kind, *n, t),
        };
        // A connection error (killed mid-request) or a 503 while restarting: retry,
        // as helpdesks do.
        if let Ok(r) = req.send().await {
            let status = r.status().as_u16();
            match item {
                Item::Event { .. } if status == 200 || status == 202 => return None,
                Item::Event { .. } => {}
                Item::Garbage { .. } => return Some(status),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn garbage_request(
    target: &Target,
    http: &reqwest::Client,
    kind: Garbage,
    n: usize,
    t: i64,
) -> reqwest::RequestBuilder {
    let body = match kind {
        Garbage::NotJson => format!("not json {n}"),
        Garbage::Oversized => format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_BODY + 1)),
        Garbage::Unparseable => format!("{{\"event_id\":\"junk-{n}\",\"ticket_id\":\"J{n}\"}}"),
        _ => format!(
            "{{\"event_id\":\"g-{n}\",\"ticket_id\":\"G{n}\",\"type\":\"resolved\",\"occurred_at\":\"2026-01-01T00:00:00Z\",\"resolver\":\"ai\"}}"
        ),
    };
    let (tenant, secret, at) = match kind {
        Garbage::BadSignature => ("acme", "not-the-secret", t),
        Garbage::Stale => ("acme", GENERIC_SECRET, t - 3600),
        Garbage::UnknownTenant => ("nobody", GENERIC_SECRET, t),
        _ => ("acme", GENERIC_SECRET, t),
    };
    let req = http.post(target.url(tenant)).body(body.clone());
    if kind == Garbage::Unsigned {
        req
    } else {
        req.header("Outcome-Signature", sign(secret, at, body.as_bytes()))
    }
}

/// What the chaos database holds, by state.
async fn census(store: &outcome_meter::store::Store) -> outcome_meter::store::Census {
    store.census().await.expect("count query")
}

/// A count the store answers from an index (cheap to poll).
fn count(n: Result<i64, outcome_meter::store::StoreError>) -> i64 {
    n.expect("count query")
}

/// Poll every 50 ms until `done`, for at most `limit`.
/// Whether `done` holds within `limit` (polled every 50 ms).
async fn within<F, Fut>(limit: Duration, mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if done().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn until<F, Fut>(what: &str, limit: Duration, done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    testkit::poll::until(what, limit, Duration::from_millis(50), done).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkills_stripe_faults_and_garbage_lose_nothing_and_bill_nothing_twice() {
    run(0.0, 2000).await;
}

/// See the module's comment: lost webhooks, verification before billing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_webhooks_are_never_billed_wrongly() {
    let drop = std::env::var("OUTCOME_METER_CHAOS_DROP")
        .ok()
        .map(|v| {
            v.parse::<f64>()
                .expect("OUTCOME_METER_CHAOS_DROP is a number")
        })
        .unwrap_or(0.1);
    assert!((0.0..1.0).contains(&drop) && drop > 0.0, "0 < drop < 1");
    run(drop, 800).await;
}

/// One chaos run of `tickets` tickets (unless `OUTCOME_METER_CHAOS_TICKETS`); with
/// `drop` > 0, that share of the events is never sent and every tenant verifies.
async fn run(drop: f64, tickets: usize) {
    let tickets = env_number("OUTCOME_METER_CHAOS_TICKETS", tickets as u64) as usize;
    let seed = env_number("OUTCOME_METER_CHAOS_SEED", fastrand::u64(..));
    let name = if drop > 0.0 {
        "chaos (lost webhooks)"
    } else {
        "chaos"
    };
    eprintln!("{name}: seed {seed} (OUTCOME_METER_CHAOS_SEED={seed} replays this run)");
    let mut rng = fastrand::Rng::with_seed(seed);

    // Scenario time: 25 days ago, so confirmation times stay inside Stripe's 35 days.
    let real_now = Utc::now();
    let start = real_now - Span::days(25);
    let sc = generate(&mut rng, &TENANTS, tickets, start);
    let expected = oracle(&sc.events);
    // Lost webhooks: picked by their own generator, so the rest of the run is the
    // same for a seed whatever the share.
    let dropped: BTreeSet<&str> = {
        let mut drng = fastrand::Rng::with_seed(seed ^ 0xd0e5);
        sc.events
            .iter()
            .filter(|_| drop > 0.0 && drng.f64() < drop)
            .map(|e| e.event_id.as_str())
            .collect()
    };
    let delivered: Vec<scenario::Event> = sc
        .events
        .iter()
        .filter(|e| !dropped.contains(e.event_id.as_str()))
        .cloned()
        .collect();
    let settle_time = sc.last + Span::hours(WINDOW_HOURS + 1);
    assert!(settle_time < real_now - Span::days(1), "scenario too long");
    let offset_ingest = (start - real_now).num_milliseconds();
    let offset_settle = (settle_time - real_now).num_milliseconds();

    // Traffic: every event not lost, a fifth of them twice, garbage in between, shuffled.
    let mut items: Vec<Item> = Vec::new();
    for e in &delivered {
        let item = Item::Event {
            tenant: e.tenant.clone(),
            body: e.body(),
        };
        if rng.f64() < 0.2 {
            items.push(item.clone());
        }
        items.push(item);
    }
    let garbage_n = items.len() / 20 + GARBAGE.len();
    for n in 0..garbage_n {
        let kind = GARBAGE[n % GARBAGE.len()];
        items.push(Item::Garbage { kind, n });
    }
    rng.shuffle(&mut items);
    let unparseable = (0..garbage_n)
        .filter(|n| GARBAGE[n % GARBAGE.len()] == Garbage::Unparseable)
        .count() as i64;

    let stripe = FakeStripe::start().await;
    let customers: Vec<String> = TENANTS.iter().map(|t| customer(t)).collect();
    stripe.ensure_account(customers.iter().map(String::as_str), ["resolved_ticket"]);
    stripe.reject_customer(&customer(REJECTED_TENANT), "meter_event_customer_not_found");
    // Every rejected event named in the report (Stripe names a few samples; the
    // rest would only show as drift), so each can be checked below.
    stripe.set_sample_limit(usize::MAX);
    stripe.set_check_timestamps(true);
    stripe.set_random_faults(
        0.3,
        vec![
            Fault::Status(429),
            Fault::StatusWithRetryAfter(429, 1),
            Fault::Status(500),
            Fault::Status(503),
            Fault::Delay(Duration::from_millis(500)), // longer than the client's timeout
            Fault::AcceptThenDrop,
            Fault::AcceptThenStatus(500),
            // Stripe saves a 500 under its key: only a retry with a new key gets through.
            Fault::Saved5xx(500),
        ],
    );
    let metronome = FakeMetronome::start().await;
    metronome.set_random_faults(
        0.3,
        vec![
            fake_metronome::Fault::Status(429),
            fake_metronome::Fault::StatusWithRetryAfter(429, 1),
            fake_metronome::Fault::Status(500),
            fake_metronome::Fault::AcceptThenDrop,
            fake_metronome::Fault::AcceptThenStatus(502),
            fake_metronome::Fault::AcceptSomeThenStatus(1, 500),
        ],
    );
    let sinks = sinks();
    // Each legacy item's current period holds the whole scenario and its settlement.
    for t in TENANTS {
        stripe.add_subscription_item(
            &subscription_item(t),
            (start - Span::days(1)).timestamp(),
            (real_now + Span::days(5)).timestamp(),
        );
    }
    // The helpdesk's verify_url: every ticket's true life, a 429 now and then.
    let helpdesk = if drop > 0.0 {
        let fake = FakeHelpdesk::start(Generic).await;
        fake.state().signing_secret = GENERIC_SECRET.to_string();
        let mut lives: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
        for e in &sc.events {
            let body = serde_json::from_str(&e.body()).expect("an event body is JSON");
            lives.entry(e.ticket.as_str()).or_default().push(body);
        }
        for (ticket, events) in lives {
            fake.set_events(ticket, events);
        }
        fake.rate_limit_every(100, 1);
        Some(fake)
    } else {
        None
    };
    let verify_at = helpdesk.as_ref().map(|f| (f.base_url(), f.token()));
    let (stripe_url, metronome_url) = (stripe.base_url(), metronome.base_url());
    let at = Endpoints {
        stripe: &stripe_url,
        metronome: &metronome_url,
        verify: verify_at.as_ref().map(|(u, t)| (u.as_str(), t.as_str())),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    // `OUTCOME_METER_CHAOS_KEEP=1`: keep the database and configuration of a failed run.
    let dir_path = dir.path().to_path_buf();
    let _dir = if std::env::var_os("OUTCOME_METER_CHAOS_KEEP").is_some() {
        eprintln!("chaos: keeping {}", dir.keep().display());
        None
    } else {
        Some(dir)
    };
    let db = dir_path.join("chaos.db");
    let config = dir_path.join("chaos.toml");
    write_config(&config, &db, &at, offset_ingest);
    let mut serve = ServeCommand::new(
        Path::new(env!("CARGO_BIN_EXE_outcome-meter")),
        &config,
        &dir_path,
    );
    serve.show_logs = false;
    // `OUTCOME_METER_CHAOS_LOG=<file>`: the service's warnings and errors, for a failed run.
    if let Ok(file) = std::env::var("OUTCOME_METER_CHAOS_LOG") {
        serve.log = "warn".into();
        serve.log_file = Some(file.into());
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let target = Arc::new(Target::start(serve, &http, offset_ingest).await);

    // The killer: SIGKILL at random moments until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (target, http, stop) = (target.clone(), http.clone(), stop.clone());
        let mut krng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(krng.u64(150..700))).await;
                if !stop.load(Ordering::Relaxed) {
                    target.kill_and_restart(&http).await;
                }
            }
        })
    };

    // Phase 1: deliver everything while the process is being killed.
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let wrong = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for _ in 0..6 {
        let (target, http, items, next, wrong) = (
            target.clone(),
            http.clone(),
            items.clone(),
            next.clone(),
            wrong.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                if let (Item::Garbage { kind, .. }, Some(status)) =
                    (item, send(&target, &http, item).await)
                {
                    if !kind.expected(status) {
                        let mut w = wrong.lock().unwrap_or_else(|p| p.into_inner());
                        w.push(format!("{kind:?} got {status}"));
                    }
                }
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }

    let mut settings = outcome_meter::settings::Settings::default();
    settings.database.url = format!("sqlite://{}", db.display());
    let store = outcome_meter::store::Store::connect(&settings.database)
        .await
        .expect("open the chaos database");
    until("the inbox to drain", Duration::from_secs(120), || async {
        count(store.deliveries_pending().await) == 0
    })
    .await;

    // Phase 2: the clock passes every window; confirmation and reporting under kills.
    write_config(&config, &db, &at, offset_settle);
    target.offset_ms.store(offset_settle, Ordering::Relaxed);
    target.kill_and_restart(&http).await;
    // Everything the service decided to bill reached its billing system. Without
    // lost webhooks that is the oracle's count; with them, the outcomes it holds.
    let all_billed = || async {
        let target = if drop > 0.0 {
            census(&store).await.outcomes.total() as usize
        } else {
            expected.len()
        };
        Billed::read(&stripe, &metronome, &sinks).by_outcome.len() >= target
            && count(store.tickets_waiting().await) == 0
            && count(store.outcomes_pending().await) == 0
    };
    // A usage record in doubt after a saved 5xx is judged from Stripe's summaries
    // once they include the item's last call (15 minutes of the service's clock):
    // when billing stops progressing before everything is billed, let that time
    // pass (a restart with a later clock) and look again.
    let mut offset = offset_settle;
    let mut clock_moves = 0;
    let started = Instant::now();
    let mut last_billed = 0;
    while !within(Duration::from_secs(20), all_billed).await {
        if started.elapsed() >= Duration::from_secs(300) || clock_moves >= 8 {
            panic!(
                "every outcome to reach its billing system: not done after {:?} and {clock_moves} clock moves; still waiting: {}",
                started.elapsed(),
                still_waiting(&store).await
            );
        }
        let billed = Billed::read(&stripe, &metronome, &sinks).by_outcome.len();
        if billed == last_billed {
            clock_moves += 1;
            offset += 20 * 60_000;
            write_config(&config, &db, &at, offset);
            target.offset_ms.store(offset, Ordering::Relaxed);
            target.kill_and_restart(&http).await;
        }
        last_billed = billed;
    }
    stop.store(true, Ordering::Relaxed);
    killer.await.expect("killer");
    // One more clean pass: nothing left to send may still show up late.
    target.kill_and_restart(&http).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stripe's validation rejects the unknown customer's events, and says so to the
    // event destination; the service marks each one rejected, never billed.
    let rejected_tenant = census(&store).await.outcomes.of_tenant(REJECTED_TENANT);
    stripe.set_event_destination(&format!("http://{}/stripe/events", target.addr), WHSEC);
    let published = stripe.publish_error_reports().await;
    assert!(
        published.iter().all(|(_, status)| *status == 200),
        "{published:?}"
    );
    until(
        "every rejected outcome to be marked rejected",
        Duration::from_secs(60),
        || async {
            census(&store).await.outcomes.in_state("rejected_by_stripe") == rejected_tenant
        },
    )
    .await;
    let _ = target
        .proc
        .lock()
        .await
        .terminate(Duration::from_secs(10))
        .await;

    // The verdict.
    let billed = Billed::read(&stripe, &metronome, &sinks);
    let got: BTreeSet<String> = billed.by_outcome.keys().cloned().collect();
    let lost: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    let twice = billed.total - got.len();
    // Per sink: outcomes billed there of those expected there.
    let per_sink: Vec<String> = Sink::ALL
        .iter()
        .map(|&sink| {
            let events: Vec<_> = sc
                .events
                .iter()
                .filter(|e| sinks.get(e.tenant.as_str()) == Some(&sink))
                .cloned()
                .collect();
            let here = oracle(&events);
            let billed_here = here.iter().filter(|id| got.contains(*id)).count();
            format!("{sink} {billed_here}/{}", here.len())
        })
        .collect();
    let distinct_events: BTreeSet<&str> = delivered.iter().map(|e| e.event_id.as_str()).collect();
    let counts = census(&store).await;
    let stored = counts.deliveries.total();
    let quarantined = counts.deliveries.in_state("quarantined");
    let failed: i64 = counts
        .outcomes
        .iter()
        .filter(|(_, state, _)| !["reported", "rejected_by_stripe"].contains(state))
        .map(|(_, _, n)| n)
        .sum();
    let rejected = counts.outcomes.in_state("rejected_by_stripe");
    let rejected_elsewhere: i64 = counts
        .outcomes
        .iter()
        .filter(|(tenant, state, _)| {
            (*state == "rejected_by_stripe") != (*tenant == REJECTED_TENANT)
        })
        .map(|(_, _, n)| n)
        .sum();
    let wrong = wrong.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!(
        "chaos: {tickets} tickets, {} events, {} requests ({} garbage), {} SIGKILLs; \
         Stripe: {} requests, {} faults injected, {} resends refused as duplicates; \
         Metronome: {} requests, {} faults injected, {} duplicates ignored; billed by sink: {}; \
         clock moved {clock_moves} time(s) for usage records to settle; \
         expected {} outcomes, billed {}, lost {}, sent twice {}, disqualified sent {}; \
         deliveries stored {stored} (quarantined {quarantined}), garbage answered wrongly {}; \
         rejected by Stripe after acceptance and shown as rejected {rejected} of {rejected_tenant}",
        sc.events.len(),
        items.len(),
        garbage_n,
        target.kills.load(Ordering::Relaxed),
        stripe.requests(),
        stripe.faults_injected(),
        stripe.duplicate_refusals(),
        metronome.requests(),
        metronome.faults_injected(),
        metronome.duplicates_ignored(),
        per_sink.join(", "),
        expected.len(),
        got.len(),
        lost.len(),
        twice,
        extra.len(),
        wrong.len(),
    );
    if drop > 0.0 {
        lost_webhooks_verdict(&LostWebhooks {
            events: &sc.events,
            delivered: &delivered,
            dropped: &dropped,
            got: &got,
            store: &store,
            helpdesk: helpdesk.as_ref().expect("a verify_url"),
        })
        .await;
    } else {
        assert!(lost.is_empty(), "lost outcomes, e.g. {:?}", lost.first());
    }
    assert_eq!(twice, 0, "an identifier was billed twice");
    assert!(
        extra.is_empty(),
        "billed a disqualified ticket, e.g. {:?}",
        extra.first()
    );
    assert_eq!(
        failed, 0,
        "every outcome is reported, or rejected by Stripe"
    );
    assert!(
        rejected > 0,
        "the unknown customer's outcomes were rejected"
    );
    assert_eq!(
        rejected_elsewhere, 0,
        "exactly the unknown customer's outcomes are shown as rejected"
    );
    assert!(wrong.is_empty(), "garbage answered wrongly: {wrong:?}");
    assert_eq!(
        quarantined, unparseable,
        "each unparseable delivery kept once"
    );
    assert_eq!(
        stored,
        distinct_events.len() as i64 + unparseable,
        "each authentic delivery stored exactly once, nothing refused stored"
    );
    store.close().await;
}

/// What the lost-webhooks variant checks on top of the common verdict.
struct LostWebhooks<'a> {
    events: &'a [scenario::Event],
    delivered: &'a [scenario::Event],
    dropped: &'a BTreeSet<&'a str>,
    got: &'a BTreeSet<String>,
    store: &'a outcome_meter::store::Store,
    helpdesk: &'a FakeHelpdesk,
}

async fn lost_webhooks_verdict(v: &LostWebhooks<'_>) {
    let truth = oracle_resolutions(v.events);
    let webhooks_only = oracle(v.delivered);
    // What a service billing on webhooks alone would have billed wrongly.
    let prevented: BTreeSet<&String> = webhooks_only
        .iter()
        .filter(|id| !truth.contains_key(*id))
        .collect();
    let prevented_billed: Vec<_> = prevented.iter().filter(|id| v.got.contains(**id)).collect();
    // True outcomes not billed: their resolution's webhook was lost (only backfill
    // can learn of it), or another lost webhook of their ticket hid them.
    let unbilled: Vec<(&String, &String)> = truth
        .iter()
        .filter(|(id, _)| !v.got.contains(*id))
        .collect();
    let (resolution_lost, other): (Vec<&(&String, &String)>, Vec<_>) = unbilled
        .iter()
        .partition(|(_, resolution)| v.dropped.contains(resolution.as_str()));
    // Exactly: a ticket is checked when its delivered events show a resolution
    // standing past its window; its first check (nothing settled before it) reads
    // its whole true life, so from then on it is billed as the truth says. A
    // ticket never checked bills nothing.
    let checked = scenario::with_a_standing_resolution(v.delivered);
    let ticket_of: BTreeMap<&str, (String, String)> = v
        .events
        .iter()
        .map(|e| (e.event_id.as_str(), (e.tenant.clone(), e.ticket.clone())))
        .collect();
    let exact: BTreeSet<String> = truth
        .iter()
        .filter(|(_, r)| checked.contains(&ticket_of[r.as_str()]))
        .map(|(id, _)| id.clone())
        .collect();
    let lossy = v
        .events
        .iter()
        .filter(|e| v.dropped.contains(e.event_id.as_str()))
        .map(|e| e.ticket.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let counts = census(v.store).await;
    let checks = |result: &str| counts.verifications.in_state(result);
    let (agreed, disagreed, unreachable) =
        (checks("agreed"), checks("disagreed"), checks("unreachable"));
    let learned = counts.events_learned;
    eprintln!(
        "chaos (lost webhooks): {} of {} events never sent ({} tickets touched); \
         verify_url: {} requests ({} answered 429); checks: {agreed} agreed, {disagreed} disagreed, \
         {unreachable} unreachable; {learned} events learned from the helpdesk; \
         true outcomes {}, billed {}; wrong bills prevented {} of {} a webhook-only service \
         would have made; true outcomes not billed {} ({} whose resolution's webhook was lost, \
         {} hidden by another lost webhook of their ticket)",
        v.dropped.len(),
        v.events.len(),
        lossy,
        v.helpdesk.requests(),
        v.helpdesk.rate_limited(),
        truth.len(),
        v.got.len(),
        prevented.len() - prevented_billed.len(),
        prevented.len(),
        unbilled.len(),
        resolution_lost.len(),
        other.len(),
    );
    assert!(
        prevented_billed.is_empty(),
        "billed what only a lost webhook disqualifies, e.g. {:?}",
        prevented_billed.first()
    );
    let missing: Vec<_> = exact.difference(v.got).collect();
    let beyond: Vec<_> = v.got.difference(&exact).collect();
    assert!(
        missing.is_empty() && beyond.is_empty(),
        "billed = the truth of every ticket verification checked: {} missing (e.g. {:?}), \
         {} beyond (e.g. {:?})",
        missing.len(),
        missing.first(),
        beyond.len(),
        beyond.first()
    );
    assert!(
        agreed > 0 && disagreed > 0,
        "verification ran and disagreed"
    );
}

/// What keeps the chaos run from finishing, for the failure message: the
/// tickets still queued and the outcomes still pending, with why.
async fn still_waiting(store: &outcome_meter::store::Store) -> String {
    let rows = |sql: &'static str| async move {
        store
            .test_support()
            .text_rows(sql, &[])
            .await
            .map(|rows| rows.into_iter().map(|r| r.join(" | ")).collect::<Vec<_>>())
            .unwrap_or_else(|e| vec![format!("(cannot read: {e})")])
    };
    let tickets = rows(
        "SELECT tenant, provider, ticket_id, CAST(settle_at AS TEXT) FROM tickets \
         WHERE settle_at IS NOT NULL ORDER BY settle_at LIMIT 10",
    )
    .await;
    let outcomes = rows(
        "SELECT id, sink, CAST(attempts AS TEXT), CAST(next_attempt_at AS TEXT), \
         COALESCE(CAST(lease_until AS TEXT), '-'), COALESCE(last_error, '-') FROM outcomes \
         WHERE state = 'pending' ORDER BY next_attempt_at LIMIT 10",
    )
    .await;
    let by_state = rows(
        "SELECT sink, state, CAST(COUNT(*) AS TEXT), COALESCE(MAX(last_error), '-') FROM outcomes \
         GROUP BY sink, state ORDER BY sink, state",
    )
    .await;
    format!("tickets (tenant | provider | ticket | settle_at): {tickets:?}; pending outcomes (id | sink | attempts | next_attempt_at | lease_until | last_error): {outcomes:?}; outcomes by sink and state (sink | state | count | a last error): {by_state:?}")
}
