//! The PostgreSQL event store: the only crate that writes the `events` table.
//!
//! - [`MIGRATOR`]: the schema (postgres-es tables plus outbox columns, idempotency keys,
//!   `ListingId` reservations and relay checkpoints);
//! - [`Store`]: executes Listing commands through cqrs-es/postgres-es with optimistic
//!   concurrency, snapshots, idempotency and `If-Match` versions;
//! - [`outbox`]: reads committed events in global order, never skipping an in-flight one.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub mod command;
pub mod outbox;

pub use command::{Access, ExecuteError, Executed, IdempotencyRecord, Store};

/// The schema migrations, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before it is refused (503), not queued for ever.
    pub acquire_timeout: Duration,
    /// `application_name` shown in `pg_stat_activity`.
    pub application_name: String,
}

/// Opens a pool lazily: a service starts (and reports not-ready) while PostgreSQL is down.
pub fn connect_lazy(url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.application_name(&settings.application_name);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

/// Applies pending migrations (concurrent callers serialize on sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
