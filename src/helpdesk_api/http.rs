//! What every helpdesk client shares: one `reqwest` client with a timeout, a
//! per-minute request budget, and one reading of HTTP answers into [`ApiError`].

use super::{ApiError, ApiSettings};
use crate::clock::{SharedClock, SystemClock};
use chrono::{DateTime, Utc};
use reqwest::{RequestBuilder, StatusCode};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A helpdesk API's HTTP side: budgeted requests, JSON answers, typed errors.
pub struct ApiHttp {
    client: reqwest::Client,
    budget: Budget,
    /// A helpdesk's own header saying when to retry after a 429, read when
    /// `Retry-After` is absent.
    reset_header: Option<ResetHeader>,
}

/// A vendor header that says when to retry after a 429 (some helpdesks send
/// their own instead of `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetHeader {
    /// A number of seconds to wait (Help Scout: `X-RateLimit-Retry-After`).
    Seconds(&'static str),
    /// The Unix time the window resets (Intercom: `X-RateLimit-Reset`), measured
    /// from the answer's `Date` header, or the world's time without one.
    UnixTime(&'static str),
}

impl ResetHeader {
    /// The wait the header asks for, if present and readable.
    pub fn wait(
        self,
        headers: &reqwest::header::HeaderMap,
        world_now: DateTime<Utc>,
    ) -> Option<Duration> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            ResetHeader::Seconds(name) => text(name)?
                .trim()
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs),
            ResetHeader::UnixTime(name) => {
                let reset = text(name)?.trim().parse::<i64>().ok()?;
                let now = text("date")
                    .and_then(|d| chrono::DateTime::parse_from_rfc2822(d.trim()).ok())
                    .map_or_else(|| world_now.timestamp(), |d| d.timestamp());
                // A reset already past still means "wait a moment", not "never".
                Some(Duration::from_secs(
                    u64::try_from(reset - now).unwrap_or(0).max(1),
                ))
            }
        }
    }
}

impl ApiHttp {
    /// The client `api` asks for: `api.requests_per_minute` (default
    /// `default_per_minute`, the vendor's documented budget), `api.timeout`, and
    /// the service's clock for `Retry-After` pauses.
    pub fn for_api(api: &ApiSettings, default_per_minute: u32) -> Result<ApiHttp, String> {
        let mut http = ApiHttp::new(
            api.requests_per_minute.unwrap_or(default_per_minute),
            api.timeout,
        )?;
        if let Some(clock) = &api.clock {
            http.budget.clock = clock.clone();
        }
        Ok(http)
    }

    /// A client allowed `per_minute` requests a minute, each given `timeout`.
    pub fn new(per_minute: u32, timeout: Duration) -> Result<ApiHttp, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("outcome-meter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(ApiHttp {
            client,
            budget: Budget::new(per_minute),
            reset_header: None,
        })
    }

    /// Also read `header` on a 429 when the answer has no `Retry-After`.
    pub fn with_reset_header(mut self, header: ResetHeader) -> ApiHttp {
        self.reset_header = Some(header);
        self
    }

    /// The world's time by the service's clock (vendor timestamps are real time).
    pub fn world_now(&self) -> DateTime<Utc> {
        self.budget.clock.world_now()
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Send once the budget allows, and read a 2xx answer as JSON.
    pub async fn json(&self, request: RequestBuilder) -> Result<serde_json::Value, ApiError> {
        let (status, body) = self.send(request).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed {
            status: Some(status.as_u16()),
            detail: format!("not JSON: {e}"),
        })
    }

    /// Send once the budget allows; a 2xx answer's status and body, else the error.
    pub async fn send(&self, request: RequestBuilder) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let (status, _, body) = self.exchange(request).await?;
        Ok((status, body))
    }

    /// Like [`ApiHttp::send`], with the answer's headers.
    pub async fn send_with_headers(
        &self,
        request: RequestBuilder,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), ApiError> {
        let (_, headers, body) = self.exchange(request).await?;
        Ok((headers, body))
    }

    async fn exchange(
        &self,
        request: RequestBuilder,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Vec<u8>), ApiError> {
        self.budget.take().await?;
        let response = request.send().await.map_err(|e| ApiError::Unreachable {
            status: None,
            detail: network_detail(e),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let date = response
                    .headers()
                    .get(reqwest::header::DATE)
                    .and_then(|d| d.to_str().ok());
                crate::retry_after::parse(v, date)
            })
            .or_else(|| {
                self.reset_header
                    .and_then(|h| h.wait(response.headers(), self.world_now()))
            });
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Unreachable {
                status: Some(status.as_u16()),
                detail: network_detail(e),
            })?
            .to_vec();
        if status.is_success() {
            return Ok((status, headers, body));
        }
        let detail = short(&body);
        Err(match status.as_u16() {
            429 => {
                if let Some(wait) = retry_after {
                    self.budget.pause(wait);
                }
                ApiError::RateLimited { retry_after }
            }
            401 | 403 => ApiError::Refused {
                status: status.as_u16(),
                detail,
            },
            404 => ApiError::NotFound(detail),
            s if s >= 500 => ApiError::Unreachable {
                status: Some(s),
                detail,
            },
            s => ApiError::Malformed {
                status: Some(s),
                detail,
            },
        })
    }
}

/// The start of an error body, on one line (no secrets are sent back by these APIs;
/// message bodies are never requested in error paths).
fn short(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

fn network_detail(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        // Without the URL: it may carry a query with ids.
        e.without_url().to_string()
    }
}

/// A request budget: at most `per_minute` requests in any minute, spread evenly
/// (one every `60 s / per_minute`, with a burst of a tenth of a minute's budget),
/// and no request before a 429's `Retry-After` has passed. The pacing sleeps in
/// real time (it paces calls to a live service); the `Retry-After` pause is kept
/// by the service's clock and never slept through: a call inside it fails at once
/// as rate limited, and the verifier schedules its ticket after the pause.
struct Budget {
    interval: Duration,
    burst: u32,
    clock: SharedClock,
    state: Mutex<BudgetState>,
}

struct BudgetState {
    /// When the next request may go, minus the burst allowance.
    next: Instant,
    /// No request before this (a 429's Retry-After): by the service's clock, and
    /// by real time. The pause ends when either has passed it (the same moment
    /// in production; tests move the service's clock, a backfill sleeps).
    paused_until: Option<(DateTime<Utc>, Instant)>,
}

/// A pacing wait longer than this fails the call as rate limited instead of sleeping in it.
const LONGEST_WAIT: Duration = Duration::from_secs(30);

impl Budget {
    fn new(per_minute: u32) -> Budget {
        let per_minute = per_minute.max(1);
        Budget {
            interval: Duration::from_secs(60) / per_minute,
            burst: (per_minute / 10).max(1),
            clock: Arc::new(SystemClock),
            state: Mutex::new(BudgetState {
                // A full burst is available from the start.
                next: {
                    let now = Instant::now();
                    now.checked_sub(Duration::from_secs(60) / per_minute * (per_minute / 10).max(1))
                        .unwrap_or(now)
                },
                paused_until: None,
            }),
        }
    }

    fn pause(&self, wait: Duration) {
        let until = self.clock.now()
            + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(1));
        let real = Instant::now() + wait.min(Duration::from_secs(86_400));
        let mut s = self.lock();
        s.paused_until = Some(match s.paused_until {
            Some((t, i)) => (t.max(until), i.max(real)),
            None => (until, real),
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve a slot; wait for it, or fail as rate limited when the wait is long.
    async fn take(&self) -> Result<(), ApiError> {
        let at = {
            let wall = self.clock.now();
            let mut s = self.lock();
            if let Some((p, real)) = s.paused_until {
                if p > wall && real > Instant::now() {
                    return Err(ApiError::Throttled {
                        retry_after: (p - wall).to_std().ok(),
                    });
                }
            }
            let now = Instant::now();
            let floor = now.checked_sub(self.interval * self.burst).unwrap_or(now);
            let slot = s.next.max(floor);
            if slot > now + LONGEST_WAIT {
                return Err(ApiError::Throttled {
                    retry_after: Some(slot - now),
                });
            }
            s.next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(at).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_reset_headers_read_as_a_wait() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("x-ratelimit-retry-after", "12".parse().expect("value"));
        h.insert("x-ratelimit-reset", "1487332520".parse().expect("value"));
        h.insert(
            "date",
            "Fri, 17 Feb 2017 11:55:10 GMT".parse().expect("value"),
        );
        assert_eq!(
            ResetHeader::Seconds("x-ratelimit-retry-after").wait(&h, Utc::now()),
            Some(Duration::from_secs(12))
        );
        // 1487332510 is the Date: ten seconds to the reset.
        assert_eq!(
            ResetHeader::UnixTime("x-ratelimit-reset").wait(&h, Utc::now()),
            Some(Duration::from_secs(10))
        );
        assert_eq!(ResetHeader::Seconds("x-missing").wait(&h, Utc::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_spreads_requests_and_allows_a_small_burst() {
        let b = Budget::new(600); // one every 100 ms, burst of 60
        let start = Instant::now();
        for _ in 0..60 {
            assert!(b.take().await.is_ok());
        }
        assert!(Instant::now() - start < Duration::from_millis(100));
        for _ in 0..10 {
            assert!(b.take().await.is_ok());
        }
        assert!(Instant::now() - start >= Duration::from_millis(900));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_pause_fails_fast_until_the_clock_passes_it() {
        let clock = crate::clock::ManualClock::new(crate::time::Millis::EPOCH.to_datetime());
        let mut b = Budget::new(60);
        b.clock = Arc::new(clock.clone());
        b.pause(Duration::from_secs(120));
        match b.take().await {
            Err(ApiError::Throttled {
                retry_after: Some(d),
            }) => assert_eq!(d, Duration::from_secs(120)),
            other => panic!("expected rate limited, got {other:?}"),
        }
        clock.advance(chrono::Duration::seconds(121));
        assert!(b.take().await.is_ok());
    }
}
