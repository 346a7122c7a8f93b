//! The Stripe preflight: does the account hold what the configuration bills to?
//!
//! [`verdict`] is pure: from what the configuration needs ([`Needs`]: each
//! tenant's customer and the event names its contract can bill on, and the
//! optional `[stripe.meter_ids]` / `[stripe.meter_aggregations]` overrides), the
//! account's meters and the customers' states, it decides, per event name, which
//! meter events go to and what is wrong with it, and per tenant whether its
//! customer can be billed. [`check`] fetches what it needs and calls it;
//! `outcome-meter check --stripe` prints the result, and `serve` holds the
//! outcomes of whatever fails it (see [`super::gate`]).

use super::client::{StripeClient, StripeError};
use super::meters::{CustomerState, Meter};
use crate::settings::{MeterAggregation, Settings};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// What the configuration needs from the Stripe account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub tenants: Vec<TenantNeeds>,
    /// `[stripe.meter_ids]`: the meter to use for an event name (optional).
    pub meter_ids: BTreeMap<String, String>,
    /// `[stripe.meter_aggregations]`: what the operator expects a meter to do
    /// (optional; any difference with Stripe is a problem).
    pub aggregations: BTreeMap<String, MeterAggregation>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantNeeds {
    pub tenant: String,
    pub customer: String,
    /// The contract's meter and every category's that is not declined.
    pub event_names: BTreeSet<String>,
}

impl Needs {
    /// What every tenant needs (one Stripe account).
    pub fn from_settings(s: &Settings) -> Needs {
        Self::of(s, |_| true)
    }

    /// What the tenants billing on `account` need from it (Stripe Connect:
    /// `tenants[].stripe_account`; `None`: the platform's own account).
    pub fn for_account(s: &Settings, account: Option<&str>) -> Needs {
        Self::of(s, |t| t.stripe_account.as_deref() == account)
    }

    fn of(s: &Settings, keep: impl Fn(&crate::settings::TenantSettings) -> bool) -> Needs {
        let tenants = s
            .tenants
            .iter()
            .filter(|t| keep(t))
            .map(|t| TenantNeeds {
                tenant: t.id.clone(),
                customer: t.stripe_customer_id.clone(),
                event_names: s.contract_for(t).event_names(),
            })
            .collect();
        Needs {
            tenants,
            meter_ids: s.stripe.meter_ids.clone(),
            aggregations: s.stripe.meter_aggregations.clone(),
        }
    }

    /// Every event name some tenant bills on, with the tenants that do.
    fn event_names(&self) -> BTreeMap<&str, Vec<String>> {
        let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for t in &self.tenants {
            for n in &t.event_names {
                names.entry(n).or_default().push(t.tenant.clone());
            }
        }
        names
    }

    /// Every configured customer, once.
    pub fn customers(&self) -> BTreeSet<&str> {
        self.tenants.iter().map(|t| t.customer.as_str()).collect()
    }
}

/// Where a meter event goes and how it is shaped, as Stripe's meter says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterInfo {
    pub id: String,
    pub aggregation: MeterAggregation,
    /// `customer_mapping.event_payload_key`.
    pub customer_key: String,
    /// `value_settings.event_payload_key`.
    pub value_key: String,
}

impl MeterInfo {
    /// Stripe's default payload keys (`stripe_customer_id`, `value`), no meter id:
    /// what is used without a preflight (dry-run).
    pub fn defaults(aggregation: MeterAggregation) -> MeterInfo {
        MeterInfo {
            id: String::new(),
            aggregation,
            customer_key: super::client::DEFAULT_CUSTOMER_KEY.into(),
            value_key: super::client::DEFAULT_VALUE_KEY.into(),
        }
    }
}

/// What is wrong with the meter of an event name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MeterProblem {
    /// No meter in the account has this event name.
    Missing,
    /// Several active meters have it, and `[stripe.meter_ids]` names none of them.
    Ambiguous { ids: Vec<String> },
    /// The meter accepts no events.
    Inactive,
    /// Pre-aggregated (`day`/`hour`): only the latest event of each window counts.
    TimeWindow { window: String },
    /// An aggregation formula this program does not know.
    UnknownFormula { formula: String },
    /// A customer mapping other than `by_id` (Stripe customer ids are what we send).
    NotById { mapping: String },
    /// `[stripe.meter_ids]` names a meter the account does not have.
    OverrideNotFound { id: String },
    /// `[stripe.meter_ids]` names a meter of another event name.
    OverrideOtherEvent { id: String, event_name: String },
    /// `[stripe.meter_aggregations]` differs from the meter's formula.
    AggregationDiffers {
        configured: MeterAggregation,
        stripe: String,
    },
}

impl MeterProblem {
    /// A short stable label (metrics, JSON).
    pub fn reason(&self) -> &'static str {
        match self {
            MeterProblem::Missing => "meter_missing",
            MeterProblem::Ambiguous { .. } => "meter_ambiguous",
            MeterProblem::Inactive => "meter_inactive",
            MeterProblem::TimeWindow { .. } => "meter_time_window",
            MeterProblem::UnknownFormula { .. } => "meter_formula",
            MeterProblem::NotById { .. } => "meter_mapping",
            MeterProblem::OverrideNotFound { .. } | MeterProblem::OverrideOtherEvent { .. } => {
                "meter_override"
            }
            MeterProblem::AggregationDiffers { .. } => "meter_aggregation",
        }
    }

    /// In words, for an operator.
    pub fn describe(&self, event_name: &str, meter: Option<&Meter>) -> String {
        let id = meter.map_or("?", |m| m.id.as_str());
        match self {
            MeterProblem::Missing => format!(
                "no meter in the Stripe account has event_name `{event_name}`: create one, or correct the contract's event_name"
            ),
            MeterProblem::Ambiguous { ids } => format!(
                "{} active meters have event_name `{event_name}` ({}): name the one to use in [stripe.meter_ids]",
                ids.len(),
                ids.join(", ")
            ),
            MeterProblem::Inactive => format!(
                "meter {id} is inactive: Stripe accepts no events for it; reactivate it, or name another in [stripe.meter_ids]"
            ),
            MeterProblem::TimeWindow { window } => format!(
                "meter {id} pre-aggregates by {window} (event_time_window = {window}): Stripe keeps only the latest event of each {window}, so outcomes sent one by one would be billed low; use a meter without an event time window"
            ),
            MeterProblem::UnknownFormula { formula } => format!(
                "meter {id} aggregates by `{formula}`, which outcome-meter does not know (sum, count or last)"
            ),
            MeterProblem::NotById { mapping } => format!(
                "meter {id} maps customers `{mapping}`; outcome-meter sends Stripe customer ids (by_id)"
            ),
            MeterProblem::OverrideNotFound { id } => format!(
                "[stripe.meter_ids] names meter {id} for `{event_name}`, and the Stripe account has no such meter"
            ),
            MeterProblem::OverrideOtherEvent { id, event_name: other } => format!(
                "[stripe.meter_ids] names meter {id} for `{event_name}`, but that meter's event_name is `{other}`"
            ),
            MeterProblem::AggregationDiffers { configured, stripe } => format!(
                "[stripe.meter_aggregations] says `{configured}` for `{event_name}`, but meter {id} aggregates by `{stripe}` in Stripe: correct or remove the override"
            ),
        }
    }
}

/// The verdict on one event name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeterVerdict {
    pub event_name: String,
    /// The tenants whose contract bills on it.
    pub tenants: Vec<String>,
    /// The meter its events go to (also when it has a problem), if one was found.
    pub meter: Option<Meter>,
    pub problems: Vec<MeterProblem>,
}

impl MeterVerdict {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.meter.is_some()
    }

    /// Where events go and their shape; `Err` with the first problem.
    pub fn info(&self) -> Result<MeterInfo, Refusal> {
        let first = self.problems.first();
        match (&self.meter, first) {
            (Some(m), None) => match parse_formula(&m.default_aggregation.formula) {
                Some(aggregation) => Ok(MeterInfo {
                    id: m.id.clone(),
                    aggregation,
                    customer_key: m.customer_mapping.event_payload_key.clone(),
                    value_key: m.value_settings.event_payload_key.clone(),
                }),
                None => Err(self.refusal(&MeterProblem::UnknownFormula {
                    formula: m.default_aggregation.formula.clone(),
                })),
            },
            (_, Some(p)) => Err(self.refusal(p)),
            (None, None) => Err(self.refusal(&MeterProblem::Missing)),
        }
    }

    fn refusal(&self, p: &MeterProblem) -> Refusal {
        Refusal {
            reason: p.reason(),
            text: format!(
                "meter `{}`: {}",
                self.event_name,
                p.describe(&self.event_name, self.meter.as_ref())
            ),
        }
    }

    /// The meter's id when one was found (reconcile reads its summaries even
    /// when it has a problem).
    pub fn meter_id(&self) -> Option<&str> {
        self.meter.as_ref().map(|m| m.id.as_str())
    }
}

/// Why something cannot be billed now: a stable label and the words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub reason: &'static str,
    pub text: String,
}

/// The verdict on one tenant: its customer, and whether all its meters are ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantVerdict {
    pub tenant: String,
    pub customer: String,
    /// `None`: not checked.
    pub customer_state: Option<CustomerState>,
    /// Its event names whose meter has a problem.
    pub meters_with_problems: Vec<String>,
}

impl TenantVerdict {
    pub fn is_ok(&self) -> bool {
        self.customer_state == Some(CustomerState::Exists) && self.meters_with_problems.is_empty()
    }
}

/// Why a customer cannot be billed; `None` when it exists.
pub fn customer_refusal(customer: &str, state: Option<CustomerState>) -> Option<Refusal> {
    let (reason, text) = match state {
        Some(CustomerState::Exists) => return None,
        Some(CustomerState::Deleted) => (
            "customer_deleted",
            format!("Stripe customer {customer} is deleted"),
        ),
        Some(CustomerState::Missing) => (
            "customer_missing",
            format!(
                "Stripe customer {customer} does not exist in this account (test and live keys see different customers)"
            ),
        ),
        None => (
            "customer_unchecked",
            format!("Stripe customer {customer} has not been checked yet"),
        ),
    };
    Some(Refusal { reason, text })
}

/// The whole preflight.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How many meters the account holds (every status).
    pub meters_in_account: usize,
    /// One per event name some tenant bills on.
    pub meters: Vec<MeterVerdict>,
    pub tenants: Vec<TenantVerdict>,
    /// Every customer checked (configured ones and any other the caller asked for).
    pub customers: BTreeMap<String, CustomerState>,
    #[serde(skip)]
    account: Vec<Meter>,
    #[serde(skip)]
    meter_ids: BTreeMap<String, String>,
    #[serde(skip)]
    aggregations: BTreeMap<String, MeterAggregation>,
}

fn parse_formula(f: &str) -> Option<MeterAggregation> {
    match f {
        "sum" => Some(MeterAggregation::Sum),
        "count" => Some(MeterAggregation::Count),
        "last" => Some(MeterAggregation::Last),
        _ => None,
    }
}

/// The meter `event_name`'s events go to, and what is wrong with it (pure).
fn judge(
    event_name: &str,
    account: &[Meter],
    meter_ids: &BTreeMap<String, String>,
    aggregations: &BTreeMap<String, MeterAggregation>,
) -> (Option<Meter>, Vec<MeterProblem>) {
    let chosen = match meter_ids.get(event_name) {
        Some(id) => match account.iter().find(|m| &m.id == id) {
            None => {
                return (
                    None,
                    vec![MeterProblem::OverrideNotFound { id: id.clone() }],
                )
            }
            Some(m) if m.event_name != event_name => {
                let p = MeterProblem::OverrideOtherEvent {
                    id: id.clone(),
                    event_name: m.event_name.clone(),
                };
                return (Some(m.clone()), vec![p]);
            }
            Some(m) => m,
        },
        None => {
            let named: Vec<&Meter> = account
                .iter()
                .filter(|m| m.event_name == event_name)
                .collect();
            let active: Vec<&Meter> = named.iter().copied().filter(|m| m.is_active()).collect();
            match (active.as_slice(), named.first()) {
                ([one], _) => *one,
                ([], Some(inactive)) => *inactive,
                ([], None) => return (None, vec![MeterProblem::Missing]),
                (several, _) => {
                    let ids = several.iter().map(|m| m.id.clone()).collect();
                    return (None, vec![MeterProblem::Ambiguous { ids }]);
                }
            }
        }
    };
    let mut problems = Vec::new();
    if !chosen.is_active() {
        problems.push(MeterProblem::Inactive);
    }
    if let Some(window) = &chosen.event_time_window {
        problems.push(MeterProblem::TimeWindow {
            window: window.clone(),
        });
    }
    if chosen.customer_mapping.kind != "by_id" {
        problems.push(MeterProblem::NotById {
            mapping: chosen.customer_mapping.kind.clone(),
        });
    }
    let formula = &chosen.default_aggregation.formula;
    match (parse_formula(formula), aggregations.get(event_name)) {
        (None, _) => problems.push(MeterProblem::UnknownFormula {
            formula: formula.clone(),
        }),
        (Some(stripe), Some(configured)) if stripe != *configured => {
            problems.push(MeterProblem::AggregationDiffers {
                configured: *configured,
                stripe: formula.clone(),
            })
        }
        _ => {}
    }
    (Some(chosen.clone()), problems)
}

/// The preflight's verdict (pure): every event name some tenant bills on
/// against the account's meters, every tenant's customer against `customers`
/// (a customer absent from it was not checked: a problem).
pub fn verdict(
    needs: &Needs,
    account: Vec<Meter>,
    customers: BTreeMap<String, CustomerState>,
) -> Report {
    let meters: Vec<MeterVerdict> = needs
        .event_names()
        .into_iter()
        .map(|(name, tenants)| {
            let (meter, problems) = judge(name, &account, &needs.meter_ids, &needs.aggregations);
            MeterVerdict {
                event_name: name.to_string(),
                tenants,
                meter,
                problems,
            }
        })
        .collect();
    let failing: BTreeSet<&str> = meters
        .iter()
        .filter(|v| !v.is_ok())
        .map(|v| v.event_name.as_str())
        .collect();
    let tenants = needs
        .tenants
        .iter()
        .map(|t| TenantVerdict {
            tenant: t.tenant.clone(),
            customer: t.customer.clone(),
            customer_state: customers.get(&t.customer).copied(),
            meters_with_problems: t
                .event_names
                .iter()
                .filter(|n| failing.contains(n.as_str()))
                .cloned()
                .collect(),
        })
        .collect();
    Report {
        meters_in_account: account.len(),
        meters,
        tenants,
        customers,
        account,
        meter_ids: needs.meter_ids.clone(),
        aggregations: needs.aggregations.clone(),
    }
}

impl Report {
    /// How many verdicts are problems (meters, then tenants whose customer fails).
    pub fn problem_count(&self) -> usize {
        let meters = self.meters.iter().filter(|v| !v.is_ok()).count();
        let customers = self
            .tenants
            .iter()
            .filter(|t| customer_refusal(&t.customer, t.customer_state).is_some())
            .count();
        meters + customers
    }

    pub fn is_ok(&self) -> bool {
        self.problem_count() == 0
    }

    /// How many problems of each kind (`meter_missing`, `customer_deleted`, …):
    /// the first problem of each failing meter, and each failing customer.
    pub fn problem_reasons(&self) -> BTreeMap<&'static str, i64> {
        let mut n: BTreeMap<&'static str, i64> = BTreeMap::new();
        let meters = self.meters.iter().filter_map(|v| v.info().err());
        let customers = self
            .tenants
            .iter()
            .filter_map(|t| customer_refusal(&t.customer, t.customer_state));
        for r in meters.chain(customers) {
            *n.entry(r.reason).or_default() += 1;
        }
        n
    }

    /// Where the events of `event_name` go; judged against the account's meters
    /// also when no configured contract names it (an outcome of an earlier contract).
    pub fn meter(&self, event_name: &str) -> Result<MeterInfo, Refusal> {
        match self.meters.iter().find(|v| v.event_name == event_name) {
            Some(v) => v.info(),
            None => {
                let (meter, problems) = judge(
                    event_name,
                    &self.account,
                    &self.meter_ids,
                    &self.aggregations,
                );
                MeterVerdict {
                    event_name: event_name.to_string(),
                    tenants: Vec::new(),
                    meter,
                    problems,
                }
                .info()
            }
        }
    }

    /// `Err` when `customer` cannot be billed (or was not checked).
    pub fn customer(&self, customer: &str) -> Result<(), Refusal> {
        match customer_refusal(customer, self.customers.get(customer).copied()) {
            None => Ok(()),
            Some(r) => Err(r),
        }
    }

    /// The meter id of every event name some tenant bills on, where a meter was
    /// found; `[stripe.meter_ids]` wins. For `reconcile`.
    pub fn meter_ids(&self) -> BTreeMap<String, String> {
        let mut ids: BTreeMap<String, String> = self
            .meters
            .iter()
            .filter_map(|v| Some((v.event_name.clone(), v.meter_id()?.to_string())))
            .collect();
        ids.extend(self.meter_ids.clone());
        ids
    }

    /// The meter of any event name the account has exactly one (active) meter for:
    /// for reconciling outcomes of an event name no contract names any more.
    pub fn account_meter_id(&self, event_name: &str) -> Option<String> {
        let (meter, _) = judge(
            event_name,
            &self.account,
            &self.meter_ids,
            &self.aggregations,
        );
        meter.map(|m| m.id)
    }

    /// One verdict line per meter and per tenant, then the count of problems.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Stripe preflight: {} meter(s) in the account; {} event name(s) and {} tenant(s) checked",
            self.meters_in_account,
            self.meters.len(),
            self.tenants.len()
        );
        for v in &self.meters {
            let tenants = v.tenants.join(", ");
            match (v.info(), &v.meter) {
                (Ok(i), _) => {
                    let _ = writeln!(
                        s,
                        "ok       meter `{}`: {} ({}, payload[{}], payload[{}]); tenants: {tenants}",
                        v.event_name, i.id, i.aggregation, i.customer_key, i.value_key
                    );
                }
                (Err(_), meter) => {
                    for p in &v.problems {
                        let _ = writeln!(
                            s,
                            "PROBLEM  meter `{}`: {}; tenants: {tenants}",
                            v.event_name,
                            p.describe(&v.event_name, meter.as_ref())
                        );
                    }
                }
            }
        }
        for t in &self.tenants {
            let customer = customer_refusal(&t.customer, t.customer_state);
            let meters = match t.meters_with_problems.as_slice() {
                [] => String::new(),
                names => format!(
                    "; its meter(s) {} have a problem (above)",
                    names
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let _ = match customer {
                None if t.meters_with_problems.is_empty() => writeln!(
                    s,
                    "ok       tenant {}: Stripe customer {} exists; its meters are ready",
                    t.tenant, t.customer
                ),
                None => writeln!(
                    s,
                    "PROBLEM  tenant {}: Stripe customer {} exists{meters}",
                    t.tenant, t.customer
                ),
                Some(r) => writeln!(s, "PROBLEM  tenant {}: {}{meters}", t.tenant, r.text),
            };
        }
        let _ = match self.problem_count() {
            0 => writeln!(s, "No problem: every meter and customer is ready."),
            n => writeln!(
                s,
                "{n} problem(s): serve holds the outcomes of these meters and customers as pending, unsent, until the preflight passes for them."
            ),
        };
        s
    }
}

/// Run the preflight against the account: list every meter, look up each
/// configured customer and each of `extra_customers` (others the caller has
/// outcomes for), then [`verdict`].
pub async fn check(
    client: &StripeClient,
    needs: &Needs,
    extra_customers: &[String],
) -> Result<Report, StripeError> {
    let account = client.list_meters().await?;
    let mut wanted: BTreeSet<&str> = needs.customers();
    wanted.extend(extra_customers.iter().map(String::as_str));
    let mut customers = BTreeMap::new();
    for c in wanted {
        customers.insert(c.to_string(), client.customer(c).await?);
    }
    Ok(verdict(needs, account, customers))
}

/// The preflight of one Stripe account.
#[derive(Debug, Serialize)]
pub struct AccountReport {
    /// The connected account (`None`: the platform's own).
    pub account: Option<String>,
    pub report: Report,
}

/// The preflight of every account the tenants bill on (the platform's own and
/// each Stripe Connect account), for `check --stripe`.
pub async fn check_accounts(
    client: &StripeClient,
    settings: &Settings,
) -> Result<Vec<AccountReport>, StripeError> {
    let accounts = settings.stripe_accounts();
    let mut out = Vec::with_capacity(accounts.len());
    for account in accounts {
        let needs = Needs::for_account(settings, account.as_deref());
        let report = check(&client.on_account(account.as_deref()), &needs, &[]).await?;
        out.push(AccountReport { account, report });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stripe::meters::{CustomerMapping, DefaultAggregation, ValueSettings};

    fn meter(id: &str, event_name: &str) -> Meter {
        Meter {
            id: id.into(),
            event_name: event_name.into(),
            display_name: String::new(),
            status: "active".into(),
            default_aggregation: DefaultAggregation {
                formula: "sum".into(),
            },
            customer_mapping: CustomerMapping::default(),
            value_settings: ValueSettings::default(),
            event_time_window: None,
        }
    }

    fn needs(names: &[&str]) -> Needs {
        Needs {
            tenants: vec![TenantNeeds {
                tenant: "acme".into(),
                customer: "cus_acme".into(),
                event_names: names.iter().map(|n| n.to_string()).collect(),
            }],
            ..Default::default()
        }
    }

    fn exists() -> BTreeMap<String, CustomerState> {
        [("cus_acme".to_string(), CustomerState::Exists)].into()
    }

    fn problems(r: &Report, name: &str) -> Vec<&'static str> {
        r.meters
            .iter()
            .find(|v| v.event_name == name)
            .map(|v| v.problems.iter().map(MeterProblem::reason).collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_good_setup_passes_with_stripes_keys_and_formula() {
        let mut m = meter("mtr_1", "resolved_ticket");
        m.customer_mapping.event_payload_key = "account".into();
        m.value_settings.event_payload_key = "tickets".into();
        m.default_aggregation.formula = "count".into();
        let r = verdict(&needs(&["resolved_ticket"]), vec![m], exists());
        assert!(r.is_ok(), "{}", r.render());
        assert_eq!(
            r.meter("resolved_ticket"),
            Ok(MeterInfo {
                id: "mtr_1".into(),
                aggregation: MeterAggregation::Count,
                customer_key: "account".into(),
                value_key: "tickets".into(),
            })
        );
        assert_eq!(r.customer("cus_acme"), Ok(()));
        let text = r.render();
        assert!(text.contains("ok       meter `resolved_ticket`: mtr_1 (count, payload[account], payload[tickets])"), "{text}");
        assert!(text.contains("ok       tenant acme"), "{text}");
        assert!(text.contains("No problem"), "{text}");
    }

    #[test]
    fn each_meter_problem_is_named() {
        let mut inactive = meter("mtr_i", "inactive_one");
        inactive.status = "inactive".into();
        let mut windowed = meter("mtr_w", "windowed");
        windowed.event_time_window = Some("day".into());
        let mut odd = meter("mtr_o", "odd");
        odd.default_aggregation.formula = "average".into();
        let account = vec![
            inactive,
            windowed,
            odd,
            meter("mtr_a1", "twice"),
            meter("mtr_a2", "twice"),
        ];
        let names = ["inactive_one", "windowed", "odd", "twice", "nowhere"];
        let r = verdict(&needs(&names), account, exists());
        assert_eq!(problems(&r, "inactive_one"), ["meter_inactive"]);
        assert_eq!(problems(&r, "windowed"), ["meter_time_window"]);
        assert_eq!(problems(&r, "odd"), ["meter_formula"]);
        assert_eq!(problems(&r, "twice"), ["meter_ambiguous"]);
        assert_eq!(problems(&r, "nowhere"), ["meter_missing"]);
        assert_eq!(r.problem_count(), 5);
        let t = &r.tenants[0];
        assert!(!t.is_ok());
        assert_eq!(t.meters_with_problems.len(), 5);
        let text = r.render();
        for words in [
            "meter mtr_i is inactive",
            "Stripe keeps only the latest event of each day",
            "aggregates by `average`",
            "2 active meters have event_name `twice` (mtr_a1, mtr_a2)",
            "no meter in the Stripe account has event_name `nowhere`",
            "PROBLEM  tenant acme: Stripe customer cus_acme exists; its meter(s)",
            "5 problem(s)",
        ] {
            assert!(text.contains(words), "{words} missing:\n{text}");
        }
        let refused = r.meter("windowed").expect_err("held");
        assert_eq!(refused.reason, "meter_time_window");
        assert!(
            refused.text.starts_with("meter `windowed`: meter mtr_w"),
            "{}",
            refused.text
        );
    }

    #[test]
    fn an_inactive_meter_beside_an_active_one_is_not_a_problem() {
        let mut old = meter("mtr_old", "resolved_ticket");
        old.status = "inactive".into();
        let r = verdict(
            &needs(&["resolved_ticket"]),
            vec![old, meter("mtr_new", "resolved_ticket")],
            exists(),
        );
        assert!(r.is_ok(), "{}", r.render());
        assert_eq!(
            r.meter("resolved_ticket").map(|i| i.id),
            Ok("mtr_new".into())
        );
    }

    #[test]
    fn overrides_pick_a_meter_and_must_agree_with_stripe() {
        let account = vec![meter("mtr_a1", "twice"), meter("mtr_a2", "twice")];
        let mut n = needs(&["twice"]);
        n.meter_ids.insert("twice".into(), "mtr_a2".into());
        let r = verdict(&n, account.clone(), exists());
        assert!(r.is_ok(), "{}", r.render());
        assert_eq!(r.meter("twice").map(|i| i.id), Ok("mtr_a2".into()));

        n.aggregations
            .insert("twice".into(), MeterAggregation::Last);
        let r = verdict(&n, account.clone(), exists());
        assert_eq!(problems(&r, "twice"), ["meter_aggregation"]);
        assert!(r
            .render()
            .contains("says `last` for `twice`, but meter mtr_a2 aggregates by `sum`"));

        n.aggregations.clear();
        n.meter_ids.insert("twice".into(), "mtr_gone".into());
        let r = verdict(&n, account.clone(), exists());
        assert_eq!(problems(&r, "twice"), ["meter_override"]);
        assert!(r.render().contains("no such meter"), "{}", r.render());

        let mut n = needs(&["resolved_ticket"]);
        n.meter_ids
            .insert("resolved_ticket".into(), "mtr_a1".into());
        let r = verdict(&n, account, exists());
        assert_eq!(problems(&r, "resolved_ticket"), ["meter_override"]);
        assert!(r.render().contains("that meter's event_name is `twice`"));
        assert_eq!(
            r.meter_ids().get("resolved_ticket").map(String::as_str),
            Some("mtr_a1")
        );
    }

    #[test]
    fn customers_deleted_missing_or_unchecked_are_problems() {
        let mut n = needs(&["resolved_ticket"]);
        for (tenant, customer) in [
            ("gone", "cus_gone"),
            ("unknown", "cus_unknown"),
            ("skipped", "cus_skipped"),
        ] {
            n.tenants.push(TenantNeeds {
                tenant: tenant.into(),
                customer: customer.into(),
                event_names: ["resolved_ticket".to_string()].into(),
            });
        }
        let customers = [
            ("cus_acme".to_string(), CustomerState::Exists),
            ("cus_gone".to_string(), CustomerState::Deleted),
            ("cus_unknown".to_string(), CustomerState::Missing),
        ]
        .into();
        let r = verdict(&n, vec![meter("mtr_1", "resolved_ticket")], customers);
        assert_eq!(r.problem_count(), 3);
        let reason = |c: &str| r.customer(c).err().map(|e| e.reason);
        assert_eq!(reason("cus_acme"), None);
        assert_eq!(reason("cus_gone"), Some("customer_deleted"));
        assert_eq!(reason("cus_unknown"), Some("customer_missing"));
        assert_eq!(reason("cus_skipped"), Some("customer_unchecked"));
        let text = r.render();
        assert!(
            text.contains("PROBLEM  tenant gone: Stripe customer cus_gone is deleted"),
            "{text}"
        );
        assert!(
            text.contains("PROBLEM  tenant unknown: Stripe customer cus_unknown does not exist"),
            "{text}"
        );
        assert!(text.contains("ok       tenant acme"), "{text}");
    }

    #[test]
    fn an_event_name_no_contract_names_is_judged_against_the_account() {
        let r = verdict(
            &needs(&["resolved_ticket"]),
            vec![
                meter("mtr_1", "resolved_ticket"),
                meter("mtr_old", "legacy"),
            ],
            exists(),
        );
        assert_eq!(r.meter("legacy").map(|i| i.id), Ok("mtr_old".into()));
        assert_eq!(r.meter("never").map_err(|e| e.reason), Err("meter_missing"));
        assert_eq!(r.account_meter_id("legacy").as_deref(), Some("mtr_old"));
    }

    #[test]
    fn needs_come_from_each_tenants_contract_and_categories() {
        use crate::contract::Category;
        let mut s = Settings::default();
        s.contract.categories = vec![
            Category {
                name: "refunds".into(),
                tags_any: vec!["refund".into()],
                channels_any: vec![],
                event_name: Some("resolved_refund".into()),
                value: None,
                decline: false,
            },
            Category {
                name: "voice".into(),
                tags_any: vec![],
                channels_any: vec!["voice".into()],
                event_name: Some("declined_meter".into()),
                value: None,
                decline: true,
            },
        ];
        s.tenants = vec![crate::settings::TenantSettings::generic(
            "acme", "cus_acme", "x",
        )];
        let n = Needs::from_settings(&s);
        assert_eq!(n.tenants.len(), 1);
        let names: Vec<&str> = n.tenants[0]
            .event_names
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["resolved_refund", "resolved_ticket"]);
        assert_eq!(n.tenants[0].customer, "cus_acme");
    }
}
