//! Clients for each helpdesk's own REST API, used to check a ticket before its
//! outcome is billed (`verify = "before_billing"`, see [`crate::verification`]) and,
//! later, to import histories (backfill).
//!
//! A webhook is a hint, not a record: deliveries get lost. Each client reads one
//! ticket — its current status and what its API shows of what happened since a
//! time — and normalizes that into the same [`TicketEvent`]s webhooks produce, so
//! the state machine decides with whatever the helpdesk knows.
//!
//! One module per helpdesk; [`client_for`] builds the one a tenant's settings ask
//! for. Every client shares [`http::ApiHttp`]: a per-minute request budget, a
//! timeout, and one mapping of HTTP answers to [`ApiError`] (429 with
//! `Retry-After`, 5xx and network failures as unreachable, 401/403 as refused).

/// `look` and `changed_tickets` of [`HelpdeskApi`] for a client whose inherent
/// `async fn fetch(&self, ticket_id: &str, since: Option<DateTime<Utc>>)` and
/// `async fn list(&self, since, until, cursor: Option<&str>)` do the work (the
/// trait is used as `dyn`, so its futures are boxed).
macro_rules! look_and_list_by_fetch_and_list {
    () => {
        fn look<'a>(
            &'a self,
            ticket_id: &'a str,
            since: Option<chrono::DateTime<chrono::Utc>>,
        ) -> $crate::helpdesk_api::ApiFuture<'a, $crate::helpdesk_api::TicketLook> {
            Box::pin(self.fetch(ticket_id, since))
        }

        fn changed_tickets<'a>(
            &'a self,
            since: chrono::DateTime<chrono::Utc>,
            until: chrono::DateTime<chrono::Utc>,
            cursor: Option<&'a str>,
        ) -> $crate::helpdesk_api::ApiFuture<'a, $crate::helpdesk_api::TicketPage> {
            Box::pin(self.list(since, until, cursor))
        }
    };
}
pub(crate) use look_and_list_by_fetch_and_list;

pub mod freshdesk;
pub mod front;
pub mod generic;
pub mod gorgias;
pub mod helpscout;
pub mod http;
pub mod hubspot;
pub mod intercom;
pub mod settings;
pub mod zendesk;
pub mod zohodesk;

use crate::event::{EventKind, TicketEvent};
use crate::providers::ProviderSettings;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use settings::{ApiSettings, OnUnreachable, VerifyMode, VerifySettings};

/// A boxed future of a client's answer (the trait is used as `dyn`).
pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// What a helpdesk's API shows of one ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct TicketLook {
    /// The status in the helpdesk's own words (`solved`, `open`, `closed`, …).
    pub status: String,
    /// Whether that status counts as resolved (solved, closed, archived…).
    pub resolved: bool,
    /// When the ticket (or its status) last changed, if the API says.
    pub updated_at: Option<DateTime<Utc>>,
    /// When the customer last wrote on the ticket, if the API says.
    pub last_customer_message_at: Option<DateTime<Utc>>,
    /// What the API shows happened since the time asked for, normalized like
    /// webhooks (`event_key` the vendor's id where it has one; keys of events
    /// synthesized from a history start with `api:<provider>:`).
    pub events: Vec<TicketEvent>,
    /// A short summary of what was read, kept as evidence: ids, statuses and
    /// times, never message bodies or personal data.
    pub answer: serde_json::Value,
}

/// What a helpdesk's API can show, for the documentation and the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sight {
    /// The API keeps a history of status changes (so a reopen and a re-solve
    /// inside the window are both visible).
    pub status_history: bool,
    /// The API lists the customer's messages with their times.
    pub customer_messages: bool,
    /// The API shows assignments (hand-offs) with their times.
    pub assignments: bool,
}

impl Sight {
    /// History, customer messages and assignments: everything verification uses.
    pub const EVERYTHING: Sight = Sight {
        status_history: true,
        customer_messages: true,
        assignments: true,
    };
}

/// Why a helpdesk's API did not give an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApiError {
    /// 429: wait at least `retry_after` (when the helpdesk said) before the next call.
    #[error("rate limited (429){}", .retry_after.map(|d| format!("; retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// A network failure, a timeout or a 5xx: the helpdesk may answer later.
    #[error("unreachable{}: {detail}", .status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Unreachable { status: Option<u16>, detail: String },
    /// 401/403: the credentials (or their scopes) are wrong; an operator must act.
    #[error("credentials refused ({status}): {detail}")]
    Refused { status: u16, detail: String },
    /// 404: the helpdesk has no such ticket (deleted, merged, or the wrong account).
    #[error("the helpdesk has no ticket `{0}` (404)")]
    NotFound(String),
    /// Not sent: this client's own budget (or a pause after a 429) does not allow
    /// a request before `retry_after`. Nothing was asked; nothing is wrong with the helpdesk.
    #[error("not sent: this client's request budget allows the next request in {}s", .retry_after.map_or(0, |d| d.as_secs()))]
    Throttled { retry_after: Option<Duration> },
    /// An answer this client cannot read (another 4xx, or an unexpected shape).
    #[error("unexpected answer{}: {detail}", .status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Malformed { status: Option<u16>, detail: String },
}

impl ApiError {
    pub fn malformed(detail: impl Into<String>) -> ApiError {
        ApiError::Malformed {
            status: None,
            detail: detail.into(),
        }
    }

    /// A bounded label for metrics: the HTTP status, or `network`.
    pub fn status_label(&self) -> String {
        match self {
            ApiError::RateLimited { .. } => "429".into(),
            ApiError::Unreachable { status, .. } | ApiError::Malformed { status, .. } => {
                status.map_or_else(|| "network".into(), |s| s.to_string())
            }
            ApiError::Refused { status, .. } => status.to_string(),
            ApiError::NotFound(_) => "404".into(),
            ApiError::Throttled { .. } => "throttled".into(),
        }
    }

    /// What kind of failure this is, as stored with a check and used as a label:
    /// `unreachable` and `rate_limited` may pass by themselves (an outage, a
    /// busy account); `refused`, `not_found` and `invalid_answer` are answers
    /// that need a person, so they never let an outcome be billed unverified.
    pub fn failure_kind(&self) -> &'static str {
        match self {
            ApiError::RateLimited { .. } | ApiError::Throttled { .. } => "rate_limited",
            ApiError::Unreachable { .. } => "unreachable",
            ApiError::Refused { .. } => "refused",
            ApiError::NotFound(_) => "not_found",
            ApiError::Malformed { .. } => "invalid_answer",
        }
    }

    /// How long the helpdesk asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::Throttled { retry_after } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// The most pages any client follows for one ticket's history or one listing
/// call: a bound, so an answer that never ends is an error, not a loop.
pub const MAX_PAGES: u32 = 100;

/// A ticket id that must be an integer (Zendesk, Freshdesk, Gorgias, Zoho Desk):
/// anything else is refused as unknown before it is put in a URL path.
pub(crate) fn integer_id<'a>(vendor: &str, ticket_id: &'a str) -> Result<&'a str, ApiError> {
    if !ticket_id.is_empty()
        && ticket_id.len() <= 20
        && ticket_id.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(ticket_id)
    } else {
        Err(ApiError::NotFound(format!(
            "`{ticket_id}` is not a {vendor} ticket id"
        )))
    }
}

/// One page of a listing of the tickets changed in a time range (backfill).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TicketPage {
    /// Ticket ids, as webhooks carry them.
    pub ticket_ids: Vec<String>,
    /// Where the next page starts (opaque; stored by backfill to resume after a
    /// restart, so it must stay usable for days); `None`: this was the last page.
    pub next: Option<String>,
    /// How many tickets the whole listing has, when the API says (progress and ETA).
    pub total: Option<u64>,
}

/// One helpdesk's REST API, as verification and backfill use it.
pub trait HelpdeskApi: Send + Sync {
    /// The provider's name in config and webhook URLs (`zendesk`, …).
    fn provider(&self) -> &'static str;

    /// What this API can show (documented per helpdesk).
    fn sight(&self) -> Sight;

    /// How far apart a webhook's time and the API's time of the same happening
    /// can be (webhooks that round times to the minute: Freshdesk). Two events
    /// of the same kind this close are one happening.
    fn same_happening(&self) -> chrono::Duration {
        crate::verification::judge::SAME_HAPPENING
    }

    /// Read one ticket: its current status and what happened since `since`
    /// (`None`: its whole history). Paginates as needed; every request goes
    /// through the client's rate budget.
    fn look<'a>(
        &'a self,
        ticket_id: &'a str,
        since: Option<DateTime<Utc>>,
    ) -> ApiFuture<'a, TicketLook>;

    /// The tickets changed (created or updated) in `[since, until)`, a page at a
    /// time from `cursor` (`None`: the first page), through the helpdesk's
    /// incremental export or search API. A ticket may appear on two pages (it
    /// changed while the listing ran): backfill imports it once per page, harmlessly.
    fn changed_tickets<'a>(
        &'a self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        cursor: Option<&'a str>,
    ) -> ApiFuture<'a, TicketPage>;
}

/// The API client a tenant's provider settings ask for verification: `None`
/// when verification is off (explicitly, or because no `api` credentials are set).
pub fn client_for(
    provider: &str,
    settings: &ProviderSettings,
) -> Result<Option<Arc<dyn HelpdeskApi>>, String> {
    if settings.verify_mode() == VerifyMode::Off {
        return Ok(None);
    }
    api_client(provider, settings)
}

/// The API client of a provider's `api` credentials, whatever `verify` says
/// (backfill): `None` without credentials.
pub fn api_client(
    provider: &str,
    settings: &ProviderSettings,
) -> Result<Option<Arc<dyn HelpdeskApi>>, String> {
    let Some(api) = settings.api.as_ref() else {
        return Ok(None);
    };
    // One line per helpdesk: its module's `client` checks the keys it needs.
    let client: Arc<dyn HelpdeskApi> = match provider {
        "generic" => Arc::new(generic::client(api, settings)?),
        "front" => Arc::new(front::client(api, settings)?),
        "hubspot" => Arc::new(hubspot::client(api, settings)?),
        "intercom" => Arc::new(intercom::client(api, settings)?),
        "helpscout" => Arc::new(helpscout::client(api, settings)?),
        "gorgias" => Arc::new(gorgias::client(api, settings)?),
        "zohodesk" => Arc::new(zohodesk::client(api, settings)?),
        "zendesk" => Arc::new(zendesk::client(api, settings)?),
        "freshdesk" => Arc::new(freshdesk::client(api, settings)?),
        other => {
            return Err(format!(
                "provider `{other}` has no API client: set verify = \"off\""
            ))
        }
    };
    Ok(Some(client))
}

/// What is wrong with a provider's `api` settings, in words for the admin.
pub fn problems(provider: &str, settings: &ProviderSettings) -> Vec<String> {
    let Some(api) = settings.api.as_ref() else {
        if settings.verify == Some(VerifyMode::BeforeBilling) {
            return vec![format!(
                "verify = \"before_billing\" needs [tenants.providers.{provider}.api] credentials"
            )];
        }
        return Vec::new();
    };
    let mut errs = api.common_problems();
    if errs.is_empty() {
        if let Err(e) = api_client(provider, settings) {
            errs.push(e);
        }
    }
    errs
}

/// Whether `kind` says the resolution did not hold (a reopen signal).
pub fn is_reopen_signal(kind: EventKind) -> bool {
    kind != EventKind::Resolved
}
