//! Plumbing every role shares, so that every service is observable and fails the same way:
//!
//! - [`problem`]: RFC 9457 `application/problem+json` errors, and the catch-all that turns
//!   any other error response (the framework's own rejections included) into one;
//! - [`json`]: the JSON body extractor that names the offending field;
//! - [`telemetry`]: JSON logs;
//! - [`metrics`]: a per-application Prometheus registry and HTTP metrics by route template;
//! - [`health`]: liveness, readiness and dependency status;
//! - [`http`]: the common HTTP stack (limits, timeouts, panics, fallbacks) and `serve`;
//! - [`shutdown`]: SIGINT/SIGTERM as a cancellation token.

pub mod health;
pub mod http;
pub mod json;
pub mod metrics;
pub mod problem;
pub mod shutdown;
pub mod telemetry;

pub use problem::{FieldError, Problem};
