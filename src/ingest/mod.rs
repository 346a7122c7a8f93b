//! The HTTP receiver: `POST /webhooks/{provider}/{tenant}` on the public
//! listener; `GET /healthz`, `GET /readyz`, `GET /metrics` on the admin one.

mod errors;
pub mod refusals;
mod routes;
mod writer;

pub use routes::{admin_router, router, IngestState};
pub use writer::{DeliverySink, DeliveryWriter};
