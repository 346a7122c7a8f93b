//! How a backfill shows its progress: a bar with counts, rate and ETA on a
//! terminal ([`TerminalBar`]), periodic plain log lines otherwise ([`LogLines`]).

use crate::store::BackfillRow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// Told about each imported page.
pub trait Progress: Send {
    fn start(&mut self, row: &BackfillRow);
    fn page(&mut self, row: &BackfillRow);
    fn finish(&mut self, row: &BackfillRow);
}

/// A progress bar on standard error: tickets imported out of the listing's total
/// (when the helpdesk says it), rate and ETA; a spinner with counts otherwise.
pub struct TerminalBar {
    bar: ProgressBar,
}

impl Default for TerminalBar {
    fn default() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
        TerminalBar { bar }
    }
}

impl TerminalBar {
    fn style(&self, known_total: bool) {
        let template = if known_total {
            "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} tickets, {per_sec}, ETA {eta} {msg}"
        } else {
            "{spinner} {prefix} [{elapsed_precise}] {pos} tickets, {per_sec} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.bar.set_style(style);
        }
    }

    fn show(&self, row: &BackfillRow) {
        if let Some(total) = row.total {
            self.bar.set_length(total.max(row.tickets));
        }
        self.style(row.total.is_some());
        self.bar.set_position(row.tickets);
        self.bar.set_message(format!(
            "{} page(s), {} new event(s)",
            row.pages, row.events_new
        ));
    }
}

impl Progress for TerminalBar {
    fn start(&mut self, row: &BackfillRow) {
        self.bar
            .set_prefix(format!("{}/{}", row.tenant, row.provider));
        self.show(row);
    }

    fn page(&mut self, row: &BackfillRow) {
        self.show(row);
    }

    fn finish(&mut self, row: &BackfillRow) {
        self.show(row);
        self.bar.finish();
    }
}

/// A plain log line every `every` (and at the start and the end), for logs and
/// pipes: counts, rate and, when the total is known, the ETA.
pub struct LogLines {
    every: Duration,
    started: Instant,
    last: Option<Instant>,
    from_tickets: u64,
}

impl LogLines {
    pub fn new(every: Duration) -> LogLines {
        LogLines {
            every,
            started: Instant::now(),
            last: None,
            from_tickets: 0,
        }
    }

    fn line(&mut self, row: &BackfillRow, what: &str) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let done = row.tickets.saturating_sub(self.from_tickets);
        let rate = done as f64 / secs;
        let eta = match row.total {
            Some(total) if rate > 0.0 && total > row.tickets => {
                let left = Duration::from_secs_f64((total - row.tickets) as f64 / rate);
                format!(
                    ", ETA {}",
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                )
            }
            _ => String::new(),
        };
        let of = row.total.map(|t| format!("/{t}")).unwrap_or_default();
        tracing::info!(
            tenant = %row.tenant,
            provider = %row.provider,
            "backfill {what}: {}{of} tickets, {} page(s), {} new event(s), {rate:.1} tickets/s{eta}",
            row.tickets,
            row.pages,
            row.events_new,
        );
        self.last = Some(Instant::now());
    }
}

impl Progress for LogLines {
    fn start(&mut self, row: &BackfillRow) {
        self.started = Instant::now();
        self.from_tickets = row.tickets;
        self.line(row, "started");
    }

    fn page(&mut self, row: &BackfillRow) {
        if self.last.is_none_or(|l| l.elapsed() >= self.every) {
            self.line(row, "progress");
        }
    }

    fn finish(&mut self, row: &BackfillRow) {
        self.line(row, "listing done");
    }
}

/// Shows nothing (tests, library callers).
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &BackfillRow) {}
    fn page(&mut self, _: &BackfillRow) {}
    fn finish(&mut self, _: &BackfillRow) {}
}
