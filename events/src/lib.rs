//! The public event contract of KubeEstateHub.
//!
//! Everything an outside subscriber relies on lives here and nowhere else:
//! - [`ids`]: `ListingKey` and `Sequence`, valid by construction;
//! - [`reso`]: RESO Data Dictionary vocabulary (status, property type, change type, money);
//! - [`listing`]: the listing events (the payloads stored in PostgreSQL and published);
//! - [`envelope`]: the published envelope (ids, sequence, timestamps, actor, correlation) and headers;
//! - [`subject`]: the NATS subject layout, listing-key encoding and partitioning;
//! - [`schema`]: JSON Schema generated from these types (checked into `docs/schema/`);
//! - [`public`]: what public surfaces (the public stream, the live feed, anonymous reads)
//!   show instead of who acted and of media URLs that are not safe to follow.
//!
//! This crate does no I/O: it is types, their serde form and pure functions (and, with the
//! `sqlx` feature, how its identifiers are PostgreSQL column values).

pub mod envelope;
pub mod ids;
pub mod listing;
pub mod public;
pub mod reso;
pub mod schema;
pub mod subject;

pub use envelope::{EventEnvelope, Metadata};
pub use ids::{ListingKey, Sequence};
pub use listing::{ListingEvent, SCHEMA_VERSION};
