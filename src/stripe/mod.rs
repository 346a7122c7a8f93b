//! Reporting to Stripe through a thin typed client over reqwest (see docs/stripe.md:
//! "Why not async-stripe"). The policy ([`retry`]) is pure; [`crate::reporter`]
//! drains the outbox.

pub mod client;
pub mod events;
pub mod gate;
pub mod limits;
pub mod meter_stream;
pub mod meters;
pub mod mode;
pub mod preflight;
pub mod rejections;
pub mod retry;
pub mod too_old;
pub mod usage_records;

pub use client::{Ack, ApiError, MeterEvent, StripeClient, StripeError};
pub use gate::{PreflightGate, PreflightGates};
pub use rejections::Rejections;
