//! Stripe's v2 meter event stream in the fake: `POST /v2/billing/meter_event_session`
//! and `POST /v2/billing/meter_event_stream` (served on the same address: tests point
//! `stripe.meter_events_api_base` at it). Accepted events join the v1 ones
//! (`FakeStripe::events`), so summaries, duplicates and asynchronous rejections are
//! the same for both.
//!
//! Found (sources):
//! - Session: no parameters, secret keys only ("Restricted keys don't currently support
//!   API v2"), `Stripe-Version` required on every `/v2` request; answers `{id, object:
//!   "v2.billing.meter_event_session", authentication_token, created, expires_at,
//!   livemode}`, times in RFC 3339; "Authentication tokens are only valid for 15
//!   minutes". https://docs.stripe.com/api/v2/billing/meter-event-stream/session/create ,
//!   https://docs.stripe.com/api-v2-overview
//! - Stream: `Authorization: Bearer <authentication_token>`, JSON `{"events": [...]}`,
//!   "Supports up to 100 events per request"; each event `event_name` (required),
//!   `payload` (required, string values), `identifier` (optional, unique "within a
//!   rolling 24 hour period"), `timestamp` (optional, RFC 3339, within the past 35 days
//!   and up to 5 minutes ahead); answers 200 `{}`; "Events are processed
//!   asynchronously, including validation". An expired token: 401 `{"error": {"type":
//!   "temporary_session_expired", "code": "billing_meter_event_session_expired"}}`.
//!   https://docs.stripe.com/api/v2/billing/meter-event-stream/create
//!
//! Assumed: a request whose shape breaks the schema (no events, over 100, a field
//! missing or of the wrong type, an unknown field) is refused whole with a 400
//! `invalid_request_error` (code `invalid_fields`); a duplicate `identifier` is dropped
//! without an error (counted in `stream_duplicates`); an event Stripe's validation
//! would reject (payload keys missing, a timestamp out of range with
//! `set_check_timestamps`, the customers and meters of the rejection rules) is
//! accepted and rejected asynchronously with the documented codes; faults
//! (`push_fault`, `set_random_faults`) apply to stream requests as to v1 meter events,
//! and a 5xx is not saved (no idempotency key is involved).

use serde_json::{json, Value};

use super::{
    api, early_error, fault_error, is_live, lock, payload_keys, rfc3339, scope, take_fault, token,
    ApiError, FakeStripe, Fault, Outcome, RecordedEvent, Rejected, Request, Resp, Shared, State,
    ERROR_REPORT, IRE,
};

pub(super) const SESSION: &str = "/v2/billing/meter_event_session";
pub(super) const STREAM: &str = "/v2/billing/meter_event_stream";
const SESSION_SECONDS: i64 = 15 * 60;
const MAX_EVENTS: usize = 100;

/// A session the fake handed out.
pub(super) struct Granted {
    /// The scope (mode, account) its events are recorded in.
    scope: String,
    expires_at: i64,
}

/// The stream's own counters and sessions.
#[derive(Default)]
pub(super) struct StreamState {
    /// Token → session.
    sessions: std::collections::HashMap<String, Granted>,
    pub(super) sessions_created: usize,
    pub(super) requests: usize,
    pub(super) duplicates: usize,
    pub(super) largest_batch: usize,
    /// Statuses the next session requests answer instead, first in first out.
    session_faults: std::collections::VecDeque<u16>,
    /// Every session request answers this status instead, while set.
    session_failure: Option<u16>,
    pub(super) session_requests: usize,
    /// How long each session request takes.
    session_delay: Option<std::time::Duration>,
}

pub(super) async fn route(state: &Shared, req: &Request, rid: &str) -> Option<Outcome> {
    if req.method != "POST" {
        return None;
    }
    match req.path.as_str() {
        SESSION => {
            let delay = {
                let mut s = lock(state);
                s.stream.session_requests += 1;
                s.stream.session_delay
            };
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let fault = {
                let mut s = lock(state);
                let queued = s.stream.session_faults.pop_front();
                queued.or(s.stream.session_failure)
            };
            if let Some(status) = fault {
                return Some(Outcome::Respond(fault_error(status).into_resp(rid)));
            }
            let resp = create_session(&mut lock(state), req);
            Some(Outcome::Respond(
                resp.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v)),
            ))
        }
        STREAM => Some(stream(state, req, rid).await),
        _ => None,
    }
}

fn invalid(msg: String) -> ApiError {
    api(400, IRE, Some("invalid_fields"), msg)
}

fn version_required(req: &Request) -> Result<(), ApiError> {
    match req.header("stripe-version") {
        Some(v) if !v.trim().is_empty() => Ok(()),
        _ => Err(invalid(
            "All API requests to the /v2 namespace must include the Stripe-Version header.".into(),
        )),
    }
}

fn create_session(s: &mut State, req: &Request) -> Result<Value, ApiError> {
    let key = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    if key.starts_with("rk_") {
        return Err(api(
            401,
            IRE,
            None,
            "Restricted keys don't currently support API v2.".into(),
        ));
    }
    super::authenticate(req)?;
    version_required(req)?;
    let body = String::from_utf8_lossy(&req.body);
    if !body.trim().is_empty() && serde_json::from_str::<Value>(&body).ok() != Some(json!({})) {
        return Err(invalid(format!(
            "This endpoint takes no parameters; got {body}"
        )));
    }
    let created = s.now();
    let token = format!("mes_{}", token(24));
    s.stream.sessions.insert(
        token.clone(),
        Granted {
            scope: scope(req),
            expires_at: created + SESSION_SECONDS,
        },
    );
    s.stream.sessions_created += 1;
    Ok(json!({
        "id": format!("mes_sess_{}", token_id(&token)),
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": rfc3339(created),
        "expires_at": rfc3339(created + SESSION_SECONDS),
        "livemode": is_live(req),
    }))
}

fn token_id(token: &str) -> String {
    token.chars().rev().take(12).collect()
}

async fn stream(state: &Shared, req: &Request, rid: &str) -> Outcome {
    let fault = {
        let mut s = lock(state);
        s.stream.requests += 1;
        let queued = s.faults.pop_front();
        take_fault(&mut s, queued)
    };
    // No idempotency key is involved: a "saved" 5xx is a plain one here.
    let early = match &fault {
        Some(Fault::Saved5xx(code)) => Some(fault_error(*code)),
        _ => early_error(&fault).await,
    };
    if let Some(e) = early {
        return Outcome::Respond(e.into_resp(rid));
    }
    let resp = match accept(&mut lock(state), req) {
        Ok(()) => Resp::ok(&json!({})),
        Err(e) => e.into_resp(rid),
    };
    match fault {
        Some(Fault::AcceptThenDrop) => Outcome::Drop,
        Some(Fault::AcceptThenStatus(code)) => Outcome::Respond(fault_error(code).into_resp(rid)),
        _ => Outcome::Respond(resp),
    }
}

/// Check a stream request as Stripe would and record its events.
fn accept(s: &mut State, req: &Request) -> Result<(), ApiError> {
    let token = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let now = s.now();
    let scope = match s.stream.sessions.get(&token) {
        Some(g) if now < g.expires_at => g.scope.clone(),
        Some(_) => {
            return Err(api(
                401,
                "temporary_session_expired",
                Some("billing_meter_event_session_expired"),
                "The temporary session token has expired.".into(),
            ))
        }
        None => {
            // A secret key is not a session token.
            return Err(api(
                401,
                IRE,
                None,
                "Invalid authentication token: the meter event stream takes the \
                 authentication_token of a meter event session."
                    .into(),
            ));
        }
    };
    version_required(req)?;
    let ctype = req.header("content-type").unwrap_or_default();
    if !ctype.to_ascii_lowercase().starts_with("application/json") {
        return Err(invalid(format!(
            "Content-Type must be application/json, got '{ctype}'."
        )));
    }
    let body: Value = serde_json::from_slice(&req.body)
        .map_err(|e| invalid(format!("Invalid JSON body: {e}")))?;
    let Some(obj) = body.as_object() else {
        return Err(invalid("The body must be a JSON object.".into()));
    };
    if let Some(k) = obj.keys().find(|k| *k != "events") {
        return Err(invalid(format!("Unknown field: {k}")));
    }
    let Some(events) = obj.get("events").and_then(Value::as_array) else {
        return Err(invalid("events is required and must be an array.".into()));
    };
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(invalid(format!(
            "events must hold 1 to {MAX_EVENTS} events; got {}.",
            events.len()
        )));
    }
    let parsed = events
        .iter()
        .enumerate()
        .map(|(i, e)| parse_event(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    s.stream.largest_batch = s.stream.largest_batch.max(parsed.len());
    let live = scope.starts_with("live/");
    let account = scope
        .split_once('/')
        .map(|(_, a)| a.to_string())
        .filter(|a| !a.is_empty());
    for ev in parsed {
        record(s, &scope, live, account.clone(), ev, req, now);
    }
    Ok(())
}

struct StreamEvent {
    event_name: String,
    payload: std::collections::BTreeMap<String, String>,
    identifier: Option<String>,
    timestamp: Option<i64>,
}

fn parse_event(i: usize, e: &Value) -> Result<StreamEvent, ApiError> {
    let Some(obj) = e.as_object() else {
        return Err(invalid(format!("events[{i}] must be an object.")));
    };
    const FIELDS: [&str; 4] = ["event_name", "payload", "identifier", "timestamp"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!("Unknown field: events[{i}].{k}")));
    }
    let text = |k: &str| -> Result<Option<String>, ApiError> {
        match obj.get(k) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() <= 100 => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(invalid(format!(
                "events[{i}].{k} must be at most 100 characters."
            ))),
            Some(_) => Err(invalid(format!("events[{i}].{k} must be a string."))),
        }
    };
    let Some(event_name) = text("event_name")? else {
        return Err(invalid(format!("events[{i}].event_name is required.")));
    };
    let identifier = text("identifier")?;
    let timestamp = match obj.get("timestamp") {
        None => None,
        Some(Value::String(t)) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    invalid(format!(
                        "events[{i}].timestamp must be an RFC 3339 date-time; got {t}."
                    ))
                })?
                .timestamp(),
        ),
        Some(_) => {
            return Err(invalid(format!(
                "events[{i}].timestamp must be an RFC 3339 string."
            )))
        }
    };
    let Some(raw) = obj.get("payload").and_then(Value::as_object) else {
        return Err(invalid(format!(
            "events[{i}].payload is required and must be an object."
        )));
    };
    let mut payload = std::collections::BTreeMap::new();
    for (k, v) in raw {
        let Some(v) = v.as_str() else {
            return Err(invalid(format!(
                "events[{i}].payload.{k} must be a string."
            )));
        };
        payload.insert(k.clone(), v.to_string());
    }
    Ok(StreamEvent {
        event_name,
        payload,
        identifier,
        timestamp,
    })
}

/// Record one accepted event, or drop it as a duplicate, or queue its
/// asynchronous rejection.
fn record(
    s: &mut State,
    scope: &str,
    live: bool,
    account: Option<String>,
    ev: StreamEvent,
    req: &Request,
    now: i64,
) {
    let identifier = ev
        .identifier
        .unwrap_or_else(|| format!("{}_{}", ev.event_name, token(20)));
    let scoped = (scope.to_string(), identifier.clone());
    if s.identifiers
        .get(&scoped)
        .is_some_and(|at| now - at < 24 * 3600)
    {
        s.stream.duplicates += 1;
        return;
    }
    s.identifiers.insert(scoped, now);
    let (customer_key, value_key) = payload_keys(s, &ev.event_name);
    let key = |k: &str| {
        k.strip_prefix("payload[")
            .and_then(|k| k.strip_suffix(']'))
            .unwrap_or(k)
            .to_string()
    };
    let customer = ev.payload.get(&key(&customer_key)).cloned();
    let value = ev.payload.get(&key(&value_key)).cloned();
    let timestamp = ev.timestamp.unwrap_or(now);
    let late = timestamp < now - 35 * 86_400;
    let ahead = timestamp > now + 300;
    let invalid_value = value
        .as_deref()
        .is_some_and(|v| !v.trim().parse::<f64>().is_ok_and(f64::is_finite));
    let early_verdict = match (&customer, &value) {
        (None, _) => Some("meter_event_no_customer_defined"),
        (_, None) => Some("meter_event_value_not_found"),
        _ if invalid_value => Some("meter_event_invalid_value"),
        _ if s.check_timestamps && late => Some("timestamp_too_far_in_past"),
        _ if s.check_timestamps && ahead => Some("timestamp_in_future"),
        _ => None,
    };
    if let Some(code) = early_verdict {
        s.rejections.rejected.insert(identifier.clone());
        s.rejections.unpublished.push(Rejected {
            kind: ERROR_REPORT,
            event_name: ev.event_name.clone(),
            identifier: identifier.clone(),
            code: code.into(),
            message: format!("Rejected by the fake's validation ({code})."),
            created: now,
        });
    } else {
        let meter_known = s.meters.iter().any(|m| m.spec.event_name == ev.event_name);
        let customer = customer.clone().unwrap_or_default();
        s.rejections
            .judge(&ev.event_name, &customer, &identifier, now, meter_known);
    }
    s.events.push(RecordedEvent {
        event_name: ev.event_name,
        customer: customer.unwrap_or_default(),
        value: value.unwrap_or_default(),
        payload: ev.payload,
        identifier,
        timestamp,
        idempotency_key: req.header("idempotency-key").map(str::to_string),
        stripe_version: req.header("stripe-version").map(str::to_string),
        created: now,
        livemode: live,
        account,
    });
}

impl FakeStripe {
    /// Meter event sessions created (`POST /v2/billing/meter_event_session`).
    pub fn stream_sessions(&self) -> usize {
        lock(&self.state).stream.sessions_created
    }

    /// Answer the next `POST /v2/billing/meter_event_session` with this status.
    pub fn push_session_fault(&self, status: u16) {
        lock(&self.state).stream.session_faults.push_back(status);
    }

    /// Answer every `POST /v2/billing/meter_event_session` with this status until
    /// set to `None`.
    pub fn set_session_failure(&self, status: Option<u16>) {
        lock(&self.state).stream.session_failure = status;
    }

    /// Each `POST /v2/billing/meter_event_session` takes this long.
    pub fn set_session_delay(&self, d: std::time::Duration) {
        lock(&self.state).stream.session_delay = Some(d);
    }

    /// Requests to `POST /v2/billing/meter_event_session`, answered or not.
    pub fn stream_session_requests(&self) -> usize {
        lock(&self.state).stream.session_requests
    }

    /// Requests to `POST /v2/billing/meter_event_stream`.
    pub fn stream_requests(&self) -> usize {
        lock(&self.state).stream.requests
    }

    /// Stream events dropped as duplicates of an identifier seen in the last 24 hours.
    pub fn stream_duplicates(&self) -> usize {
        lock(&self.state).stream.duplicates
    }

    /// The most events one accepted stream request carried.
    pub fn stream_largest_batch(&self) -> usize {
        lock(&self.state).stream.largest_batch
    }
}
