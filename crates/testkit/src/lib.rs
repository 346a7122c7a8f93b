//! What the tests, the benchmarks and the chaos suite share: a fake Stripe that
//! checks what Stripe checks ([`fake_stripe`]) and a harness that runs the real
//! `outcome-meter serve` binary as a child process ([`process`]), and a poll with
//! a deadline ([`poll`]).

pub mod fake_stripe;
pub mod poll;
pub mod process;
