//! Integration tests: the real server on port 0, a temporary SQLite file (and
//! PostgreSQL where available), a manual clock, and a fake Stripe.

// Test and bench code: a failed expectation is the report (the library denies these).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod backfill;
mod billing;
mod chaos;
mod chromium;
mod cli;
mod cli_output;
mod config_keys;
mod contract_terms;
mod helpdesk_clients;
mod hostile;
mod ingest;
mod meter_stream;
mod metronome;
mod metronome_sink;
mod names;
mod pipeline;
mod preflight;
mod process;
mod providers;
mod reporting;
mod reversals;
mod scaleout;
mod schema;
mod storage;
mod stripe_events;
mod stripe_modes;
mod support;
mod usage_records;
mod usage_records_sink;
mod verification;
mod worker_batch;
