//! The HTTP receiver: `POST /webhooks/{provider}/{tenant}` and `POST /stripe/events`
//! on the public listener; `GET /healthz`, `GET /readyz`, `GET /metrics` on the admin one.

mod errors;
pub mod refusals;
mod routes;
mod stripe_events;
mod writer;

pub use routes::{admin_router, router, IngestState};
pub use stripe_events::StripeEndpoint;
pub use writer::{DeliverySink, DeliveryWriter};
