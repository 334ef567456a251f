//! Plumbing every role shares that knows nothing of HTTP, so that the store, the relay and
//! the consumers link no web framework (`keh-http` holds the HTTP edge):
//!
//! - [`telemetry`]: the W3C trace context carried across processes (HTTP headers, event
//!   metadata, NATS headers);
//! - [`metrics`]: database-operation timings and the connection pool's gauges;
//! - [`health`]: dependency checks and the readiness report they add up to;
//! - [`shutdown`]: SIGINT/SIGTERM as a cancellation token.

pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
