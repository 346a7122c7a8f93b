//! Metronome as a billing sink (issue 15): a thin typed client over reqwest
//! ([`client`]), the usage event and its builder ([`event`]), the pure rules for
//! batching, retries, the 34-day window and clawback ([`rules`]), and the
//! settings ([`settings`]). The reporter's `metronome` sink applies them
//! (`src/reporter/metronome.rs`); see `docs/metronome.md`.

pub mod client;
pub mod event;
pub mod rules;
pub mod settings;

pub use client::{
    Ack, MetricRef, MetronomeClient, MetronomeError, UsageAggregate, UsageQuery, WindowSize,
};
pub use event::{OutcomeInput, UsageEvent};
pub use settings::{MetricAggregation, MetronomeSettings};
