//! Read models built from the event stream.
//!
//! - [`apply`]: applies events to the read-model tables idempotently and in order per
//!   listing (duplicates skipped, gaps repaired from the event store);
//! - [`projector`]: the projector role: one durable JetStream consumer per partition, owned
//!   by one replica at a time, acknowledged only after the batch's transaction commits;
//! - [`rebuild`]: replays the event store into fresh tables and swaps them in atomically.
//!
//! **Adding a projection**: add its tables to `keh_create_read_model` (a new migration that
//! replaces the function, and creates the tables in `read_model`), teach [`apply`] to fill
//! them, then run `kubeestatehub projections rebuild` once: the rebuild fills the new tables
//! from the whole history and swaps them in with the rest.

pub mod apply;
pub mod projector;
pub mod rebuild;

/// The schema queries read from.
pub const LIVE_SCHEMA: &str = "read_model";
