//! What the tests, the benchmarks and the chaos suite share: a fake Stripe that
//! checks what Stripe checks ([`fake_stripe`]) and a harness that runs the real
//! `outcome-meter serve` binary as a child process ([`process`]), and a poll with
//! a deadline ([`poll`]). A fake Metronome ([`fake_metronome`]) does the same for
//! Metronome's usage ingest.

pub mod fake_helpdesk;
pub mod fake_metronome;
pub mod fake_stripe;
pub mod http;
pub mod poll;
pub mod process;
