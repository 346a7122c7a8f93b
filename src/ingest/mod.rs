//! The HTTP receiver: `POST /webhooks/{provider}/{tenant}`, `GET /healthz`,
//! `GET /readyz`, `GET /metrics`.

mod errors;
mod routes;
mod writer;

pub use routes::{router, IngestState};
pub use writer::{DeliverySink, DeliveryWriter};
