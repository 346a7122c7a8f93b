//! Metronome as a billing sink (issue 15): a thin typed client over reqwest
//! ([`client`]), the usage event and its builder ([`event`]), the pure rules for
//! batching, retries, the 34-day window and clawback ([`rules`]), and the
//! settings ([`settings`]). Not yet wired into the reporter: see
//! `docs/metronome.md` for what the sink has to do with these.

pub mod client;
pub mod event;
pub mod rules;
pub mod settings;

pub use client::{
    Ack, MetricRef, MetronomeClient, MetronomeError, UsageAggregate, UsageQuery, WindowSize,
};
pub use event::{OutcomeInput, UsageEvent};
pub use settings::{MetricAggregation, MetronomeSettings};
