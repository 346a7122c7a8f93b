//! Fake Stripe HTTP server for the meter-event path; it checks what Stripe checks.
//!
//! Found (sources):
//! - Meter event create: required event_name + payload (stripe_customer_id, value); identifier
//!   optional (generated if absent, max 100, unique "within a rolling period of at least 24
//!   hours"); timestamp optional, "within the past 35 calendar days or up to 5 minutes in the
//!   future". Response `billing.meter_event` {created, event_name, identifier, livemode, payload
//!   (strings), timestamp}. https://docs.stripe.com/api/billing/meter-event/create
//! - Duplicate identifier: 400 `invalid_request_error`, "An event already exists with identifier
//!   <id>.", `Stripe-Should-Retry: false`, no `code` seen in any report.
//!   https://github.com/langfuse/langfuse/pull/16292
//! - Error types are api_error | card_error | idempotency_error | invalid_request_error, so a 429
//!   is `invalid_request_error` + code `rate_limit` (there is no `rate_limit_error` type).
//!   https://docs.stripe.com/api/errors , https://docs.stripe.com/rate-limits
//! - Idempotency: first result saved and replayed (`Idempotent-Replayed: true`); other params
//!   under the same key: 400 `idempotency_error` "Keys for idempotent requests can only be used
//!   with the same parameters they were first used with. Try using a key other than '<key>' if
//!   you meant to execute a different request."; nothing saved when validation fails.
//!   https://docs.stripe.com/api/idempotent_requests
//! - Summaries: list of `billing.meter_event_summary` (minute-aligned times); adjustments:
//!   `billing.meter_event_adjustment` (status "pending").
//!   https://docs.stripe.com/api/billing/meter-event-summary/object
//!
//! - Cancellation (meter event adjustment): "You can only cancel events within 24 hours of
//!   Stripe receiving them." https://docs.stripe.com/api/billing/meter-event-adjustment/create
//!
//! - Idempotency: "saves the resulting status code and body of the first request made for any
//!   given idempotency key, regardless of whether it succeeds or fails. Subsequent requests with
//!   the same key return the same result, including 500 errors"; "Results are only saved if an
//!   API endpoint started executing"; keys can be removed after at least 24 hours.
//!   https://docs.stripe.com/api/idempotent_requests (`Fault::Saved5xx`).
//! - Test and live mode are separate (objects, identifiers, idempotency keys), and so is each
//!   connected account (`Stripe-Account`). The fake keeps one scope per (mode, account): the
//!   key's prefix picks the mode; `livemode` in answers says which.
//!   https://docs.stripe.com/keys , https://docs.stripe.com/connect/authentication
//!
//! Assumed: a cancel of an event received more than 24 hours ago (by the fake's clock, see
//! `set_clock`) is a 400 `invalid_request_error` at once; Stripe documents neither its code nor
//! its text (one client library names it `out_of_window`), so both are guesses. Only 200s are saved for replay (`Fault::Status*` never are); a replay has a new
//! `Request-Id` and the original `Original-Request`. Payload problems (Stripe reports them
//! asynchronously) and a bad timestamp window are a 400 at once; that message text is a guess.
//! Only Bearer auth; form bodies only; no `value_grouping_window`. Connections are kept alive,
//! as Stripe's are; `Fault::AcceptThenDrop` closes the request's own connection unanswered.
//!
//! Asynchronous rejections (the section at the end): events accepted with a 200 and rejected
//! later, reported through thin events to an event destination and fetched from
//! `GET /v2/core/events/{id}`; see that section for what is found and what is assumed.
//! The account's objects (what the preflight reads):
//! - Meter object: id, object `billing.meter`, created, customer_mapping {event_payload_key, type
//!   `by_id`}, default_aggregation {formula: sum | count | last}, display_name, event_name,
//!   event_time_window (null, `day` or `hour`: "Stripe only uses the most recent meter event
//!   within the hourly or daily window"), livemode, status (active | inactive: "No more events
//!   for this meter will be accepted"), status_transitions {deactivated_at}, updated,
//!   value_settings {event_payload_key}. https://docs.stripe.com/api/billing/meter/object ,
//!   https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage
//! - List meters: `GET /v1/billing/meters`, `limit` 1 to 100 (default 10), `starting_after`,
//!   `ending_before`, `status`; answers `{object: "list", data, has_more, url}`.
//!   https://docs.stripe.com/api/billing/meter/list ; retrieve: `GET /v1/billing/meters/{id}`.
//!   https://docs.stripe.com/api/billing/meter/retrieve
//! - A meter event's payload carries the meter's `customer_mapping.event_payload_key` (default
//!   `stripe_customer_id`) and `value_settings.event_payload_key` (default `value`).
//!   https://docs.stripe.com/api/billing/meter-event/object
//! - Retrieve a customer: `GET /v1/customers/{id}`; "If it's for a deleted Customer, a subset of
//!   the customer's information is returned, including a `deleted` property that's set to true"
//!   (`{id, object: "customer", deleted: true}`). https://docs.stripe.com/api/customers/retrieve
//!
//! Assumed: lists are newest first (Stripe's usual order; the meter list does not say); an
//! unknown id is a 404 `resource_missing` "No such customer: '<id>'" / "No such billing meter:
//! '<id>'" (Stripe's usual shape), also as `starting_after` (there a 400); a meter event is
//! checked against the newest meter of its event name (any status: Stripe reports an inactive
//! meter asynchronously), its payload keys missing being a 400 at once as above. Meters and
//! customers exist only once a test adds them (`add_meter`, `set_meter`, `add_customer`, or
//! `ensure_account`, which the integration tests' harness calls for what it configures).

mod meter_stream;
mod usage_records;
pub use usage_records::RecordedUsage;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::http::{Reply, Request, Response};

const IRE: &str = "invalid_request_error";

/// A meter event the fake accepted.
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    pub event_name: String,
    /// The payload's value under the meter's customer key.
    pub customer: String,
    /// The payload's value under the meter's value key.
    pub value: String,
    /// The whole payload as sent (`payload[<key>]` → value).
    pub payload: BTreeMap<String, String>,
    pub identifier: String,
    pub timestamp: i64,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    /// When the fake received it (Unix seconds, by the fake's clock).
    pub created: i64,
    /// Made with the live key.
    pub livemode: bool,
    /// The `Stripe-Account` header (Connect), if any.
    pub account: Option<String>,
}

/// Injected failures. Each `POST /v1/billing/meter_events` takes one, first in first out.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status with a Stripe-shaped error. The event is not recorded.
    Status(u16),
    /// Same as `Status`, plus `Retry-After: <secs>`.
    StatusWithRetryAfter(u16, u64),
    /// Same as `Status`, plus `Stripe-Should-Retry: false`.
    ShouldRetryFalse(u16),
    /// Sleep this long, then handle the request normally. The event is recorded even if the
    /// client has timed out by then.
    Delay(std::time::Duration),
    /// Handle normally (record, save the idempotent result), then close without answering.
    AcceptThenDrop,
    /// Handle normally (record, save the idempotent 200), then answer this error status.
    AcceptThenStatus(u16),
    /// Execution began and failed with this 5xx, nothing recorded: Stripe saves the error
    /// under the idempotency key and replays it to any retry with the same key (24 hours).
    Saved5xx(u16),
}

#[derive(Clone, Debug)]
struct Resp {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
}

impl Resp {
    fn new(status: u16, body: String, headers: Vec<(&'static str, String)>) -> Resp {
        Resp {
            status,
            body,
            headers,
        }
    }

    fn ok(v: &Value) -> Resp {
        let body = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
        Resp::new(200, body, Vec::new())
    }
}

/// A Stripe error, made into a response once the request id is known.
struct ApiError {
    status: u16,
    kind: &'static str,
    code: Option<&'static str>,
    param: Option<String>,
    message: String,
    headers: Vec<(&'static str, String)>,
}

fn api(status: u16, kind: &'static str, code: Option<&'static str>, msg: String) -> ApiError {
    ApiError {
        status,
        kind,
        code,
        param: None,
        message: msg,
        headers: Vec::new(),
    }
}

/// A 400 `invalid_request_error` about one parameter.
fn bad(param: &str, code: Option<&'static str>, msg: String) -> ApiError {
    ApiError {
        param: Some(param.to_string()),
        ..api(400, IRE, code, msg)
    }
}

impl ApiError {
    fn header(mut self, name: &'static str, value: String) -> ApiError {
        self.headers.push((name, value));
        self
    }

    fn into_resp(self, rid: &str) -> Resp {
        let mut e = Map::new();
        if let Some(code) = self.code {
            let doc = code.replace('_', "-");
            let doc = format!("https://stripe.com/docs/error-codes/{doc}");
            e.insert("code".into(), json!(code));
            e.insert("doc_url".into(), json!(doc));
        }
        e.insert("message".into(), json!(self.message));
        if let Some(param) = self.param {
            e.insert("param".into(), json!(param));
        }
        let log = format!("https://dashboard.stripe.com/test/logs/{rid}?t={}", now());
        e.insert("request_log_url".into(), json!(log));
        e.insert("type".into(), json!(self.kind));
        let body = Resp::ok(&json!({ "error": e })).body;
        Resp::new(self.status, body, self.headers)
    }
}

enum Outcome {
    Respond(Resp),
    Drop,
}

struct Saved {
    params: Vec<(String, String)>,
    resp: Resp,
    /// When it was saved (fake clock): Stripe keeps keys at least 24 hours.
    at: i64,
}

/// Test and live mode, and each connected account, keep their own objects.
fn scope(req: &Request) -> String {
    let live = req
        .header("authorization")
        .is_some_and(|v| v.contains(FakeStripe::API_KEY_LIVE));
    let mode = if live { "live" } else { "test" };
    format!("{mode}/{}", req.header("stripe-account").unwrap_or(""))
}

fn is_live(req: &Request) -> bool {
    scope(req).starts_with("live/")
}

/// Where the fake's time comes from (Unix seconds).
type ClockFn = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Default)]
struct State {
    events: Vec<RecordedEvent>,
    faults: VecDeque<Fault>,
    /// Faults for `POST /v1/billing/meter_event_adjustments`, first in first out.
    adjustment_faults: VecDeque<Fault>,
    /// `None`: the system clock.
    clock: Option<ClockFn>,
    /// How long after receiving an event it can be cancelled (default 24 hours).
    cancel_window: Option<i64>,
    requests: usize,
    /// Cancelled (event_name, identifier) pairs, with their scope, in order received.
    adjustments: Vec<(String, String, String)>,
    /// The account's meters, oldest first.
    meters: Vec<FakeMeter>,
    /// The account's customers: id → deleted.
    customers: HashMap<String, bool>,
    /// Every GET of the account (meters, customers) answers this status instead.
    read_failure: Option<u16>,
    /// Pages of the meter list served.
    meter_pages: usize,
    /// `Stripe-Account` of every GET (meters, customers, summaries, events).
    read_accounts: Vec<Option<String>>,
    idempotency: HashMap<String, Saved>,
    /// (scope, identifier) of `events` → when received, for Stripe's duplicate
    /// check in O(1). Stripe promises the check for "at least 24 hours"; the fake
    /// forgets after exactly 24 hours (its clock), the worst case.
    identifiers: HashMap<(String, String), i64>,
    check_timestamps: bool,
    /// Chaos: each meter-event request with no queued fault gets one of these
    /// with this probability.
    random_faults: Option<(f64, Vec<Fault>)>,
    faults_injected: usize,
    /// "An event already exists with identifier" refusals.
    duplicate_refusals: usize,
    /// Time each meter-event call takes (none by default); while it runs, the
    /// call's (customer, event name) pair is busy, and a concurrent call for the
    /// same pair gets Stripe's 429 `lock_timeout`.
    latency: Option<std::time::Duration>,
    in_flight: HashSet<(String, String)>,
    pair_conflicts: usize,
    /// Asynchronous rejections (see the section at the end of this file).
    rejections: Rejections,
    /// Legacy usage records (`fake_stripe/usage_records.rs`).
    usage: usage_records::Usage,
    /// The v2 meter event stream (`fake_stripe/meter_stream.rs`).
    stream: meter_stream::StreamState,
}

impl State {
    fn now(&self) -> i64 {
        self.clock.as_ref().map_or_else(now, |f| f())
    }
}

type Shared = Arc<Mutex<State>>;
type Form = [(String, String)];

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a test asks a new meter to be (`FakeStripe::add_meter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterSpec {
    pub event_name: String,
    /// `customer_mapping.event_payload_key`.
    pub customer_key: String,
    /// `value_settings.event_payload_key`.
    pub value_key: String,
    /// `default_aggregation.formula`: `sum`, `count` or `last`.
    pub formula: String,
    /// `None`, `day` or `hour`.
    pub event_time_window: Option<String>,
    pub active: bool,
}

impl MeterSpec {
    /// An active `sum` meter of raw events with Stripe's default payload keys.
    pub fn new(event_name: &str) -> MeterSpec {
        MeterSpec {
            event_name: event_name.into(),
            customer_key: "stripe_customer_id".into(),
            value_key: "value".into(),
            formula: "sum".into(),
            event_time_window: None,
            active: true,
        }
    }
}

#[derive(Clone, Debug)]
struct FakeMeter {
    id: String,
    spec: MeterSpec,
    created: i64,
    updated: i64,
    deactivated_at: Option<i64>,
}

impl FakeMeter {
    fn json(&self) -> Value {
        let m = &self.spec;
        json!({
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": { "event_payload_key": m.customer_key, "type": "by_id" },
            "default_aggregation": { "formula": m.formula },
            "display_name": format!("{} (fake)", m.event_name),
            "event_name": m.event_name,
            "event_time_window": m.event_time_window,
            "livemode": false,
            "status": if m.active { "active" } else { "inactive" },
            "status_transitions": { "deactivated_at": self.deactivated_at },
            "updated": self.updated,
            "value_settings": { "event_payload_key": m.value_key },
        })
    }
}

/// A running fake. Clones share it; it stops when the last one is dropped.
#[derive(Clone)]
pub struct FakeStripe {
    addr: SocketAddr,
    state: Shared,
    server: Arc<Server>,
}

/// The accept loop, aborted (with every connection) when the last handle goes.
struct Server {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

/// Fakes by base URL.
type Running = Vec<(String, Weak<Server>)>;

/// Every fake running in this process, by base URL (see [`FakeStripe::find`]).
fn running() -> MutexGuard<'static, Running> {
    static RUNNING: OnceLock<Mutex<Running>> = OnceLock::new();
    RUNNING
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeStripe {
    pub const API_KEY: &'static str = "sk_test_fake_outcome_meter";
    /// The same account's live-mode key: its objects are separate from test mode's.
    pub const API_KEY_LIVE: &'static str = "sk_live_fake_outcome_meter";

    /// Binds 127.0.0.1:0 and serves from a background task.
    pub async fn start() -> FakeStripe {
        let state: Shared = Arc::new(Mutex::new(State::default()));
        let (addr, task) = crate::http::serve(handler(state.clone())).await;
        let server = Arc::new(Server {
            addr,
            state: state.clone(),
            task,
        });
        let fake = FakeStripe {
            addr,
            state,
            server,
        };
        let mut all = running();
        all.retain(|(_, s)| s.strong_count() > 0);
        all.push((fake.base_url(), Arc::downgrade(&fake.server)));
        fake
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fake running in this process at `base_url`, if any: how the tests'
    /// harness, given only the URL a test configured, sets up the account for
    /// the configuration it starts (`ensure_account`).
    pub fn find(base_url: &str) -> Option<FakeStripe> {
        let base = base_url.trim_end_matches('/');
        let server = running()
            .iter()
            .find(|(url, _)| url == base)
            .and_then(|(_, s)| s.upgrade())?;
        Some(FakeStripe {
            addr: server.addr,
            state: server.state.clone(),
            server,
        })
    }

    /// Add a meter to the account; returns its id. Several meters may share an
    /// event name (to test that the preflight calls it ambiguous).
    pub fn add_meter(&self, spec: MeterSpec) -> String {
        let mut s = lock(&self.state);
        let id = format!("mtr_test_{}", token(24));
        let now = s.now();
        let deactivated_at = (!spec.active).then_some(now);
        s.meters.push(FakeMeter {
            id: id.clone(),
            spec,
            created: now,
            updated: now,
            deactivated_at,
        });
        id
    }

    /// The meter of `event_name` is an active `sum` meter with id `meter_id` and
    /// Stripe's default payload keys (any other meter of that event name goes).
    pub fn set_meter(&self, meter_id: &str, event_name: &str) {
        let mut s = lock(&self.state);
        s.meters
            .retain(|m| m.spec.event_name != event_name && m.id != meter_id);
        let now = s.now();
        s.meters.push(FakeMeter {
            id: meter_id.into(),
            spec: MeterSpec::new(event_name),
            created: now,
            updated: now,
            deactivated_at: None,
        });
    }

    /// The id of the newest meter of `event_name`.
    pub fn meter_id(&self, event_name: &str) -> Option<String> {
        let s = lock(&self.state);
        let found = s
            .meters
            .iter()
            .rev()
            .find(|m| m.spec.event_name == event_name);
        found.map(|m| m.id.clone())
    }

    /// Change a meter as a dashboard user would (status, keys, window, formula).
    pub fn update_meter(&self, meter_id: &str, change: impl FnOnce(&mut MeterSpec)) {
        let mut s = lock(&self.state);
        let now = s.now();
        if let Some(m) = s.meters.iter_mut().find(|m| m.id == meter_id) {
            let was_active = m.spec.active;
            change(&mut m.spec);
            m.updated = now;
            if was_active && !m.spec.active {
                m.deactivated_at = Some(now);
            } else if m.spec.active {
                m.deactivated_at = None;
            }
        }
    }

    /// A customer that exists (also for asynchronous validation, see
    /// `set_customers`): its events are accepted from now on.
    pub fn add_customer(&self, id: &str) {
        let mut s = lock(&self.state);
        s.customers.insert(id.into(), false);
        if let Some(known) = s.rejections.customers.as_mut() {
            known.insert(id.to_string());
        }
        s.rejections.by_customer.remove(id);
    }

    /// Delete a customer: retrieving it then says `deleted: true`.
    pub fn delete_customer(&self, id: &str) {
        lock(&self.state).customers.insert(id.into(), true);
    }

    /// From now on every read of the account (meter list, meter, event summaries,
    /// customer) fails with `status` (`None`: answered again).
    pub fn set_read_failure(&self, status: Option<u16>) {
        lock(&self.state).read_failure = status;
    }

    /// How many reads (GETs) were made on connected `account` (`None`: the platform's own).
    pub fn reads_on(&self, account: Option<&str>) -> usize {
        lock(&self.state)
            .read_accounts
            .iter()
            .filter(|a| a.as_deref() == account)
            .count()
    }

    /// How many pages of the meter list were served.
    pub fn meter_pages(&self) -> usize {
        lock(&self.state).meter_pages
    }

    /// Set up the account for a configuration: each customer the fake has never
    /// heard of is added, and each event name without any meter gets an active
    /// `sum` meter with the default payload keys. What a test set up on purpose
    /// (a deleted customer, an inactive meter) stays as it is.
    pub fn ensure_account<'a>(
        &self,
        customers: impl IntoIterator<Item = &'a str>,
        event_names: impl IntoIterator<Item = &'a str>,
    ) {
        for c in customers {
            // The account's customer only: what a test set for asynchronous
            // validation (`set_customers`, `reject_customer`) stays as it is.
            lock(&self.state)
                .customers
                .entry(c.to_string())
                .or_insert(false);
        }
        for name in event_names {
            if self.meter_id(name).is_none() {
                self.add_meter(MeterSpec::new(name));
            }
        }
    }

    pub fn push_fault(&self, f: Fault) {
        lock(&self.state).faults.push_back(f);
    }

    /// Queue a fault for the next meter event adjustment (cancel) request.
    pub fn push_adjustment_fault(&self, f: Fault) {
        lock(&self.state).adjustment_faults.push_back(f);
    }

    /// Take time from `clock` (Unix seconds) instead of the system clock: when events are
    /// received, whether they can still be cancelled, and the timestamp window. Tests pass
    /// the service's manual clock, so both sides agree on the time.
    pub fn set_clock(&self, clock: impl Fn() -> i64 + Send + Sync + 'static) {
        lock(&self.state).clock = Some(Arc::new(clock));
    }

    /// How long after receiving an event Stripe lets it be cancelled (24 hours unless set).
    pub fn set_cancel_window(&self, window: std::time::Duration) {
        lock(&self.state).cancel_window = Some(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
    }

    pub fn events(&self) -> Vec<RecordedEvent> {
        lock(&self.state).events.clone()
    }

    pub fn requests(&self) -> usize {
        lock(&self.state).requests
    }

    /// How many meter events were accepted (without cloning them).
    pub fn event_count(&self) -> usize {
        lock(&self.state).events.len()
    }

    /// Chaos: from now on, each meter-event request that has no queued fault gets a
    /// fault drawn uniformly from `kinds` with probability `rate` (0.0 to 1.0).
    pub fn set_random_faults(&self, rate: f64, kinds: Vec<Fault>) {
        lock(&self.state).random_faults =
            (rate > 0.0 && !kinds.is_empty()).then_some((rate, kinds));
    }

    /// Make each meter-event call take `d`, and refuse concurrent calls for the
    /// same (customer, meter) with 429 `lock_timeout`, as Stripe does.
    pub fn set_latency(&self, d: std::time::Duration) {
        lock(&self.state).latency = Some(d);
    }

    /// Calls refused because another call for the same pair was in flight.
    pub fn pair_conflicts(&self) -> usize {
        lock(&self.state).pair_conflicts
    }

    /// How many faults (queued or random) were applied.
    pub fn faults_injected(&self) -> usize {
        lock(&self.state).faults_injected
    }

    /// How many requests were refused because their identifier was already accepted
    /// (a resend after a lost answer: Stripe's own protection, not a second bill).
    pub fn duplicate_refusals(&self) -> usize {
        lock(&self.state).duplicate_refusals
    }

    pub fn adjustments(&self) -> Vec<String> {
        lock(&self.state)
            .adjustments
            .iter()
            .map(|(_, _, id)| id.clone())
            .collect()
    }

    /// Enforce the 35-days-past / 5-minutes-future window against the system clock.
    pub fn set_check_timestamps(&self, on: bool) {
        lock(&self.state).check_timestamps = on;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The accept loop owns the JoinSet of connections, so this aborts them all.
        self.task.abort();
    }
}

/// Every request gets a `Request-Id`, and the `Stripe-Version` it asked for back.
fn handler(
    state: Shared,
) -> impl Fn(Request) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>
       + Clone
       + Send
       + Sync
       + 'static {
    move |req: Request| {
        let state = state.clone();
        Box::pin(async move {
            let rid = format!("req_{}", token(14));
            match route(&state, &req, &rid).await {
                Outcome::Respond(r) => {
                    let mut resp = Response::new(r.status, r.body);
                    resp = resp.header("Request-Id", rid);
                    if let Some(v) = req.header("stripe-version") {
                        resp = resp.header("Stripe-Version", v.to_string());
                    }
                    for (k, v) in r.headers {
                        resp = resp.header(k, v);
                    }
                    Reply::Respond(resp)
                }
                // Dropping the connection closes it without a reply.
                Outcome::Drop => Reply::Drop,
            }
        })
    }
}

// ------------------------------------------------------------------ Stripe semantics

fn token(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    let mut x = 0u64;
    for i in 0..n {
        if i % 10 == 0 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            x = h.finish();
        }
        out.push(char::from(ALPHABET[(x % 62) as usize]));
        x /= 62;
    }
    out
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn fault_error(status: u16) -> ApiError {
    match status {
        429 => {
            let msg = "Request rate limit exceeded. Learn more about rate limits here \
                       https://stripe.com/docs/rate-limits.";
            api(429, IRE, Some("rate_limit"), msg.into())
        }
        s if s >= 500 => api(s, "api_error", None, "An unknown error occurred".into()),
        s => api(
            s,
            IRE,
            None,
            "Simulated failure (fake Stripe fault).".into(),
        ),
    }
}

fn get<'a>(form: &'a Form, key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn required<'a>(form: &'a Form, key: &str) -> Result<&'a str, ApiError> {
    match get(form, key) {
        None => Err(missing(key)),
        Some("") => {
            let msg = format!(
                "You passed an empty string for '{key}'. We assume empty values are an attempt to \
                 unset a parameter; however '{key}' cannot be unset. You should remove '{key}' \
                 from your request or supply a non-empty value."
            );
            Err(bad(key, Some("parameter_invalid_empty"), msg))
        }
        Some(v) => Ok(v),
    }
}

fn missing(key: &str) -> ApiError {
    let msg = format!("Missing required param: {key}.");
    bad(key, Some("parameter_missing"), msg)
}

fn integer(form: &Form, key: &str) -> Result<Option<i64>, ApiError> {
    let Some(raw) = get(form, key) else {
        return Ok(None);
    };
    let msg = || format!("Invalid integer: {raw}");
    let code = Some("parameter_invalid_integer");
    raw.parse().map(Some).map_err(|_| bad(key, code, msg()))
}

fn check_params(form: &Form, allowed: &[&str], prefixes: &[&str]) -> Result<(), ApiError> {
    for (k, v) in form {
        if !allowed.contains(&k.as_str()) && !prefixes.iter().any(|p| k.starts_with(p)) {
            let msg = format!("Received unknown parameter: {k}");
            return Err(bad(k, Some("parameter_unknown"), msg));
        }
        if v.chars().count() > 100 && (k == "event_name" || k == "identifier") {
            let msg = format!("Invalid string: {v}; must be at most 100 characters");
            return Err(bad(k, Some("string_too_long"), msg));
        }
    }
    Ok(())
}

fn authenticate(req: &Request) -> Result<(), ApiError> {
    let Some(value) = req.header("authorization") else {
        let msg = "You did not provide an API key. You need to provide your API key in the \
                   Authorization header, using Bearer auth (e.g. 'Authorization: Bearer \
                   YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, \
                   or we can help at https://support.stripe.com/.";
        return Err(api(401, IRE, None, msg.into()));
    };
    let key = value.strip_prefix("Bearer ").unwrap_or(value).trim();
    if key == FakeStripe::API_KEY || key == FakeStripe::API_KEY_LIVE {
        return Ok(());
    }
    let chars: Vec<char> = key.chars().collect();
    let masked = match chars.len() {
        n if n > 12 => {
            let (head, tail) = (
                String::from_iter(&chars[..8]),
                String::from_iter(&chars[n - 4..]),
            );
            format!("{head}{}{tail}", "*".repeat(n - 12))
        }
        n => "*".repeat(n),
    };
    let msg = format!("Invalid API Key provided: {masked}");
    Err(api(401, IRE, None, msg))
}

type Handler = fn(&mut State, &Form, &Request) -> Result<Value, ApiError>;

/// Authentication, form parsing and the idempotency layer shared by the POST endpoints.
fn post(
    s: &mut State,
    req: &Request,
    rid: &str,
    handler: impl Fn(&mut State, &Form, &Request) -> Result<Value, ApiError>,
) -> Resp {
    idempotent(s, req, rid, handler).unwrap_or_else(|e| e.into_resp(rid))
}

fn idempotent(
    s: &mut State,
    req: &Request,
    rid: &str,
    handler: impl Fn(&mut State, &Form, &Request) -> Result<Value, ApiError>,
) -> Result<Resp, ApiError> {
    authenticate(req)?;
    let ctype = req.header("content-type").unwrap_or_default();
    const FORM: &str = "application/x-www-form-urlencoded";
    if !ctype.to_ascii_lowercase().starts_with(FORM) {
        let msg = format!("Invalid request: Content-Type must be {FORM}, got '{ctype}'.");
        return Err(api(400, IRE, None, msg));
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body)
        .map_err(|e| api(400, IRE, None, format!("Invalid request body: {e}")))?;
    let key = req.header("idempotency-key");
    // Keys are kept per mode and account, and for 24 hours.
    let scoped = key.map(|k| format!("{}|{k}", scope(req)));
    let now = s.now();
    if let Some(k) = &scoped {
        if s.idempotency
            .get(k)
            .is_some_and(|saved| now - saved.at > 24 * 3600)
        {
            s.idempotency.remove(k);
        }
    }
    // Stripe compares parameters, not their order; the endpoint counts too.
    let mut params = form.clone();
    params.push((" path".into(), req.path.clone()));
    params.sort();
    if let Some((key, saved)) = key.zip(scoped.as_ref().and_then(|k| s.idempotency.get(k))) {
        if saved.params != params {
            let msg = format!(
                "Keys for idempotent requests can only be used with the same parameters they were \
                 first used with. Try using a key other than '{key}' if you meant to execute a \
                 different request."
            );
            return Err(api(400, "idempotency_error", None, msg));
        }
        let mut replay = saved.resp.clone();
        replay.headers.push(("Idempotent-Replayed", "true".into()));
        return Ok(replay);
    }
    let mut resp = match handler(s, &form, req) {
        Ok(v) => Resp::ok(&v),
        Err(e) => e.into_resp(rid),
    };
    if let (Some(key), Some(scoped)) = (key, scoped) {
        resp.headers.push(("Idempotency-Key", key.into()));
        resp.headers.push(("Original-Request", rid.into()));
        // Execution began: the result is saved, a 5xx as much as a 200. A refusal on
        // validation (4xx) is not.
        if resp.status == 200 || resp.status >= 500 {
            let resp = resp.clone();
            s.idempotency.insert(
                scoped,
                Saved {
                    params,
                    resp,
                    at: now,
                },
            );
        }
    }
    Ok(resp)
}

fn create_meter_event(s: &mut State, form: &Form, req: &Request) -> Result<Value, ApiError> {
    let allowed = ["event_name", "identifier", "timestamp"];
    check_params(form, &allowed, &["payload[", "expand["])?;
    let event_name = required(form, "event_name")?;
    if !form.iter().any(|(k, _)| k.starts_with("payload[")) {
        return Err(missing("payload"));
    }
    let (customer_key, value_key) = payload_keys(s, event_name);
    let customer = required(form, &customer_key)?;
    let value = required(form, &value_key)?;
    if !value.trim().parse::<f64>().is_ok_and(f64::is_finite) {
        let msg = format!("Invalid {value_key}: '{value}' is not a number.");
        return Err(bad(&value_key, None, msg));
    }
    let identifier = match get(form, "identifier") {
        None => format!("{event_name}_{}", token(20)),
        Some(_) => required(form, "identifier")?.to_string(),
    };
    let created = s.now();
    let timestamp = integer(form, "timestamp")?.unwrap_or(created);
    if s.check_timestamps && (timestamp < created - 35 * 86_400 || timestamp > created + 300) {
        let msg = "Timestamp must be within the past 35 calendar days or up to 5 minutes in the \
                   future.";
        return Err(bad("timestamp", None, msg.into()));
    }
    let scoped = (scope(req), identifier.clone());
    if s.identifiers
        .get(&scoped)
        .is_some_and(|at| created - at < 24 * 3600)
    {
        s.duplicate_refusals += 1;
        let msg = format!("An event already exists with identifier {identifier}.");
        return Err(api(400, IRE, None, msg).header("Stripe-Should-Retry", "false".into()));
    }
    s.identifiers.insert(scoped, created);
    let meter_known = s.meters.iter().any(|m| m.spec.event_name == event_name);
    s.rejections
        .judge(event_name, customer, &identifier, created, meter_known);
    let payload: BTreeMap<String, String> = form
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("payload[")?.strip_suffix(']')?, v)))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    s.events.push(RecordedEvent {
        event_name: event_name.into(),
        customer: customer.into(),
        value: value.into(),
        payload: payload.clone(),
        identifier: identifier.clone(),
        timestamp,
        idempotency_key: req.header("idempotency-key").map(str::to_string),
        stripe_version: req.header("stripe-version").map(str::to_string),
        created,
        livemode: is_live(req),
        account: req.header("stripe-account").map(str::to_string),
    });
    Ok(json!({
        "object": "billing.meter_event",
        "created": created,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": is_live(req),
        "payload": payload,
        "timestamp": timestamp,
    }))
}

fn create_adjustment(s: &mut State, form: &Form, req: &Request) -> Result<Value, ApiError> {
    let allowed = ["event_name", "type", "cancel[identifier]"];
    check_params(form, &allowed, &["expand["])?;
    let event_name = required(form, "event_name")?;
    let kind = get(form, "type").unwrap_or("cancel");
    if kind != "cancel" {
        let msg = format!("Invalid type: must be one of cancel (got '{kind}')");
        return Err(bad("type", None, msg));
    }
    let identifier = required(form, "cancel[identifier]")?;
    // Stripe applies adjustments asynchronously, so an unknown identifier is accepted here.
    let window = s.cancel_window.unwrap_or(24 * 3600);
    let now = s.now();
    let here = scope(req);
    let received = s
        .events
        .iter()
        .find(|e| {
            e.identifier == identifier && e.event_name == event_name && event_scope(e) == here
        })
        .map(|e| e.created);
    if received.is_some_and(|at| now - at > window) {
        let msg = format!(
            "Meter events can only be cancelled within 24 hours of Stripe receiving them; the event \
             with identifier {identifier} is too old to cancel."
        );
        return Err(bad("cancel[identifier]", Some("out_of_window"), msg));
    }
    // Assumed (undocumented): a second cancel of the same event is accepted and changes
    // nothing; an event is cancelled at most once.
    s.adjustments
        .push((here, event_name.into(), identifier.into()));
    Ok(json!({
        "object": "billing.meter_event_adjustment",
        "livemode": is_live(req),
        "status": "pending",
        "event_name": event_name,
        "type": "cancel",
        "cancel": { "identifier": identifier },
    }))
}

/// The scope an event was recorded in (see [`scope`]).
fn event_scope(e: &RecordedEvent) -> String {
    let mode = if e.livemode { "live" } else { "test" };
    format!("{mode}/{}", e.account.as_deref().unwrap_or(""))
}

fn summaries(s: &State, req: &Request, meter_id: &str) -> Result<Value, ApiError> {
    let query = query(s, req)?;
    let allowed = ["customer", "start_time", "end_time", "limit"];
    let prefixes = [
        "expand[",
        "starting_after",
        "ending_before",
        "value_grouping_window",
    ];
    check_params(&query, &allowed, &prefixes)?;
    let Some(event_name) = s
        .meters
        .iter()
        .find(|m| m.id == meter_id)
        .map(|m| &m.spec.event_name)
    else {
        return Err(no_such("billing meter", meter_id));
    };
    let customer = required(&query, "customer")?;
    let mut times = [0i64; 2];
    for (slot, key) in times.iter_mut().zip(["start_time", "end_time"]) {
        *slot = integer(&query, key)?.ok_or_else(|| missing(key))?;
        if *slot % 60 != 0 {
            let msg = format!("{key} must be aligned with minute boundaries.");
            return Err(bad(key, None, msg));
        }
    }
    let [start, end] = times;
    if end <= start {
        let msg = "end_time must be after start_time.".into();
        return Err(bad("end_time", None, msg));
    }
    if get(&query, "value_grouping_window").is_some() {
        let msg = "value_grouping_window is not supported by this fake.".into();
        return Err(bad("value_grouping_window", None, msg));
    }
    let here = scope(req);
    let cancelled = |e: &RecordedEvent| {
        s.adjustments
            .contains(&(here.clone(), e.event_name.clone(), e.identifier.clone()))
    };
    let total: f64 = s
        .events
        .iter()
        .filter(|e| event_scope(e) == here)
        .filter(|e| e.event_name == *event_name && e.customer == customer && !cancelled(e))
        .filter(|e| !s.rejections.rejected.contains(&e.identifier))
        .filter(|e| start <= e.timestamp && e.timestamp < end)
        .filter_map(|e| e.value.trim().parse::<f64>().ok())
        .sum();
    let aggregated = match total {
        t if t.fract() == 0.0 && t.abs() < 9e15 => json!(t as i64),
        t => json!(t),
    };
    Ok(json!({
        "object": "list",
        "data": [{
            "id": format!("mtrusg_test_{}", token(24)),
            "object": "billing.meter_event_summary",
            "aggregated_value": aggregated,
            "end_time": end,
            "livemode": is_live(req),
            "meter": meter_id,
            "start_time": start,
        }],
        "has_more": false,
        "url": format!("/v1/billing/meters/{meter_id}/event_summaries"),
    }))
}

/// The fault a request takes: the `queued` one, else one drawn by
/// `set_random_faults`; counted.
fn take_fault(s: &mut State, queued: Option<Fault>) -> Option<Fault> {
    let drawn = match (&queued, &s.random_faults) {
        (None, Some((rate, kinds))) if fastrand::f64() < *rate => {
            kinds.get(fastrand::usize(..kinds.len())).cloned()
        }
        _ => None,
    };
    let fault = queued.or(drawn);
    s.faults_injected += usize::from(fault.is_some());
    fault
}

/// The error `fault` answers before the request is handled (after its delay,
/// if it is one), if any.
async fn early_error(fault: &Option<Fault>) -> Option<ApiError> {
    match fault {
        Some(Fault::Status(code)) => Some(fault_error(*code)),
        Some(Fault::StatusWithRetryAfter(code, secs)) => {
            Some(fault_error(*code).header("Retry-After", secs.to_string()))
        }
        Some(Fault::ShouldRetryFalse(code)) => {
            Some(fault_error(*code).header("Stripe-Should-Retry", "false".into()))
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(*d).await;
            None
        }
        _ => None,
    }
}

async fn meter_event(state: &Shared, req: &Request, rid: &str) -> Outcome {
    let fault = {
        let mut s = lock(state);
        s.requests += 1;
        let queued = s.faults.pop_front();
        take_fault(&mut s, queued)
    };
    if let Some(busy) = hold_pair(state, req, rid).await {
        return busy;
    }
    with_fault(state, req, rid, fault, create_meter_event).await
}

/// With a latency set: the call holds its (customer, meter) pair for that long; a
/// concurrent call for the same pair gets Stripe's 429 `lock_timeout`.
async fn hold_pair(state: &Shared, req: &Request, rid: &str) -> Option<Outcome> {
    let d = lock(state).latency?;
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&req.body).unwrap_or_default();
    let event_name = get(&form, "event_name").unwrap_or_default().to_string();
    let (customer_key, _) = payload_keys(&lock(state), &event_name);
    let pair = (
        get(&form, &customer_key).unwrap_or_default().to_string(),
        event_name,
    );
    if !lock(state).in_flight.insert(pair.clone()) {
        lock(state).pair_conflicts += 1;
        let msg = "This object cannot be accessed right now because another API request or \
                   Stripe process is currently accessing it.";
        let e = api(429, IRE, Some("lock_timeout"), msg.into());
        return Some(Outcome::Respond(e.into_resp(rid)));
    }
    tokio::time::sleep(d).await;
    lock(state).in_flight.remove(&pair);
    None
}

async fn adjustment(state: &Shared, req: &Request, rid: &str) -> Outcome {
    let fault = {
        let mut s = lock(state);
        let fault = s.adjustment_faults.pop_front();
        s.faults_injected += usize::from(fault.is_some());
        fault
    };
    with_fault(state, req, rid, fault, create_adjustment).await
}

/// Handle a POST with an optional injected fault.
async fn with_fault(
    state: &Shared,
    req: &Request,
    rid: &str,
    fault: Option<Fault>,
    handler: Handler,
) -> Outcome {
    if let Some(e) = early_error(&fault).await {
        return Outcome::Respond(e.into_resp(rid));
    }
    if let Some(Fault::Saved5xx(code)) = fault {
        let failed = move |_: &mut State, _: &Form, _: &Request| Err(fault_error(code));
        return Outcome::Respond(post(&mut lock(state), req, rid, failed));
    }
    let resp = post(&mut lock(state), req, rid, handler);
    match fault {
        Some(Fault::AcceptThenDrop) => Outcome::Drop,
        Some(Fault::AcceptThenStatus(code)) => Outcome::Respond(fault_error(code).into_resp(rid)),
        _ => Outcome::Respond(resp),
    }
}

async fn route(state: &Shared, req: &Request, rid: &str) -> Outcome {
    if req.method == "GET" {
        let account = req.header("stripe-account").map(str::to_string);
        lock(state).read_accounts.push(account);
    }
    if let Some(out) = usage_records::route(state, req, rid).await {
        return out;
    }
    if let Some(out) = meter_stream::route(state, req, rid).await {
        return out;
    }
    let summary_meter = req
        .path
        .strip_prefix("/v1/billing/meters/")
        .and_then(|rest| rest.strip_suffix("/event_summaries"))
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let resp = match (req.method.as_str(), req.path.as_str(), summary_meter) {
        ("POST", "/v1/billing/meter_events", _) => return meter_event(state, req, rid).await,
        ("POST", "/v1/billing/meter_event_adjustments", _) => {
            return adjustment(state, req, rid).await
        }
        ("GET", _, Some(meter_id)) => {
            let result = summaries(&lock(state), req, meter_id);
            result.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v))
        }
        ("GET", path, None) if path.starts_with(V2_EVENTS) => {
            let result = retrieve_v2_event(&mut lock(state), req);
            result.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v))
        }
        ("GET", "/v1/billing/meters", _) => {
            let result = list_meters(&mut lock(state), req);
            result.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v))
        }
        ("GET", path, _) if one_segment(path, "/v1/billing/meters/").is_some() => {
            let id = one_segment(path, "/v1/billing/meters/").unwrap_or_default();
            let result = retrieve_meter(&lock(state), req, id);
            result.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v))
        }
        ("GET", path, _) if one_segment(path, "/v1/customers/").is_some() => {
            let id = one_segment(path, "/v1/customers/").unwrap_or_default();
            let result = retrieve_customer(&lock(state), req, id);
            result.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v))
        }
        (method, path, _) => {
            let msg = format!(
                "Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs \
                 or we can help at https://support.stripe.com/."
            );
            api(404, IRE, None, msg).into_resp(rid)
        }
    };
    Outcome::Respond(resp)
}

// ------------------------------------------------------------------ asynchronous rejections
//
// Found (sources):
// - A 200 from meter events means accepted for asynchronous validation; events that fail it
//   are reported through the thin events `v1.billing.meter.error_report_triggered` (per meter;
//   `related_object` is the meter) and `v1.billing.meter.no_meter_found` (`related_object`
//   `{}`). The notification has no `data`; `GET /v2/core/events/{id}` returns the event with
//   `data.developer_message_summary`, `data.reason.error_count`, `data.reason.error_types[]`
//   (`code`, `error_count`, `sample_errors[]` of `error_message` and `request.identifier`) and
//   `data.validation_start` / `validation_end` (RFC 3339); `created` is RFC 3339 too.
//   https://docs.stripe.com/api/v2/core/events/object ,
//   https://docs.stripe.com/billing/subscriptions/usage-based/recording-usage-in-bulk
// - Error codes: `meter_event_customer_not_found`, `meter_event_no_customer_defined`,
//   `meter_event_dimension_count_too_high`, `archived_meter`, `timestamp_too_far_in_past`,
//   `timestamp_in_future`, `meter_event_value_not_found`, `meter_event_invalid_value`, and
//   `no_meter` (only for `no_meter_found`). Same page.
// - Notifications are signed like webhooks: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256
//   of "t.body" keyed with the destination's whsec_ secret>`. https://docs.stripe.com/webhooks
//
// Assumed: an event's rejection does not free its identifier (a resend with the same
// identifier gets the usual "already exists" 400); the error messages' wording; how many
// samples Stripe includes (5 per code here, `set_sample_limit`); that the validation window
// spans the rejected events' receipt times; a 404 `resource_missing` for an unknown event id;
// that a rejected event counts in no summary. Reports are published only when a test calls
// `publish_error_reports`, never on a timer.

const V2_EVENTS: &str = "/v2/core/events/";
const ERROR_REPORT: &str = "v1.billing.meter.error_report_triggered";
const NO_METER: &str = "v1.billing.meter.no_meter_found";

/// An event accepted with a 200 that Stripe's validation rejects.
#[derive(Clone, Debug)]
struct Rejected {
    kind: &'static str,
    event_name: String,
    identifier: String,
    code: String,
    message: String,
    created: i64,
}

#[derive(Default)]
struct Rejections {
    /// `Some`: only these customers exist; events for any other are rejected with
    /// `meter_event_customer_not_found`.
    customers: Option<HashSet<String>>,
    /// Events for these customers are rejected with the given code.
    by_customer: HashMap<String, String>,
    /// Events whose event name has no meter (`set_meter`) are rejected with `no_meter`.
    strict_meters: bool,
    /// Rejected, not yet reported.
    unpublished: Vec<Rejected>,
    /// Every rejected identifier: counted in no summary.
    rejected: HashSet<String>,
    /// Full v2 events by id, for `GET /v2/core/events/{id}`.
    events: HashMap<String, Value>,
    /// Thin notifications in publication order: (event id, body).
    notifications: Vec<(String, String)>,
    /// Where notifications go, and the signing secret.
    destination: Option<(String, String)>,
    sample_limit: Option<usize>,
    /// Faults for `GET /v2/core/events/{id}`, first in first out.
    faults: VecDeque<u16>,
    fetches: usize,
}

impl Rejections {
    /// Decide, when an event is accepted, whether validation will reject it.
    fn judge(
        &mut self,
        event_name: &str,
        customer: &str,
        identifier: &str,
        created: i64,
        meter_known: bool,
    ) {
        let verdict = if self.strict_meters && !meter_known {
            Some((
                NO_METER,
                "no_meter".to_string(),
                format!("No meter was found matching event_name {event_name}."),
            ))
        } else if let Some(code) = self.by_customer.get(customer) {
            Some((
                ERROR_REPORT,
                code.clone(),
                format!("Rejected by the fake for customer {customer} ({code})."),
            ))
        } else if self
            .customers
            .as_ref()
            .is_some_and(|known| !known.contains(customer))
        {
            Some((
                ERROR_REPORT,
                "meter_event_customer_not_found".to_string(),
                format!("No customer found with id {customer}."),
            ))
        } else {
            None
        };
        if let Some((kind, code, message)) = verdict {
            self.rejected.insert(identifier.to_string());
            self.unpublished.push(Rejected {
                kind,
                event_name: event_name.to_string(),
                identifier: identifier.to_string(),
                code,
                message,
                created,
            });
        }
    }
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `Stripe-Signature` for `body` at `t`, as Stripe signs event notifications.
pub fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    use hmac::Mac;
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Build the v2 events (full, and thin) for the rejections not reported yet: one
/// `error_report_triggered` per meter, one `no_meter_found` for events with no meter.
fn build_reports(s: &mut State) -> Vec<(String, String)> {
    let pending = std::mem::take(&mut s.rejections.unpublished);
    // (event type, meter id) -> its rejected events, in order of first appearance.
    type Group = ((&'static str, Option<String>), Vec<Rejected>);
    let mut groups: Vec<Group> = Vec::new();
    for r in pending {
        let meter = (r.kind == ERROR_REPORT).then(|| {
            s.meters
                .iter()
                .find(|m| m.spec.event_name == r.event_name)
                .map(|m| m.id.clone())
                .unwrap_or_else(|| format!("mtr_fake_{}", r.event_name))
        });
        let key = (r.kind, meter);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    let limit = s.rejections.sample_limit.unwrap_or(5);
    let now = s.now();
    let mut out = Vec::new();
    for ((kind, meter), rejected) in groups {
        let mut codes: Vec<(String, Vec<&Rejected>)> = Vec::new();
        for r in &rejected {
            match codes.iter_mut().find(|(c, _)| *c == r.code) {
                Some((_, v)) => v.push(r),
                None => codes.push((r.code.clone(), vec![r])),
            }
        }
        let error_types: Vec<Value> = codes
            .iter()
            .map(|(code, rs)| {
                let samples: Vec<Value> = rs
                    .iter()
                    .take(limit)
                    .map(|r| {
                        json!({
                            "error_message": r.message,
                            "request": { "identifier": r.identifier },
                        })
                    })
                    .collect();
                json!({ "code": code, "error_count": rs.len(), "sample_errors": samples })
            })
            .collect();
        let start = rejected.iter().map(|r| r.created).min().unwrap_or(now);
        let end = rejected.iter().map(|r| r.created).max().unwrap_or(now) + 1;
        let related = match &meter {
            Some(id) => json!({
                "id": id, "type": "billing.meter", "url": format!("/v1/billing/meters/{id}"),
            }),
            None => json!({}),
        };
        let id = format!("evt_test_{}", token(40));
        let n = rejected.len();
        let thin = json!({
            "id": id,
            "object": "v2.core.event",
            "type": kind,
            "created": rfc3339(now),
            "livemode": false,
            "context": null,
            "reason": null,
            "related_object": related,
        });
        let mut full = thin.clone();
        full["data"] = json!({
            "developer_message_summary": format!("There {} {n} invalid event{}", if n == 1 { "is" } else { "are" }, if n == 1 { "" } else { "s" }),
            "reason": { "error_count": n, "error_types": error_types },
            "validation_start": rfc3339(start),
            "validation_end": rfc3339(end),
        });
        s.rejections.events.insert(id.clone(), full);
        let body = thin.to_string();
        s.rejections.notifications.push((id.clone(), body.clone()));
        out.push((id, body));
    }
    out
}

fn retrieve_v2_event(s: &mut State, req: &Request) -> Result<Value, ApiError> {
    authenticate(req)?;
    s.rejections.fetches += 1;
    if let Some(status) = s.rejections.faults.pop_front() {
        s.faults_injected += 1;
        return Err(fault_error(status));
    }
    let id = req.path.strip_prefix(V2_EVENTS).unwrap_or_default();
    s.rejections.events.get(id).cloned().ok_or_else(|| {
        let msg = format!("No such event: '{id}'");
        api(404, IRE, Some("resource_missing"), msg)
    })
}

impl FakeStripe {
    /// Only these customers exist from now on: events for any other are accepted (200)
    /// and rejected later with `meter_event_customer_not_found`.
    pub fn set_customers(&self, customers: &[&str]) {
        lock(&self.state).rejections.customers =
            Some(customers.iter().map(|c| c.to_string()).collect());
    }

    /// Reject every event for `customer` from now on with `code` (after a 200).
    pub fn reject_customer(&self, customer: &str, code: &str) {
        lock(&self.state)
            .rejections
            .by_customer
            .insert(customer.into(), code.into());
    }

    /// Reject events whose event name has no meter (`set_meter`) with `no_meter`.
    pub fn set_strict_meters(&self, on: bool) {
        lock(&self.state).rejections.strict_meters = on;
    }

    /// At most this many sample errors per error code in a report (default 5).
    pub fn set_sample_limit(&self, n: usize) {
        lock(&self.state).rejections.sample_limit = Some(n);
    }

    /// Deliver notifications to `url` (the service's `…/stripe/events`), signed with `secret`.
    pub fn set_event_destination(&self, url: &str, secret: &str) {
        lock(&self.state).rejections.destination = Some((url.into(), secret.into()));
    }

    /// Queue a fault (an HTTP status) for the next `GET /v2/core/events/{id}`.
    pub fn push_v2_event_fault(&self, status: u16) {
        lock(&self.state).rejections.faults.push_back(status);
    }

    /// How many `GET /v2/core/events/{id}` requests were made.
    pub fn v2_event_fetches(&self) -> usize {
        lock(&self.state).rejections.fetches
    }

    /// Identifiers accepted and then rejected (published or not).
    pub fn rejected_identifiers(&self) -> Vec<String> {
        let s = lock(&self.state);
        let mut v: Vec<String> = s.rejections.rejected.iter().cloned().collect();
        v.sort();
        v
    }

    /// Report every rejection not reported yet: create the v2 events and deliver their
    /// thin notifications to the destination (when one is set). Returns each event id
    /// with the destination's status (0: not delivered).
    pub async fn publish_error_reports(&self) -> Vec<(String, u16)> {
        let (built, destination, t) = {
            let mut s = lock(&self.state);
            let built = build_reports(&mut s);
            (built, s.rejections.destination.clone(), s.now())
        };
        let mut out = Vec::new();
        for (id, body) in built {
            let status = match &destination {
                Some((url, secret)) => deliver(url, secret, t, &body).await,
                None => 0,
            };
            out.push((id, status));
        }
        out
    }

    /// Deliver an already published notification again (Stripe retries until a 2xx).
    pub async fn redeliver(&self, event_id: &str) -> u16 {
        let (body, destination, t) = {
            let s = lock(&self.state);
            let body = s
                .rejections
                .notifications
                .iter()
                .find(|(id, _)| id == event_id)
                .map(|(_, b)| b.clone());
            (body, s.rejections.destination.clone(), s.now())
        };
        match (body, destination) {
            (Some(body), Some((url, secret))) => deliver(&url, &secret, t, &body).await,
            _ => 0,
        }
    }

    /// The thin notification of a published event, as delivered.
    pub fn notification(&self, event_id: &str) -> Option<String> {
        lock(&self.state)
            .rejections
            .notifications
            .iter()
            .find(|(id, _)| id == event_id)
            .map(|(_, b)| b.clone())
    }
}

/// POST a signed thin notification; the answer's status (0: no answer).
async fn deliver(url: &str, secret: &str, t: i64, body: &str) -> u16 {
    let resp = reqwest::Client::new()
        .post(url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", stripe_signature(secret, t, body))
        .body(body.to_string())
        .send()
        .await;
    resp.map(|r| r.status().as_u16()).unwrap_or(0)
}

// ------------------------------------------------------------------ the account: meters, customers

/// `path` is `prefix` followed by one non-empty segment: that segment.
fn one_segment<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Stripe's answer for an unknown id.
fn no_such(what: &str, id: &str) -> ApiError {
    let msg = format!("No such {what}: '{id}'");
    ApiError {
        param: Some("id".into()),
        ..api(404, IRE, Some("resource_missing"), msg)
    }
}

/// The payload parameters of the meter of `event_name` (its newest meter, any
/// status), or Stripe's defaults when the account has none.
fn payload_keys(s: &State, event_name: &str) -> (String, String) {
    let meter = s
        .meters
        .iter()
        .rev()
        .find(|m| m.spec.event_name == event_name);
    let (c, v) = meter.map_or(("stripe_customer_id", "value"), |m| {
        (m.spec.customer_key.as_str(), m.spec.value_key.as_str())
    });
    (format!("payload[{c}]"), format!("payload[{v}]"))
}

/// A read of the account: authenticated, unless reads are set to fail.
fn read(s: &State, req: &Request) -> Result<(), ApiError> {
    authenticate(req)?;
    match s.read_failure {
        Some(status) => Err(fault_error(status)),
        None => Ok(()),
    }
}

fn query(s: &State, req: &Request) -> Result<Vec<(String, String)>, ApiError> {
    read(s, req)?;
    serde_urlencoded::from_str(&req.query)
        .map_err(|e| api(400, IRE, None, format!("Invalid query string: {e}")))
}

fn list_meters(s: &mut State, req: &Request) -> Result<Value, ApiError> {
    let q = query(s, req)?;
    let allowed = ["limit", "starting_after", "ending_before", "status"];
    check_params(&q, &allowed, &["expand["])?;
    let limit = integer(&q, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        let msg = format!("Invalid limit: {limit}; must be between 1 and 100.");
        return Err(bad("limit", Some("parameter_invalid_integer"), msg));
    }
    let status = get(&q, "status");
    if let Some(st) = status.filter(|st| !["active", "inactive"].contains(st)) {
        let msg = format!("Invalid status: must be one of active or inactive (got '{st}')");
        return Err(bad("status", None, msg));
    }
    let newest_first: Vec<&FakeMeter> = s
        .meters
        .iter()
        .rev()
        .filter(|m| status.is_none_or(|st| (st == "active") == m.spec.active))
        .collect();
    let start = match get(&q, "starting_after") {
        None => 0,
        Some(after) => match newest_first.iter().position(|m| m.id == after) {
            Some(i) => i + 1,
            None => {
                let e = no_such("billing meter", after);
                return Err(ApiError {
                    status: 400,
                    param: Some("starting_after".into()),
                    ..e
                });
            }
        },
    };
    let n = usize::try_from(limit).unwrap_or(10);
    s.meter_pages += 1;
    let page: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(n)
        .map(|m| m.json())
        .collect();
    Ok(json!({
        "object": "list",
        "data": page,
        "has_more": start + n < newest_first.len(),
        "url": "/v1/billing/meters",
    }))
}

fn retrieve_meter(s: &State, req: &Request, id: &str) -> Result<Value, ApiError> {
    read(s, req)?;
    s.meters
        .iter()
        .find(|m| m.id == id)
        .map(FakeMeter::json)
        .ok_or_else(|| no_such("billing meter", id))
}

fn retrieve_customer(s: &State, req: &Request, id: &str) -> Result<Value, ApiError> {
    read(s, req)?;
    match s.customers.get(id) {
        None => Err(no_such("customer", id)),
        Some(true) => Ok(json!({ "id": id, "object": "customer", "deleted": true })),
        Some(false) => Ok(json!({
            "id": id,
            "object": "customer",
            "created": s.now(),
            "email": null,
            "livemode": false,
            "metadata": {},
            "name": null,
        })),
    }
}
