//! Legacy usage records in the fake Stripe: subscription items with billing
//! periods, `POST /v1/subscription_items/{id}/usage_records`, `GET
//! /v1/subscription_items/{id}/usage_record_summaries` and `GET
//! /v1/subscription_items/{id}`. The fake's authentication, form parsing and
//! idempotency layer (24-hour keys, saved 200s and 5xx) apply as to every POST.
//!
//! Found (sources):
//! - Create: `quantity` (integer, required), `action` `increment` (default) or `set`
//!   ("will overwrite the usage quantity at that timestamp"), `timestamp` (integer or
//!   `now`, the default) "within the current billing period [...] and must not be in
//!   the future"; records with the same timestamp add up. Answer: `usage_record`
//!   `{id (mbur_…), object, livemode, quantity, subscription_item, timestamp}`.
//!   https://docs.stripe.com/api/usage_records/create?api-version=2025-02-24.acacia
//! - Summaries: list newest first, `limit` 1 to 100 (default 10), `starting_after`;
//!   `usage_record_summary` `{id (sis_…), invoice, livemode, period {start, end},
//!   subscription_item, total_usage}`; a period holds usage "after the start date and
//!   up to, and including, the end date".
//!   https://docs.stripe.com/api/usage-record-summary/list?api-version=2025-02-24.acacia
//! - Removed in 2025-03-31.basil, with `aggregate_usage` of prices.
//!   https://docs.stripe.com/changelog/basil/2025-03-31/deprecate-legacy-usage-based-billing
//! - A timestamp at or before the period start: 400, `param: timestamp`, "Cannot create
//!   the usage record with this timestamp because timestamps must be after the
//!   subscription's last invoice period (or current period start time)."
//!   (https://github.com/authgear/authgear-server/issues/2430); an item on a meter: "Cannot
//!   create a usage record for `si_…` because it is not on the legacy metered billing
//!   system. Call /v1/billing/meter_events instead."
//!   (https://github.com/laravel/cashier-stripe/issues/1709).
//!
//! Assumed: the refusal under 2025-03-31.basil or later (a 400 naming the API version;
//! Stripe does not document it), and under no `Stripe-Version` when the account's default
//! (`set_account_api_version`, 2025-03-31.basil unless set) is that new; a negative
//! quantity is "Invalid non-negative integer"; the texts for a future timestamp or one
//! after the period end; that items exist in test mode on the platform or one connected
//! account (others get 404 `resource_missing`); prices sum usage (`aggregate_usage` is
//! only reported, the totals always sum the value at each timestamp, a `set` replacing
//! it); summaries are immediate; periods change only when a test calls
//! `start_next_period`, which bills the closed one with an invoice id.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{json, Value};

use super::{
    api, bad, check_params, get, integer, is_live, lock, no_such, query, read, required, scope,
    take_fault, token, with_fault, ApiError, FakeStripe, Fault, Form, Outcome, Request, Resp,
    Shared, State, IRE,
};

/// Requests without `Stripe-Version` use the account's default, this unless set.
const ACCOUNT_DEFAULT_VERSION: &str = "2025-03-31.basil";
const ITEMS: &str = "/v1/subscription_items/";

/// A usage record the fake accepted.
#[derive(Clone, Debug)]
pub struct RecordedUsage {
    pub id: String,
    pub subscription_item: String,
    pub quantity: i64,
    /// Unix seconds.
    pub timestamp: i64,
    /// `increment` or `set`.
    pub action: String,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    /// When the fake received it (its clock).
    pub created: i64,
    pub livemode: bool,
    pub account: Option<String>,
}

#[derive(Clone, Debug)]
struct FakePeriod {
    id: String,
    start: i64,
    end: i64,
    invoice: Option<String>,
}

impl FakePeriod {
    fn contains(&self, t: i64) -> bool {
        self.start < t && t <= self.end
    }
}

#[derive(Clone, Debug)]
struct FakeItem {
    id: String,
    /// `test/<account>`, as `scope` makes it.
    scope: String,
    /// Oldest first; the last is the current one.
    periods: Vec<FakePeriod>,
    aggregate_usage: String,
    meter: Option<String>,
    subscription: String,
    price: String,
    created: i64,
}

#[derive(Default)]
pub(super) struct Usage {
    items: Vec<FakeItem>,
    records: Vec<RecordedUsage>,
    faults: VecDeque<Fault>,
    account_version: Option<String>,
    requests: usize,
}

/// `Some` when the request is one of this section's.
pub(super) async fn route(state: &Shared, req: &Request, rid: &str) -> Option<Outcome> {
    let rest = req.path.strip_prefix(ITEMS)?;
    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
    if id.is_empty() || sub.contains('/') {
        return None;
    }
    let resp = match (req.method.as_str(), sub) {
        ("POST", "usage_records") => return Some(create(state, req, rid).await),
        ("GET", "usage_record_summaries") => summaries(&mut lock(state), req, id),
        ("GET", "") => retrieve_item(&lock(state), req, id),
        _ => return None,
    };
    Some(Outcome::Respond(
        resp.map_or_else(|e| e.into_resp(rid), |v| Resp::ok(&v)),
    ))
}

async fn create(state: &Shared, req: &Request, rid: &str) -> Outcome {
    let fault = {
        let mut s = lock(state);
        s.usage.requests += 1;
        let queued = s.usage.faults.pop_front();
        // `set_random_faults` applies here too, as to meter events.
        take_fault(&mut s, queued)
    };
    with_fault(state, req, rid, fault, create_record).await
}

/// The `Stripe-Version` a request is served with.
fn version(s: &State, req: &Request) -> String {
    req.header("stripe-version")
        .map(str::to_string)
        .or_else(|| s.usage.account_version.clone())
        .unwrap_or_else(|| ACCOUNT_DEFAULT_VERSION.into())
}

/// A date-named version before 2025-03-31 (with or without its release name).
fn has_usage_records(version: &str) -> bool {
    let date = version.split('.').next().unwrap_or_default();
    let shaped = date.len() == 10
        && date.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    shaped && date < "2025-03-31"
}

fn check_version(s: &State, req: &Request) -> Result<(), ApiError> {
    let v = version(s, req);
    if has_usage_records(&v) {
        return Ok(());
    }
    let msg = format!(
        "Usage records are not available in API version {v}: legacy usage-based billing was removed in \
         2025-03-31.basil (https://docs.stripe.com/changelog/basil/2025-03-31/deprecate-legacy-usage-based-billing). \
         Send a Stripe-Version before 2025-03-31.basil, or report usage with Billing Meters (/v1/billing/meter_events)."
    );
    Err(api(400, IRE, None, msg))
}

fn item_id(req: &Request) -> &str {
    let rest = req.path.strip_prefix(ITEMS).unwrap_or_default();
    rest.split('/').next().unwrap_or_default()
}

fn find<'a>(s: &'a State, req: &Request, id: &str) -> Result<&'a FakeItem, ApiError> {
    let here = scope(req);
    s.usage
        .items
        .iter()
        .find(|i| i.id == id && i.scope == here)
        .ok_or_else(|| no_such("subscription item", id))
}

fn create_record(s: &mut State, form: &Form, req: &Request) -> Result<Value, ApiError> {
    check_version(s, req)?;
    let id = item_id(req).to_string();
    let now = s.now();
    let (current, on_meter) = {
        let item = find(s, req, &id)?;
        let current = item.periods.last().cloned();
        (current, item.meter.is_some())
    };
    if on_meter {
        let msg = format!(
            "Cannot create a usage record for `{id}` because it is not on the legacy metered billing system. \
             Call /v1/billing/meter_events instead."
        );
        return Err(api(400, IRE, None, msg));
    }
    check_params(form, &["quantity", "action", "timestamp"], &["expand["])?;
    let raw = required(form, "quantity")?;
    let quantity: i64 = raw.trim().parse().map_err(|_| {
        let msg = format!("Invalid integer: {raw}");
        bad("quantity", Some("parameter_invalid_integer"), msg)
    })?;
    if quantity < 0 {
        return Err(bad("quantity", None, "Invalid non-negative integer".into()));
    }
    let action = get(form, "action").unwrap_or("increment");
    if !["increment", "set"].contains(&action) {
        let msg = format!("Invalid action: must be one of increment or set (got '{action}')");
        return Err(bad("action", None, msg));
    }
    let timestamp = match get(form, "timestamp") {
        None | Some("now") => now,
        Some(_) => integer(form, "timestamp")?.unwrap_or(now),
    };
    let Some(period) = current else {
        return Err(no_such("subscription item", &id));
    };
    let refuse = |msg: &str| {
        let msg = format!("Cannot create the usage record with this timestamp because {msg}");
        Err(bad("timestamp", None, msg))
    };
    if timestamp <= period.start {
        return refuse(
            "timestamps must be after the subscription's last invoice period (or current period start time).",
        );
    }
    if timestamp > now {
        return refuse("timestamps must not be in the future.");
    }
    if timestamp > period.end {
        return refuse("timestamps must be within the subscription's current period.");
    }
    let record = RecordedUsage {
        id: format!("mbur_{}", token(24)),
        subscription_item: id.clone(),
        quantity,
        timestamp,
        action: action.into(),
        idempotency_key: req.header("idempotency-key").map(str::to_string),
        stripe_version: req.header("stripe-version").map(str::to_string),
        created: now,
        livemode: is_live(req),
        account: req.header("stripe-account").map(str::to_string),
    };
    let body = json!({
        "id": record.id,
        "object": "usage_record",
        "livemode": record.livemode,
        "quantity": quantity,
        "subscription_item": id,
        "timestamp": timestamp,
    });
    s.usage.records.push(record);
    Ok(body)
}

/// The usage of `item` (in the request's scope) in `period`: at each timestamp,
/// increments add and a `set` replaces; the timestamps' values add up.
fn total(s: &State, here: &str, item: &str, period: &FakePeriod) -> i64 {
    let mut at: BTreeMap<i64, i64> = BTreeMap::new();
    let records = s.usage.records.iter().filter(|r| {
        r.subscription_item == item && record_scope(r) == here && period.contains(r.timestamp)
    });
    for r in records {
        let v = at.entry(r.timestamp).or_default();
        *v = if r.action == "set" {
            r.quantity
        } else {
            v.saturating_add(r.quantity)
        };
    }
    at.values().fold(0i64, |a, v| a.saturating_add(*v))
}

fn record_scope(r: &RecordedUsage) -> String {
    let mode = if r.livemode { "live" } else { "test" };
    format!("{mode}/{}", r.account.as_deref().unwrap_or(""))
}

fn summaries(s: &mut State, req: &Request, id: &str) -> Result<Value, ApiError> {
    let q = query(s, req)?;
    check_version(s, req)?;
    let allowed = ["limit", "starting_after", "ending_before"];
    check_params(&q, &allowed, &["expand["])?;
    let limit = integer(&q, "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        let msg = format!("Invalid limit: {limit}; must be between 1 and 100.");
        return Err(bad("limit", Some("parameter_invalid_integer"), msg));
    }
    if get(&q, "ending_before").is_some() {
        let msg = "ending_before is not supported by this fake.".into();
        return Err(bad("ending_before", None, msg));
    }
    let here = scope(req);
    let item = find(s, req, id)?;
    let newest_first: Vec<&FakePeriod> = item.periods.iter().rev().collect();
    let start = match get(&q, "starting_after") {
        None => 0,
        Some(after) => match newest_first.iter().position(|p| p.id == after) {
            Some(i) => i + 1,
            None => {
                let e = no_such("usage record summary", after);
                return Err(ApiError {
                    status: 400,
                    param: Some("starting_after".into()),
                    ..e
                });
            }
        },
    };
    let n = usize::try_from(limit).unwrap_or(10);
    let data: Vec<Value> = newest_first
        .iter()
        .skip(start)
        .take(n)
        .map(|p| {
            json!({
                "id": p.id,
                "object": "usage_record_summary",
                "invoice": p.invoice,
                "livemode": is_live(req),
                "period": { "start": p.start, "end": p.end },
                "subscription_item": id,
                "total_usage": total(s, &here, id, p),
            })
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "has_more": start + n < newest_first.len(),
        "url": format!("{ITEMS}{id}/usage_record_summaries"),
    }))
}

fn retrieve_item(s: &State, req: &Request, id: &str) -> Result<Value, ApiError> {
    read(s, req)?;
    let item = find(s, req, id)?;
    let mut recurring = json!({
        "interval": "month",
        "interval_count": 1,
        "meter": item.meter,
        "trial_period_days": null,
        "usage_type": "metered",
    });
    // 2025-03-31.basil "Removed aggregate_usage from Price endpoints".
    if has_usage_records(&version(s, req)) {
        recurring["aggregate_usage"] = json!(item.aggregate_usage);
    }
    Ok(json!({
        "id": item.id,
        "object": "subscription_item",
        "billing_thresholds": null,
        "created": item.created,
        "metadata": {},
        "price": {
            "id": item.price,
            "object": "price",
            "active": true,
            "billing_scheme": "per_unit",
            "currency": "usd",
            "livemode": is_live(req),
            "product": "prod_fake_usage",
            "recurring": recurring,
            "type": "recurring",
            "unit_amount": 100,
        },
        "subscription": item.subscription,
        "tax_rates": [],
    }))
}

impl FakeStripe {
    /// A subscription item (test mode, the platform's account) on a legacy metered
    /// price that sums usage, in its billing period `(period_start, period_end]`.
    pub fn add_subscription_item(&self, id: &str, period_start: i64, period_end: i64) {
        self.add_item(id, "test/".into(), period_start, period_end);
    }

    /// The same on connected `account` (requests must send it as `Stripe-Account`).
    pub fn add_subscription_item_on(&self, account: &str, id: &str, start: i64, end: i64) {
        self.add_item(id, format!("test/{account}"), start, end);
    }

    fn add_item(&self, id: &str, scope: String, start: i64, end: i64) {
        let mut s = lock(&self.state);
        let created = s.now();
        s.usage.items.retain(|i| !(i.id == id && i.scope == scope));
        s.usage.items.push(FakeItem {
            id: id.into(),
            scope,
            periods: vec![FakePeriod {
                id: format!("sis_{}", token(24)),
                start,
                end,
                invoice: None,
            }],
            aggregate_usage: "sum".into(),
            meter: None,
            subscription: format!("sub_{}", token(14)),
            price: format!("price_{}", token(24)),
            created,
        });
    }

    /// Close the item's current period (billed: it gets an invoice id, returned)
    /// and start the next one, up to `end`.
    pub fn start_next_period(&self, id: &str, end: i64) -> Option<String> {
        let mut s = lock(&self.state);
        let item = s.usage.items.iter_mut().find(|i| i.id == id)?;
        let last = item.periods.last_mut()?;
        let invoice = format!("in_{}", token(24));
        last.invoice = Some(invoice.clone());
        let start = last.end;
        item.periods.push(FakePeriod {
            id: format!("sis_{}", token(24)),
            start,
            end,
            invoice: None,
        });
        Some(invoice)
    }

    /// Change the item's price: its `aggregate_usage`, and the meter it is on
    /// (`Some`: not a legacy price any more; usage records are refused).
    pub fn set_subscription_item_price(
        &self,
        id: &str,
        aggregate_usage: &str,
        meter: Option<&str>,
    ) {
        let mut s = lock(&self.state);
        for item in s.usage.items.iter_mut().filter(|i| i.id == id) {
            item.aggregate_usage = aggregate_usage.into();
            item.meter = meter.map(str::to_string);
        }
    }

    /// The API version of requests without `Stripe-Version` (2025-03-31.basil unless set).
    pub fn set_account_api_version(&self, version: &str) {
        lock(&self.state).usage.account_version = Some(version.into());
    }

    /// Queue a fault for the next `POST …/usage_records`.
    pub fn push_usage_record_fault(&self, f: Fault) {
        lock(&self.state).usage.faults.push_back(f);
    }

    /// Every usage record accepted, in order received.
    pub fn usage_records(&self) -> Vec<RecordedUsage> {
        lock(&self.state).usage.records.clone()
    }

    /// `POST …/usage_records` requests received (faults and refusals included).
    pub fn usage_record_requests(&self) -> usize {
        lock(&self.state).usage.requests
    }

    /// The usage Stripe holds for the item's current period (test mode, any account
    /// the item is on), as its summary would say.
    pub fn usage_total(&self, id: &str) -> i64 {
        let s = lock(&self.state);
        let Some(item) = s.usage.items.iter().find(|i| i.id == id) else {
            return 0;
        };
        match item.periods.last() {
            Some(p) => total(&s, &item.scope, id, p),
            None => 0,
        }
    }
}
