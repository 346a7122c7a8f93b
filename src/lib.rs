//! outcome-meter: bill AI support agents per resolved ticket.
//!
//! Helpdesk webhooks come in ([`ingest`]), are normalized by [`providers`],
//! replayed by the pure [`ticket`] state machine under the [`contract`], confirmed
//! by the [`worker`] once their reopen window has passed, and reported exactly once
//! to Stripe by the [`stripe`] reporter. [`report`] explains what was billed.

pub mod accounting;
pub mod app;
pub mod backfill;
pub mod clock;
pub mod contract;
pub mod demo;
pub mod duration_serde;
pub mod event;
pub mod health;
pub mod helpdesk_api;
pub mod ingest;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod metronome;
pub mod outcome;
pub mod providers;
pub mod redact;
pub mod reporter;
pub mod retry_after;
pub mod secret_sources;
pub mod server;
pub mod settings;
pub mod sink;
pub mod store;
pub mod stripe;
pub mod tenants;
pub mod ticket;
pub mod time;
pub mod verification;
pub mod worker;
