//! The HTTP edge every role shares, so that every API fails and is observed the same way:
//!
//! - [`docs`]: the OpenAPI document derived from the routers and the extractors;
//! - [`problem`]: RFC 9457 `application/problem+json` errors, and the catch-all that turns
//!   any other error response (the framework's own rejections included) into one;
//! - [`json`]: the JSON body extractor that names the offending field;
//! - [`metrics`]: HTTP metrics by route template, and the `/metrics` page;
//! - [`health`]: the liveness and readiness endpoints over `keh_platform::health`;
//! - [`stack`]: the common HTTP stack (limits, timeouts, panics, fallbacks, request spans
//!   and logs) and `serve`.
//!
//! Only the crates that serve HTTP depend on this one (ARCHITECTURE.md, "Layers").

pub mod docs;
pub mod health;
pub mod json;
pub mod metrics;
pub mod problem;
pub mod stack;

pub use problem::{FieldError, Problem};
pub use stack::{HttpSettings, OpsToken, app, none_match, serve};
