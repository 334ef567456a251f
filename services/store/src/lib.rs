//! The PostgreSQL event store: the only crate that writes the `events` table.
//!
//! - [`MIGRATOR`]: the schema (postgres-es tables plus outbox columns, idempotency keys,
//!   `ListingId` reservations and relay checkpoints);
//! - [`Store`]: executes Listing commands through cqrs-es/postgres-es with optimistic
//!   concurrency, snapshots, idempotency and `If-Match` versions;
//! - [`outbox`]: reads committed events in global order, never skipping an in-flight one.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

mod append;
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
        // sqlx checks every connection with a round trip before lending it out. Under load
        // that doubled the round trips of a request (a fifth of the query API's CPU went to
        // these pings, measured with perf). A connection returned moments ago is checked by
        // its next statement (a broken one is closed and the request gets a 503, as when the
        // server fails mid-statement); one that sat idle long enough for a restarted server or
        // a proxy's idle timeout to have cut it is still checked first, and replaced if dead.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// How long a pooled connection may sit idle before it is checked with a round trip when
/// next lent out.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Applies pending migrations (concurrent callers serialize on sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

#[cfg(test)]
mod tests {
    use super::MIGRATOR;

    /// Statements that break the release still running during a rolling update.
    const CONTRACTING: [&str; 6] = [
        "DROP TABLE",
        "DROP COLUMN",
        "DROP VIEW",
        "RENAME COLUMN",
        "SET NOT NULL",
        "RENAME TO",
    ];

    /// The first contracting statement of `sql` not justified by a `-- contract:` comment
    /// right above it.
    fn unjustified_contraction(sql: &str) -> Option<String> {
        let mut justified = false;
        for line in sql.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with("--") {
                justified = trimmed.starts_with("-- contract:");
                continue;
            }
            let upper = trimmed.to_uppercase();
            // Renaming a function is an expansion when the old name is recreated at once
            // (0003); a column's type change is a contraction.
            let contracting = !upper.starts_with("ALTER FUNCTION")
                && (CONTRACTING.iter().any(|s| upper.contains(s))
                    || (upper.contains("ALTER COLUMN") && upper.contains(" TYPE ")));
            if contracting && !justified {
                return Some(trimmed.to_owned());
            }
            if !trimmed.is_empty() {
                justified = false;
            }
        }
        None
    }

    /// Migrations expand, then contract: a migration runs while the previous release still
    /// serves, so it may add (tables, columns, defaults, functions) but not remove, rename
    /// or tighten what that release uses. A contracting statement is allowed only when the
    /// comment right above it starts with `-- contract:` and says which earlier release
    /// stopped using the object.
    #[test]
    fn migrations_only_expand_unless_a_contract_step_says_why() {
        for migration in MIGRATOR.iter() {
            assert_eq!(
                unjustified_contraction(&migration.sql),
                None,
                "migration {} ({}) contracts the schema without a `-- contract:` comment",
                migration.version,
                migration.description
            );
        }
        assert!(unjustified_contraction("ALTER TABLE t DROP COLUMN c;").is_some());
        assert!(unjustified_contraction("ALTER TABLE t ALTER COLUMN c TYPE bigint;").is_some());
        assert!(unjustified_contraction("ALTER TABLE t RENAME TO u;").is_some());
        assert!(
            unjustified_contraction(
                "-- contract: release 0.3 stopped reading c\nALTER TABLE t DROP COLUMN c;"
            )
            .is_none()
        );
        assert!(
            unjustified_contraction("-- contract: x\n\nSELECT 1;\nALTER TABLE t DROP COLUMN c;")
                .is_some(),
            "a justification covers the statement right below it only"
        );
        assert!(unjustified_contraction("ALTER TABLE t ADD COLUMN c text;").is_none());
    }
}
