//! Fake helpdesk REST APIs, one per vendor, over one shared core: each ticket's
//! *true life* (what really happened to it, in order), which every vendor fake
//! renders in its own API's shapes (statuses, audit/history entries, messages,
//! pagination), behind its own authentication.
//!
//! The core also plays the failures a real API has: an outage (`503`), rate
//! limiting (`429` with `Retry-After` every n-th request), and it counts requests,
//! so tests can check a client's pagination, backoff and budget.
//!
//! A test writes a ticket's life with [`FakeHelpdesk::set_life`]; the webhooks it
//! sends (or drops) are the test's business. A test that already has the exact
//! generic webhook bodies of a ticket (the chaos suite) gives them with
//! [`FakeHelpdesk::set_events`] instead: the generic fake serves them as they are.

pub mod freshdesk;
pub mod front;
pub mod generic;
pub mod gorgias;
pub mod helpscout;
pub mod hubspot;
pub mod intercom;
pub mod zendesk;
pub mod zohodesk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

use crate::http::{self, Reply};
pub use crate::http::{Request, Response};

/// The helpdesk user id of the AI agent, as every fake renders it (vendors with
/// prefixed ids render it with their prefix: see [`Vendor::ai_agent_id`]).
pub const AI_AGENT: &str = "9001";
/// A human agent's id.
pub const HUMAN_AGENT: &str = "9002";
/// The customer's (requester's) id.
pub const CUSTOMER: &str = "7001";

/// One thing that happened to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happening {
    /// Solved/closed by the AI agent (`true`) or a human agent.
    Resolved { by_ai: bool },
    /// Status set back to open by an agent.
    Reopened,
    /// The customer wrote (most helpdesks reopen the ticket: the fakes render
    /// the status change as well when the vendor does).
    CustomerReplied,
    /// Assigned to a human agent.
    HandedOff,
}

/// A happening at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub what: Happening,
}

impl Step {
    pub fn new(at: DateTime<Utc>, what: Happening) -> Step {
        Step { at, what }
    }
}

/// A ticket's life as the fakes keep it.
#[derive(Debug, Clone, Default)]
pub struct Life {
    pub created_at: Option<DateTime<Utc>>,
    pub steps: Vec<Step>,
}

impl Life {
    /// Resolved now: the last status-changing step was a resolution.
    pub fn resolved(&self) -> bool {
        self.steps
            .iter()
            .rev()
            .find(|s| s.what != Happening::HandedOff)
            .is_some_and(|s| matches!(s.what, Happening::Resolved { .. }))
    }

    /// When anything last happened.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.steps.iter().map(|s| s.at).max().or(self.created_at)
    }

    pub fn last_customer_message_at(&self) -> Option<DateTime<Utc>> {
        self.steps
            .iter()
            .filter(|s| s.what == Happening::CustomerReplied)
            .map(|s| s.at)
            .max()
    }

    /// Whether anything happened to the ticket (creation included) in `[since, until)`:
    /// what a vendor's "updated since" listing returns it for.
    pub fn changed_in(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        self.created_at
            .into_iter()
            .chain(self.steps.iter().map(|s| s.at))
            .any(|t| since <= t && t < until)
    }

    /// The steps in time order, each with its index (a stable id within the ticket).
    pub fn ordered(&self) -> Vec<(usize, Step)> {
        let mut v: Vec<(usize, Step)> = self.steps.iter().copied().enumerate().collect();
        v.sort_by_key(|(i, s)| (s.at, *i));
        v
    }
}

/// What the fakes share: lives, faults, counters.
#[derive(Debug)]
pub struct State {
    pub tickets: BTreeMap<String, Life>,
    /// Every request answers 503.
    pub outage: bool,
    /// Every n-th request answers 429 with `Retry-After: retry_after_secs`.
    pub rate_limit_every: Option<u64>,
    pub retry_after_secs: u64,
    /// Items per page for vendors that paginate.
    pub page_size: usize,
    /// The credentials the fake accepts (each vendor reads them its own way).
    pub user: String,
    pub token: String,
    /// Generic: the secret that signs answers.
    pub signing_secret: String,
    /// Requests seen (all), answered 429, refused 401/403.
    pub requests: u64,
    pub rate_limited: u64,
    pub refused: u64,
    /// `METHOD path?query` of every request, in order.
    pub log: Vec<String>,
    /// The fake's "now" for vendors that stamp answers (default: the real time).
    pub now: Option<DateTime<Utc>>,
    /// Generic only: tickets whose history is given as exact generic webhook
    /// bodies ([`FakeHelpdesk::set_events`]); served instead of a rendered life.
    pub events: BTreeMap<String, Vec<serde_json::Value>>,
}

impl Default for State {
    fn default() -> Self {
        State {
            tickets: BTreeMap::new(),
            outage: false,
            rate_limit_every: None,
            retry_after_secs: 1,
            page_size: 2,
            user: "bot@acme.example".into(),
            token: "fake-api-token-1234".into(),
            signing_secret: "generic-signing-secret-1".into(),
            requests: 0,
            rate_limited: 0,
            refused: 0,
            log: Vec::new(),
            now: None,
            events: BTreeMap::new(),
        }
    }
}

/// One vendor's API over the shared [`State`].
pub trait Vendor: Send + Sync + 'static {
    /// The provider's name in outcome-meter (`zendesk`, …).
    fn name(&self) -> &'static str;
    /// Whether the request carries the credentials in `state` as the vendor wants them.
    fn authorized(&self, req: &Request, state: &State) -> bool;
    /// The answer to an authorized request (after faults were played).
    fn handle(&self, req: &Request, state: &State) -> Response;
    /// How the vendor's API writes the AI agent's id.
    fn ai_agent_id(&self) -> String {
        AI_AGENT.into()
    }
    /// Extra `[api]` keys a client needs besides `base_url`, `user` and `token`
    /// (`("org_id", "…")`, …), as the tests write them into settings. A value
    /// starting with `/` is a path on this fake (`("token_url", "/oauth/token")`).
    fn extra_settings(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// A running fake helpdesk API.
pub struct FakeHelpdesk {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    vendor: Arc<dyn Vendor>,
    task: JoinHandle<()>,
}

impl Drop for FakeHelpdesk {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeHelpdesk {
    pub async fn start(vendor: impl Vendor) -> FakeHelpdesk {
        let state = Arc::new(Mutex::new(State::default()));
        let vendor: Arc<dyn Vendor> = Arc::new(vendor);
        let (s, v) = (state.clone(), vendor.clone());
        let (addr, task) = http::serve(move |req| {
            let (s, v) = (s.clone(), v.clone());
            async move { Reply::Respond(answer(&s, v.as_ref(), &req)) }
        })
        .await;
        FakeHelpdesk {
            addr,
            state,
            vendor,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`: the `api.base_url` (or `token_url` host) to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn vendor(&self) -> &dyn Vendor {
        self.vendor.as_ref()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set a ticket's whole life.
    pub fn set_life(&self, ticket: &str, created_at: DateTime<Utc>, steps: Vec<Step>) {
        self.state().tickets.insert(
            ticket.to_string(),
            Life {
                created_at: Some(created_at),
                steps,
            },
        );
    }

    /// Add one step to a ticket's life (created at the step's time if new).
    pub fn push(&self, ticket: &str, step: Step) {
        let mut s = self.state();
        let life = s.tickets.entry(ticket.to_string()).or_default();
        life.created_at.get_or_insert(step.at);
        life.steps.push(step);
    }

    /// Generic only: a ticket's whole history as generic webhook bodies
    /// (`event_id`, `ticket_id`, `type`, `occurred_at`, …), served as they are
    /// (those at or after `since`, in `occurred_at` order); the answer's status,
    /// `updated_at` and `last_customer_message_at` are derived from them.
    pub fn set_events(&self, ticket: &str, events: Vec<serde_json::Value>) {
        self.state().events.insert(ticket.to_string(), events);
    }

    pub fn set_outage(&self, on: bool) {
        self.state().outage = on;
    }

    /// Answer every `n`-th request with 429 and `Retry-After: retry_after_secs`.
    pub fn rate_limit_every(&self, n: u64, retry_after_secs: u64) {
        let mut s = self.state();
        s.rate_limit_every = Some(n.max(1));
        s.retry_after_secs = retry_after_secs;
    }

    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = n.max(1);
    }

    pub fn set_now(&self, now: DateTime<Utc>) {
        self.state().now = Some(now);
    }

    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    pub fn rate_limited(&self) -> u64 {
        self.state().rate_limited
    }

    pub fn log(&self) -> Vec<String> {
        self.state().log.clone()
    }

    pub fn user(&self) -> String {
        self.state().user.clone()
    }

    pub fn token(&self) -> String {
        self.state().token.clone()
    }

    pub fn signing_secret(&self) -> String {
        self.state().signing_secret.clone()
    }
}

fn answer(state: &Mutex<State>, vendor: &dyn Vendor, req: &Request) -> Response {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    s.requests += 1;
    let line = if req.query.is_empty() {
        format!("{} {}", req.method, req.path)
    } else {
        format!("{} {}?{}", req.method, req.path, req.query)
    };
    s.log.push(line);
    if s.outage {
        return Response::new(503, "{\"error\":\"service unavailable\"}".into());
    }
    if let Some(n) = s.rate_limit_every {
        if s.requests.is_multiple_of(n) {
            s.rate_limited += 1;
            return Response::new(429, "{\"error\":\"too many requests\"}".into())
                .header("Retry-After", s.retry_after_secs.to_string());
        }
    }
    if !vendor.authorized(req, &s) {
        s.refused += 1;
        return Response::new(401, "{\"error\":\"unauthorized\"}".into());
    }
    vendor.handle(req, &s)
}

impl State {
    /// The tickets changed in `[since, until)`, by last update then id: the order
    /// the vendors' incremental listings use.
    pub fn changed_tickets(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<String> {
        let mut v: Vec<(Option<DateTime<Utc>>, &String)> = self
            .tickets
            .iter()
            .filter(|(_, l)| l.changed_in(since, until))
            .map(|(id, l)| (l.updated_at(), id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id.clone()).collect()
    }
}

/// A query parameter's decoded value.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&req.query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// `Authorization: Bearer <token>`.
pub fn bearer_ok(req: &Request, token: &str) -> bool {
    req.header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token)
}

/// `Authorization: Basic base64(user:password)`.
pub fn basic_ok(req: &Request, user: &str, password: &str) -> bool {
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    req.header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|t| t == want)
}

/// A JSON answer.
pub fn json(status: u16, v: &serde_json::Value) -> Response {
    Response::new(status, v.to_string()).header("Content-Type", "application/json".into())
}

/// RFC 3339 with seconds, `Z`.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
