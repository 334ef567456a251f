//! The analytics worker: market facts per listing, market metrics per area × property type
//! × period, market reports, and business metrics for Prometheus.
//!
//! - [`facts`]: what one listing contributes to the market, folded from its events;
//! - [`compute`]: the metric definitions, pure;
//! - [`store`]: the analytics tables (applier of the analytics consumer group, dirty series,
//!   recomputation, rebuild, the reads the query API serves);
//! - [`reports`]: report jobs built in the background, surviving restarts;
//! - [`worker`]: the analytics role (consumer group, recomputation loop, clock, reports,
//!   business metrics).

pub mod compute;
pub mod facts;
pub mod reports;
pub mod store;
pub mod worker;
