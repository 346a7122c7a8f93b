//! `outcome-meter statement`: every billed outcome of a period with its evidence,
//! every resolution not billed and why, and totals that match what Stripe received.
//!
//! The model ([`Statement`] and its lines, `model.rs`) is made from the store by
//! [`build`] (`build.rs`) and only formatted by its renderers: the page
//! ([`Statement::to_html`], `html.rs`), the table ([`Statement::to_csv`],
//! `csv.rs`) and the JSON output (its `Serialize`).

mod build;
mod csv;
mod html;
mod model;

pub use build::build;
pub use html::escape;
pub use model::{BilledLine, EvidenceEvent, MeterTotals, NotBilledLine, ReversalLine, Statement};
