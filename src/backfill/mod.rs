//! `outcome-meter backfill`: import ticket histories from a helpdesk's API, for
//! onboarding a customer or recovering from an outage.
//!
//! The helpdesk's listing (`HelpdeskApi::changed_tickets`) is read a page at a
//! time; each ticket on a page is read whole (`HelpdeskApi::look`) and its events
//! are stored like a webhook's (an event seen both ways counts once) and replayed,
//! one transaction per page; then the cursor moves past the page. Interrupted
//! (Ctrl-C, a crash, an API that stays down), the same command continues from the
//! cursor. Rate limits are honoured: every request keeps to the client's budget,
//! and a 429 waits for the helpdesk's `Retry-After`.
//!
//! At the end the worker decides what became due: outcomes confirmed more than
//! 35 days after they became outcomes are recorded but not sent (Stripe refuses
//! such timestamps; `replay --too-old` bills them on purpose), and the summary
//! says how many.

mod progress;

pub use progress::{LogLines, Progress, Silent, TerminalBar};

use crate::app::Services;
use crate::event::TicketEvent;
use crate::helpdesk_api::{self, ApiError, HelpdeskApi, TicketLook, TicketPage};
use crate::store::{BackfillRow, StoreError};
use crate::time::Millis;
use crate::worker::Worker;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tenant: String,
    pub provider: String,
    /// Inclusive.
    pub since: Millis,
    /// Exclusive; `None`: continue the unfinished backfill from `since`, or up
    /// to now.
    pub until: Option<Millis>,
    /// Start again from the first page even if this range was (partly) done.
    pub restart: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The command cannot run as configured (no such tenant, no API credentials…).
    #[error("{0}")]
    Setup(String),
    /// The helpdesk's API failed for good (or kept failing): what was imported
    /// stays, and the same command continues from the last page.
    #[error("the {provider} API: {error} ({pages} page(s) imported; run the same command again to continue)")]
    Api {
        provider: String,
        error: ApiError,
        pages: u64,
    },
    #[error("interrupted after {pages} page(s); run the same command again to continue")]
    Interrupted { pages: u64 },
}

/// What a backfill did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub row: BackfillRow,
    /// It continued an interrupted run.
    pub resumed: bool,
    /// It was already finished: nothing was read.
    pub already_done: bool,
    /// Tickets the listing named that the helpdesk no longer has (404): skipped.
    pub missing: u64,
    /// Tickets whose history could not be read (an unexpected answer): skipped,
    /// each named in the log.
    pub unreadable: u64,
    /// Outcomes of the range (resolved in it) now recorded…
    pub outcomes: u64,
    /// …of which confirmed too late for the billing system (older than 35 days):
    /// recorded, not sent.
    pub too_old: u64,
}

impl Summary {
    pub fn render(&self) -> String {
        let r = &self.row;
        let mut s = format!(
            "backfill {} / {}: {} ticket(s) on {} page(s), {} new event(s){}{}\n",
            r.tenant,
            r.provider,
            r.tickets,
            r.pages,
            r.events_new,
            if self.resumed { " (continued)" } else { "" },
            if self.already_done {
                " (already finished: --restart to run it again)"
            } else {
                ""
            },
        );
        if self.missing > 0 {
            s += &format!(
                "  {} ticket(s) listed but gone (404): skipped\n",
                self.missing
            );
        }
        s += &format!(
            "  outcomes resolved in the range: {}; too old to send (older than 35 days): {}{}\n",
            self.outcomes,
            self.too_old,
            if self.too_old > 0 {
                " (decided and recorded, not sent; `outcome-meter replay --too-old` bills them on purpose)"
            } else {
                ""
            }
        );
        s
    }
}

/// How many times an unreachable helpdesk is retried before the backfill stops
/// (the cursor is kept: the same command continues).
const MAX_RETRIES: u32 = 8;
/// The wait after a 429 without `Retry-After`.
const DEFAULT_RATE_WAIT: Duration = Duration::from_secs(10);

/// Run a backfill to its end (or until `cancel`).
pub async fn run(
    services: &Services,
    plan: &Plan,
    progress: &mut dyn Progress,
    cancel: &CancellationToken,
) -> Result<Summary, BackfillError> {
    let api = api_of(services, plan)?;
    let now = services.clock.now_ms();
    let store = &services.store;
    let Opened {
        mut row,
        resumed,
        already_done,
    } = open(store, plan, now).await?;
    if row.since >= row.until {
        return Err(BackfillError::Setup(
            "the range is empty: --since must be before --until (and before now)".into(),
        ));
    }
    let mut skipped = Skipped::default();
    if !already_done {
        progress.start(&row);
        let worker = services.worker();
        let import = Import {
            services,
            plan,
            api: api.as_ref(),
            worker: &worker,
            cancel,
        };
        skipped = import.pages(&mut row, progress).await?;
        // Decide what became due (and check it with the helpdesk, if verified).
        worker.drain().await?;
        progress.finish(&row);
    }
    let oldest = crate::stripe::limits::oldest_acceptable_ms(services.clock.world_now());
    let (outcomes, too_old) = store
        .outcomes_resolved_in(&row.tenant, &row.provider, row.since, row.until, oldest)
        .await?;
    Ok(Summary {
        row,
        resumed,
        already_done,
        missing: skipped.missing,
        unreadable: skipped.unreadable,
        outcomes,
        too_old,
    })
}

/// The API client of the plan's tenant and provider.
fn api_of(services: &Services, plan: &Plan) -> Result<Arc<dyn HelpdeskApi>, BackfillError> {
    let tenant = services.tenants.get(&plan.tenant).ok_or_else(|| {
        BackfillError::Setup(format!("no tenant `{}` in the configuration", plan.tenant))
    })?;
    let provider_settings = tenant
        .settings
        .providers
        .get(&plan.provider)
        .map(|p| crate::verification::with_clock(p, &services.clock))
        .ok_or_else(|| {
            BackfillError::Setup(format!(
                "tenant `{}` has no provider `{}`",
                plan.tenant, plan.provider
            ))
        })?;
    helpdesk_api::api_client(&plan.provider, &provider_settings)
        .map_err(BackfillError::Setup)?
        .ok_or_else(|| {
            BackfillError::Setup(format!(
                "tenant `{}`: provider `{}` has no [tenants.providers.{}.api] credentials (docs/helpdesks.md)",
                plan.tenant, plan.provider, plan.provider
            ))
        })
}

/// The backfill's row, continued or started.
struct Opened {
    row: BackfillRow,
    /// An interrupted run is continued.
    resumed: bool,
    /// The range was backfilled to its end already.
    already_done: bool,
}

/// The row of the plan's range: with `until`, that range's (finished or not);
/// without, the unfinished one from `since`, up to `now`. A new row with
/// `restart`, or when there is none.
async fn open(store: &crate::store::Store, plan: &Plan, now: Millis) -> Result<Opened, StoreError> {
    let found = match plan.until {
        Some(until) => store
            .backfill(&plan.tenant, &plan.provider, plan.since, until)
            .await?
            .map(|r| {
                let done = r.finished_at.is_some();
                Opened {
                    row: r,
                    resumed: !done,
                    already_done: done,
                }
            }),
        None => store
            .unfinished_backfill(&plan.tenant, &plan.provider, plan.since)
            .await?
            .map(|r| Opened {
                row: r,
                resumed: true,
                already_done: false,
            }),
    };
    match found {
        Some(opened) if !plan.restart => Ok(opened),
        _ => Ok(Opened {
            row: store
                .start_backfill(
                    &plan.tenant,
                    &plan.provider,
                    plan.since,
                    plan.until.unwrap_or(now),
                    now,
                )
                .await?,
            resumed: false,
            already_done: false,
        }),
    }
}

/// Tickets the listing named that were not imported.
#[derive(Default)]
struct Skipped {
    /// Gone (404).
    missing: u64,
    /// Their history could not be read.
    unreadable: u64,
}

/// One backfill reading the helpdesk, page after page.
struct Import<'a> {
    services: &'a Services,
    plan: &'a Plan,
    api: &'a dyn HelpdeskApi,
    worker: &'a Worker,
    cancel: &'a CancellationToken,
}

impl Import<'_> {
    /// Read the listing from the row's cursor to its end: each page's histories
    /// imported in one transaction, then the cursor moved past it.
    async fn pages(
        &self,
        row: &mut BackfillRow,
        progress: &mut dyn Progress,
    ) -> Result<Skipped, BackfillError> {
        let (api, plan) = (self.api, self.plan);
        let since = row.since.to_datetime();
        let until = row.until.to_datetime();
        let mut skipped = Skipped::default();
        loop {
            if self.cancel.is_cancelled() {
                return Err(BackfillError::Interrupted { pages: row.pages });
            }
            let page: TicketPage = patiently(api, row, self.cancel, || {
                api.changed_tickets(since, until, row.cursor.as_deref())
            })
            .await?;
            let events = self.histories(row, &page, &mut skipped).await?;
            let new = self
                .worker
                .import_history(
                    &plan.tenant,
                    &plan.provider,
                    &events,
                    Some(api.same_happening()),
                )
                .await?;
            row.pages += 1;
            row.tickets += u64::try_from(page.ticket_ids.len()).unwrap_or(u64::MAX);
            row.events_new += u64::try_from(new).unwrap_or(u64::MAX);
            row.total = page.total.or(row.total);
            let at = self.services.clock.now_ms();
            if page.next.is_some() && page.next == row.cursor {
                return Err(BackfillError::Api {
                    provider: plan.provider.clone(),
                    error: ApiError::malformed("the listing's next page is the page just read"),
                    pages: row.pages,
                });
            }
            row.cursor = page.next;
            if row.cursor.is_none() {
                row.finished_at = Some(at);
            }
            self.services.store.advance_backfill(row, at).await?;
            progress.page(row);
            if row.cursor.is_none() {
                return Ok(skipped);
            }
        }
    }

    /// The histories of the tickets on `page` (each its own events only). A
    /// ticket gone (404) or whose history cannot be read is skipped and counted.
    async fn histories(
        &self,
        row: &BackfillRow,
        page: &TicketPage,
        skipped: &mut Skipped,
    ) -> Result<Vec<TicketEvent>, BackfillError> {
        let (api, plan) = (self.api, self.plan);
        let mut events = Vec::new();
        for id in &page.ticket_ids {
            if self.cancel.is_cancelled() {
                return Err(BackfillError::Interrupted { pages: row.pages });
            }
            match patiently(api, row, self.cancel, || api.look(id, None)).await {
                Ok(TicketLook { events: evs, .. }) => {
                    events.extend(evs.into_iter().filter(|e| &e.ticket_id == id))
                }
                Err(BackfillError::Api {
                    error: ApiError::NotFound(_),
                    ..
                }) => skipped.missing += 1,
                // One ticket the client cannot read (an answer of an unexpected
                // shape, a history past the page bound) must not stop the rest:
                // skipped, named in the log, counted in the summary.
                Err(BackfillError::Api {
                    error: error @ ApiError::Malformed { .. },
                    ..
                }) => {
                    tracing::warn!(tenant = %plan.tenant, provider = %plan.provider, ticket = %id, %error, "backfill: ticket skipped, its history could not be read");
                    skipped.unreadable += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(events)
    }
}

/// Call `f` until it answers: a 429 waits for its `Retry-After`; an unreachable
/// helpdesk is retried with backoff up to [`MAX_RETRIES`] times; anything else
/// ends the backfill (its cursor is kept).
async fn patiently<T, F, Fut>(
    api: &dyn HelpdeskApi,
    row: &BackfillRow,
    cancel: &CancellationToken,
    mut f: F,
) -> Result<T, BackfillError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut failures = 0u32;
    loop {
        let wait = match f().await {
            Ok(v) => return Ok(v),
            Err(ApiError::RateLimited { retry_after } | ApiError::Throttled { retry_after }) => {
                let wait = retry_after.unwrap_or(DEFAULT_RATE_WAIT);
                tracing::info!(
                    provider = api.provider(),
                    wait_s = wait.as_secs_f64(),
                    "backfill: rate limited; waiting as the helpdesk asked"
                );
                wait
            }
            Err(ApiError::Unreachable { status, detail }) if failures < MAX_RETRIES => {
                failures += 1;
                let wait = Duration::from_secs(1u64 << failures.min(6));
                tracing::warn!(provider = api.provider(), ?status, %detail, failures, "backfill: helpdesk unreachable; retrying");
                wait
            }
            Err(error) => {
                return Err(BackfillError::Api {
                    provider: api.provider().to_string(),
                    error,
                    pages: row.pages,
                })
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.cancelled() => return Err(BackfillError::Interrupted { pages: row.pages }),
        }
    }
}
