//! Fake Metronome HTTP server for usage ingest and usage queries; it checks what
//! Metronome checks.
//!
//! Found (sources):
//! - `POST /v1/ingest`: bearer auth; a JSON array of 1 to 100 events; each event has
//!   non-empty string `transaction_id` (at most 128 characters), `customer_id`,
//!   `event_type`, and an RFC 3339 `timestamp`; `properties` is an optional object.
//!   Only `200 Success` is documented, without a body.
//!   https://docs.metronome.com/api-reference/usage/ingest-events
//! - "Once a usage event is accepted with a given transaction ID, subsequent events
//!   within the next 34 days with the same ID are treated as duplicates and
//!   ignored"; the timestamp needs "a 4-digit year"; "Timestamps more than 24 hours
//!   in the future are rejected by the API"; after a network error or a 5xx "some of
//!   your events may have been ingested, but others may not".
//!   https://docs.metronome.com/guides/events/send-usage-events
//! - Backdating: "Historical events can be backdated up to 34 days" (ingest reference).
//! - Errors: "Every `4XX` error uses this `application/json` format: {"message":
//!   "Descriptive error text"}"; a 429 has `X-Metronome-Rate-Limit-Type: client` or
//!   `customer`. https://docs.metronome.com/api-reference/status-codes
//! - `POST /v1/usage`: body `{starting_on, ending_before, window_size (hour, day,
//!   none, any case), customer_ids?, billable_metrics?: [{id}]}`, cursor `next_page`
//!   in the query; answer `{data: [{customer_id, billable_metric_id,
//!   billable_metric_name, start_timestamp, end_timestamp, value (nullable)}],
//!   next_page (nullable)}`. https://docs.metronome.com/api-reference/usage/get-batched-usage-data
//!
//! Assumed (Metronome does not document it): an invalid event, a timestamp out of
//! bounds or a batch of the wrong size refuses the whole request with a 400 and
//! records nothing; the message texts are guesses. A repeated `transaction_id`
//! within one batch is ignored like any repeat. The dedupe window is counted from
//! the first acceptance, by the fake's clock (`set_clock`), and so are the
//! timestamp bounds. A 401 answers a missing or wrong token. Responses carry an
//! `x-request-id` (a guess at the header's name). A 5xx body is plain text. Usage
//! values: the sum of a numeric property (or the count) of the events of the
//! metric's event type whose timestamp is in the window, `null` when none
//! matched; `hour`/`day` windows need bounds on the window's boundaries (UTC);
//! `none` takes any bounds. A customer's events count under its id and every
//! ingest alias added with `add_ingest_alias`. No gzip bodies. Connections are kept alive;
//! `Fault::AcceptThenDrop` closes that request's own connection unanswered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::http::{self, Reply, Request, Response};

const DAY: i64 = 86_400;
/// Backdating and the dedupe window.
const WINDOW: i64 = 34 * DAY;
/// The furthest ahead a timestamp may be.
const AHEAD: i64 = DAY;

/// An event the fake accepted (the first of its `transaction_id`).
#[derive(Clone, Debug)]
pub struct RecordedEvent {
    pub transaction_id: String,
    pub customer_id: String,
    pub event_type: String,
    /// As sent.
    pub timestamp: String,
    /// `timestamp` as Unix milliseconds.
    pub at_ms: i64,
    pub properties: Map<String, Value>,
    /// When the fake accepted it (Unix seconds, the fake's clock).
    pub received_at: i64,
}

impl RecordedEvent {
    /// A property as a number (sent as a string, as Metronome recommends, or as a number).
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.properties.get(key)? {
            Value::String(s) => s.trim().parse().ok(),
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }
}

/// Injected failures. Each `POST /v1/ingest` takes one, first in first out.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer this status (a 429 with `X-Metronome-Rate-Limit-Type: client`). Nothing recorded.
    Status(u16),
    /// Same as `Status`, plus `Retry-After: <secs>`.
    StatusWithRetryAfter(u16, u64),
    /// Handle normally (record), then close the connection without answering.
    AcceptThenDrop,
    /// Handle normally (record), then answer this error status.
    AcceptThenStatus(u16),
    /// Record the first `n` events of the batch only, then answer this status
    /// ("some of your events may have been ingested, but others may not").
    AcceptSomeThenStatus(usize, u16),
}

/// How a fake billable metric aggregates its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Sum of this property.
    Sum(String),
    Count,
}

#[derive(Clone, Debug)]
struct Metric {
    name: String,
    event_type: String,
    aggregate: Aggregate,
}

/// Where the fake's time comes from (Unix seconds).
type ClockFn = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Default)]
struct State {
    events: Vec<RecordedEvent>,
    /// transaction_id → when first accepted (fake clock, seconds).
    accepted: HashMap<String, i64>,
    duplicates: usize,
    requests: usize,
    usage_requests: usize,
    faults: VecDeque<Fault>,
    faults_injected: usize,
    /// Drawn for an ingest request with no queued fault: (rate, kinds).
    random_faults: Option<(f64, Vec<Fault>)>,
    clock: Option<ClockFn>,
    metrics: BTreeMap<String, Metric>,
    /// ingest alias → customer id.
    aliases: HashMap<String, String>,
    usage_page_size: Option<usize>,
}

impl State {
    fn now(&self) -> i64 {
        self.clock
            .as_ref()
            .map_or_else(|| Utc::now().timestamp(), |f| f())
    }

    fn customer_of(&self, id: &str) -> String {
        self.aliases
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_string())
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct FakeMetronome {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

impl FakeMetronome {
    pub const TOKEN: &'static str = "fake_metronome_bearer_token";

    /// Binds 127.0.0.1:0 and serves from a background task.
    pub async fn start() -> FakeMetronome {
        let state: Shared = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let (addr, task) = http::serve(move |req| {
            let state = shared.clone();
            async move { route(&state, &req).await }
        })
        .await;
        FakeMetronome { addr, state, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_fault(&self, f: Fault) {
        lock(&self.state).faults.push_back(f);
    }

    /// Apply one of `kinds` to a fraction `rate` of ingest requests with no
    /// queued fault (the chaos suite).
    pub fn set_random_faults(&self, rate: f64, kinds: Vec<Fault>) {
        lock(&self.state).random_faults =
            (rate > 0.0 && !kinds.is_empty()).then_some((rate, kinds));
    }

    /// Take time from `clock` (Unix seconds) instead of the system clock: the
    /// timestamp bounds and the dedupe window. Tests pass the service's manual clock.
    pub fn set_clock(&self, clock: impl Fn() -> i64 + Send + Sync + 'static) {
        lock(&self.state).clock = Some(Arc::new(clock));
    }

    /// Define a billable metric for `POST /v1/usage`.
    pub fn set_billable_metric(
        &self,
        id: &str,
        name: &str,
        event_type: &str,
        aggregate: Aggregate,
    ) {
        let metric = Metric {
            name: name.into(),
            event_type: event_type.into(),
            aggregate,
        };
        lock(&self.state).metrics.insert(id.into(), metric);
    }

    /// Events sent with `alias` as `customer_id` count as `customer_id`'s.
    pub fn add_ingest_alias(&self, alias: &str, customer_id: &str) {
        lock(&self.state)
            .aliases
            .insert(alias.into(), customer_id.into());
    }

    /// Aggregates per page of `POST /v1/usage` (unset: all in one page).
    pub fn set_usage_page_size(&self, n: usize) {
        lock(&self.state).usage_page_size = Some(n.max(1));
    }

    /// Accepted events, in order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        lock(&self.state).events.clone()
    }

    pub fn event_count(&self) -> usize {
        lock(&self.state).events.len()
    }

    /// The sum of `property` over the accepted events of one customer (id or
    /// alias, as sent) and event type.
    pub fn sum(&self, customer_id: &str, event_type: &str, property: &str) -> f64 {
        lock(&self.state)
            .events
            .iter()
            .filter(|e| e.customer_id == customer_id && e.event_type == event_type)
            .filter_map(|e| e.number(property))
            .sum()
    }

    /// `POST /v1/ingest` requests received (faulted ones included).
    pub fn requests(&self) -> usize {
        lock(&self.state).requests
    }

    /// `POST /v1/usage` requests received.
    pub fn usage_requests(&self) -> usize {
        lock(&self.state).usage_requests
    }

    /// Events ignored because their `transaction_id` was accepted within 34 days.
    pub fn duplicates_ignored(&self) -> usize {
        lock(&self.state).duplicates
    }

    pub fn faults_injected(&self) -> usize {
        lock(&self.state).faults_injected
    }
}

impl Drop for FakeMetronome {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------ Metronome semantics

fn request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("fake-req-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn message(status: u16, text: impl Into<String>) -> Response {
    let body = json!({ "message": text.into() }).to_string();
    Response::new(status, body)
}

fn bad(text: impl Into<String>) -> Response {
    message(400, text)
}

fn fault_response(status: u16) -> Response {
    match status {
        429 => {
            message(429, "Too many requests").header("X-Metronome-Rate-Limit-Type", "client".into())
        }
        s if s >= 500 => Response::new(s, "Internal Server Error".into()),
        s => message(s, "Simulated failure (fake Metronome fault)."),
    }
}

fn authenticate(req: &Request) -> Result<(), Response> {
    let token = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(FakeMetronome::TOKEN) => Ok(()),
        Some(_) => Err(message(401, "Invalid access token")),
        None => Err(message(
            401,
            "Missing access token: send Authorization: Bearer <token>",
        )),
    }
}

/// RFC 3339 with a 4-digit year, as Unix milliseconds.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let year_digits = s.chars().take_while(char::is_ascii_digit).count();
    if year_digits != 4 {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn json_body(req: &Request) -> Result<Value, Response> {
    let ctype = req.header("content-type").unwrap_or_default();
    if !ctype.to_ascii_lowercase().starts_with("application/json") {
        return Err(bad(format!(
            "Content-Type must be application/json, got '{ctype}'"
        )));
    }
    serde_json::from_slice(&req.body).map_err(|e| bad(format!("Invalid JSON body: {e}")))
}

fn text<'a>(ev: &'a Map<String, Value>, key: &str, i: usize) -> Result<&'a str, Response> {
    match ev.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(bad(format!("body[{i}].{key} must not be empty"))),
        Some(_) => Err(bad(format!("body[{i}].{key} must be a string"))),
        None => Err(bad(format!("body[{i}].{key} is required"))),
    }
}

/// Check one event; the event as recorded (without `received_at`).
fn check_event(v: &Value, i: usize, now: i64) -> Result<RecordedEvent, Response> {
    let Some(ev) = v.as_object() else {
        return Err(bad(format!("body[{i}] must be an object")));
    };
    let transaction_id = text(ev, "transaction_id", i)?;
    if transaction_id.chars().count() > 128 {
        return Err(bad(format!(
            "body[{i}].transaction_id must be at most 128 characters"
        )));
    }
    let customer_id = text(ev, "customer_id", i)?;
    let event_type = text(ev, "event_type", i)?;
    let timestamp = text(ev, "timestamp", i)?;
    let Some(at_ms) = rfc3339_ms(timestamp) else {
        return Err(bad(format!(
            "body[{i}].timestamp must be an RFC 3339 timestamp with a 4-digit year, got '{timestamp}'"
        )));
    };
    if at_ms < (now - WINDOW) * 1000 {
        return Err(bad(format!(
            "body[{i}].timestamp {timestamp} is more than 34 days in the past"
        )));
    }
    if at_ms > (now + AHEAD) * 1000 {
        return Err(bad(format!(
            "body[{i}].timestamp {timestamp} is more than 24 hours in the future"
        )));
    }
    let properties = match ev.get("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p.clone(),
        Some(_) => return Err(bad(format!("body[{i}].properties must be an object"))),
    };
    Ok(RecordedEvent {
        transaction_id: transaction_id.into(),
        customer_id: customer_id.into(),
        event_type: event_type.into(),
        timestamp: timestamp.into(),
        at_ms,
        properties,
        received_at: now,
    })
}

/// Check the whole batch, then record the first `limit` events of it (all: `None`).
fn ingest(s: &mut State, req: &Request, limit: Option<usize>) -> Response {
    if let Err(r) = authenticate(req) {
        return r;
    }
    let body = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(items) = body.as_array() else {
        return bad("The request body must be a JSON array of usage events");
    };
    if items.is_empty() || items.len() > 100 {
        return bad(format!(
            "The request body must hold between 1 and 100 usage events, got {}",
            items.len()
        ));
    }
    let now = s.now();
    let mut checked = Vec::with_capacity(items.len());
    for (i, v) in items.iter().enumerate() {
        match check_event(v, i, now) {
            Ok(ev) => checked.push(ev),
            Err(r) => return r,
        }
    }
    for ev in checked.into_iter().take(limit.unwrap_or(usize::MAX)) {
        let fresh = s
            .accepted
            .get(&ev.transaction_id)
            .is_none_or(|&at| now - at >= WINDOW);
        if fresh {
            s.accepted.insert(ev.transaction_id.clone(), now);
            s.events.push(ev);
        } else {
            s.duplicates += 1;
        }
    }
    Response::new(200, String::new())
}

async fn ingest_with_fault(state: &Shared, req: &Request) -> Reply {
    let fault = {
        let mut s = lock(state);
        s.requests += 1;
        let queued = s.faults.pop_front();
        let drawn = match (&queued, &s.random_faults) {
            (None, Some((rate, kinds))) if fastrand::f64() < *rate => {
                kinds.get(fastrand::usize(..kinds.len())).cloned()
            }
            _ => None,
        };
        let f = queued.or(drawn);
        s.faults_injected += usize::from(f.is_some());
        f
    };
    match fault {
        Some(Fault::Status(code)) => Reply::Respond(fault_response(code)),
        Some(Fault::StatusWithRetryAfter(code, secs)) => {
            Reply::Respond(fault_response(code).header("Retry-After", secs.to_string()))
        }
        Some(Fault::AcceptThenDrop) => {
            ingest(&mut lock(state), req, None);
            Reply::Drop
        }
        Some(Fault::AcceptThenStatus(code)) => {
            let r = ingest(&mut lock(state), req, None);
            Reply::Respond(if r.status == 200 {
                fault_response(code)
            } else {
                r
            })
        }
        Some(Fault::AcceptSomeThenStatus(n, code)) => {
            let r = ingest(&mut lock(state), req, Some(n));
            Reply::Respond(if r.status == 200 {
                fault_response(code)
            } else {
                r
            })
        }
        None => Reply::Respond(ingest(&mut lock(state), req, None)),
    }
}

fn window_seconds(v: Option<&Value>) -> Result<Option<i64>, Response> {
    match v.and_then(Value::as_str).unwrap_or_default() {
        "hour" | "HOUR" | "Hour" => Ok(Some(3600)),
        "day" | "DAY" | "Day" => Ok(Some(DAY)),
        "none" | "NONE" | "None" => Ok(None),
        raw => Err(bad(format!(
            "window_size must be one of hour, day, none, got '{raw}'"
        ))),
    }
}

fn ids(body: &Value, key: &str, inner: Option<&str>) -> Result<Option<Vec<String>>, Response> {
    let Some(v) = body.get(key) else {
        return Ok(None);
    };
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("{key} must be an array")))?;
    let mut out = Vec::new();
    for item in list {
        let id = match inner {
            Some(field) => item.get(field),
            None => Some(item),
        };
        match id.and_then(Value::as_str) {
            Some(s) if !s.is_empty() => out.push(s.to_string()),
            _ => return Err(bad(format!("{key} holds an invalid entry"))),
        }
    }
    Ok(Some(out))
}

fn iso(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn usage(s: &mut State, req: &Request) -> Response {
    s.usage_requests += 1;
    if let Err(r) = authenticate(req) {
        return r;
    }
    let body = match json_body(req) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut bounds = [0i64; 2];
    for (slot, key) in bounds.iter_mut().zip(["starting_on", "ending_before"]) {
        match body.get(key).and_then(Value::as_str).and_then(rfc3339_ms) {
            Some(ms) => *slot = ms.div_euclid(1000),
            None => return bad(format!("{key} is required, as an RFC 3339 date-time")),
        }
    }
    let [start, end] = bounds;
    if end <= start {
        return bad("ending_before must be after starting_on");
    }
    let window = match window_seconds(body.get("window_size")) {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Some(w) = window {
        if start % w != 0 || end % w != 0 {
            return bad("starting_on and ending_before must be on the window's boundaries");
        }
    }
    let (customers, metric_ids) = match (
        ids(&body, "customer_ids", None),
        ids(&body, "billable_metrics", Some("id")),
    ) {
        (Ok(c), Ok(m)) => (c, m),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let metric_ids = metric_ids.unwrap_or_else(|| s.metrics.keys().cloned().collect());
    for id in &metric_ids {
        if !s.metrics.contains_key(id) {
            return bad(format!("Billable metric {id} not found"));
        }
    }
    let customers = customers.unwrap_or_else(|| {
        let mut all: Vec<String> = s
            .events
            .iter()
            .map(|e| s.customer_of(&e.customer_id))
            .collect();
        all.sort();
        all.dedup();
        all
    });
    let step = window.unwrap_or(end - start);
    let mut data = Vec::new();
    for customer in &customers {
        for id in &metric_ids {
            let Some(metric) = s.metrics.get(id) else {
                continue;
            };
            let mut from = start;
            while from < end {
                let to = (from + step).min(end);
                let matched: Vec<&RecordedEvent> = s
                    .events
                    .iter()
                    .filter(|e| s.customer_of(&e.customer_id) == *customer)
                    .filter(|e| e.event_type == metric.event_type)
                    .filter(|e| from * 1000 <= e.at_ms && e.at_ms < to * 1000)
                    .collect();
                let value = match (&metric.aggregate, matched.is_empty()) {
                    (_, true) => Value::Null,
                    (Aggregate::Count, false) => json!(matched.len()),
                    (Aggregate::Sum(p), false) => {
                        json!(matched.iter().filter_map(|e| e.number(p)).sum::<f64>())
                    }
                };
                data.push(json!({
                    "customer_id": customer,
                    "billable_metric_id": id,
                    "billable_metric_name": metric.name,
                    "start_timestamp": iso(from),
                    "end_timestamp": iso(to),
                    "value": value,
                }));
                from = to;
            }
        }
    }
    let query: Vec<(String, String)> = serde_urlencoded::from_str(&req.query).unwrap_or_default();
    let offset = match query.iter().find(|(k, _)| k == "next_page") {
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) if n <= data.len() => n,
            _ => return bad(format!("Invalid next_page cursor '{v}'")),
        },
        None => 0,
    };
    let size = s.usage_page_size.unwrap_or(usize::MAX);
    let page: Vec<Value> = data.iter().skip(offset).take(size).cloned().collect();
    let next = offset.saturating_add(size);
    let next_page = (next < data.len()).then(|| next.to_string());
    Response::new(
        200,
        json!({ "data": page, "next_page": next_page }).to_string(),
    )
}

async fn route(state: &Shared, req: &Request) -> Reply {
    let rid = request_id();
    let reply = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/ingest") => ingest_with_fault(state, req).await,
        ("POST", "/v1/usage") => Reply::Respond(usage(&mut lock(state), req)),
        (method, path) => Reply::Respond(message(404, format!("Not found: {method} {path}"))),
    };
    match reply {
        Reply::Respond(r) => Reply::Respond(r.header("x-request-id", rid)),
        Reply::Drop => Reply::Drop,
    }
}
