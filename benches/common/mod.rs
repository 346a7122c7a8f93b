//! What the benchmarks share: arguments, settings, signed bodies, a load driver
//! on loopback and latency percentiles. Figures are printed, never asserted.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use outcome_meter::settings::{Settings, TenantSettings};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SECRET: &str = "whsec_bench";

/// `--name N` from the command line (cargo adds `--bench`, which is ignored).
pub fn arg(name: &str, default: u64) -> u64 {
    let flag = format!("--{name}");
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// `--name VALUE` from the command line, as text.
pub fn arg_text(name: &str, default: &str) -> String {
    let flag = format!("--{name}");
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| *a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Settings with `tenants` tenants `t0`, `t1`, … on the generic provider.
pub fn settings(db_url: &str, tenants: usize) -> Settings {
    let mut s = Settings::default();
    s.database.url = db_url.to_string();
    s.stripe.mode = Some(outcome_meter::settings::StripeMode::DryRun);
    s.tenants = (0..tenants)
        .map(|i| TenantSettings::generic(&format!("t{i}"), &format!("cus_bench_{i}"), SECRET))
        .collect();
    s
}

/// A generic-format event body.
pub fn event(event_id: &str, ticket: &str, kind: &str, at: DateTime<Utc>, ai: bool) -> String {
    let resolver = if kind == "resolved" {
        format!(r#","resolver":"{}""#, if ai { "ai" } else { "human" })
    } else {
        String::new()
    };
    format!(
        r#"{{"event_id":"{event_id}","ticket_id":"{ticket}","type":"{kind}","occurred_at":"{}","channel":"chat"{resolver}}}"#,
        at.to_rfc3339()
    )
}

/// One request: URL, `Outcome-Signature` value, body.
pub struct Signed {
    pub url: String,
    pub signature: String,
    pub body: String,
}

pub fn signed(base: &str, tenant: &str, body: String, unix: i64) -> Signed {
    Signed {
        url: format!("{base}/webhooks/generic/{tenant}"),
        signature: outcome_meter::providers::generic::sign(SECRET, unix, body.as_bytes()),
        body,
    }
}

/// What a load run measured.
pub struct LoadReport {
    pub requests: usize,
    pub failures: usize,
    pub elapsed: Duration,
    /// Acknowledgement latencies in microseconds, sorted.
    pub latencies_us: Vec<u64>,
}

impl LoadReport {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.latencies_us.is_empty() {
            return 0;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i.min(self.latencies_us.len() - 1)]
    }

    pub fn line(&self, label: &str) -> String {
        format!(
            "{label}: {} requests in {:.2}s = {:.0}/s; ack latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms{}",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.percentile_us(0.50) as f64 / 1000.0,
            self.percentile_us(0.99) as f64 / 1000.0,
            self.percentile_us(0.999) as f64 / 1000.0,
            if self.failures > 0 {
                format!(" ({} FAILED)", self.failures)
            } else {
                String::new()
            }
        )
    }
}

/// Send requests `0..total` from `concurrency` keep-alive connections;
/// `make(i)` builds request `i` (lazily, so memory stays flat). A request that
/// is not answered 2xx is retried (a helpdesk would) and counted as a failure.
pub async fn drive<F>(concurrency: usize, total: usize, make: F) -> LoadReport
where
    F: Fn(usize) -> Signed + Send + Sync + 'static,
{
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, next, make) = (http.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let r = make(i);
                loop {
                    let t = Instant::now();
                    let sent = http
                        .post(&r.url)
                        .header("Outcome-Signature", &r.signature)
                        .header("Content-Type", "application/json")
                        .body(r.body.clone())
                        .send()
                        .await;
                    if sent.is_ok_and(|resp| resp.status().is_success()) {
                        lat.push(t.elapsed().as_micros() as u64);
                        break;
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            (lat, failures)
        }));
    }
    let mut latencies_us = Vec::with_capacity(total);
    let mut failures = 0;
    for t in tasks {
        if let Ok((lat, f)) = t.await {
            latencies_us.extend(lat);
            failures += f;
        }
    }
    let elapsed = started.elapsed();
    latencies_us.sort_unstable();
    LoadReport {
        requests: latencies_us.len(),
        failures,
        elapsed,
        latencies_us,
    }
}

/// Current and peak RSS of this process, in MiB.
pub fn own_rss_mib() -> (f64, f64) {
    testkit::process::rss_kib(std::process::id())
        .map(|(cur, peak)| (cur as f64 / 1024.0, peak as f64 / 1024.0))
        .unwrap_or((0.0, 0.0))
}
