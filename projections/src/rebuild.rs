//! Blue/green rebuild: replay the event store into fresh tables, then swap them in.
//!
//! The new tables are built in schema `read_model_next` while the live projector and the
//! query API keep using `read_model`. The swap runs in one transaction holding the
//! [`SWAP_LOCK`](crate::projector::SWAP_LOCK) exclusively (so no projector batch straddles
//! it): it applies whatever was committed since the bulk replay, renames the schemas and
//! drops the old one. Readers see the old tables until the commit and the new ones after.
//! Events committed later reach the new tables through the projector as usual (duplicates
//! are skipped by version, gaps repaired from the store).

use keh_store::outbox::{self, Cursor};
use sqlx::{Acquire, PgPool};

use crate::apply::{self, Applied, ApplyError, Fact, Schema};
use crate::projector::SWAP_LOCK;

const NEXT: &str = "read_model_next";
const OLD: &str = "read_model_old";
const CHUNK: i64 = 2_000;

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub listings: i64,
}

/// Rebuilds every read model from the event store and swaps it in. `progress(done, total)`
/// is called after each chunk.
pub async fn rebuild(
    pool: &PgPool,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, ApplyError> {
    let next = Schema::new(NEXT)
        .ok_or_else(|| ApplyError::Database(sqlx::Error::Protocol("schema name".into())))?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {NEXT} CASCADE"))
        .execute(pool)
        .await?;
    sqlx::query("SELECT keh_create_read_model($1)")
        .bind(NEXT)
        .execute(pool)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);

    let mut cursor = Cursor::START;
    let mut done = 0_u64;
    loop {
        let mut tx = pool.begin().await?;
        let (moved, count) = replay_chunk(&mut tx, &next, cursor).await?;
        tx.commit().await?;
        if count == 0 {
            break;
        }
        cursor = moved;
        done += count;
        progress(done, total.max(done));
    }

    // Fresh tables have no planner statistics until autovacuum gets to them, and without
    // them PostgreSQL guesses: searches on the swapped-in tables took a second instead of a
    // millisecond. Analyze them before readers see them.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = $1",
    )
    .bind(NEXT)
    .fetch_all(pool)
    .await?;
    if !tables.is_empty() {
        sqlx::query(&format!("ANALYZE {}", tables.join(", ")))
            .execute(pool)
            .await?;
    }

    // The swap: catch up with what was committed meanwhile, then rename, atomically.
    let mut connection = pool.acquire().await?;
    let mut tx = connection.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SWAP_LOCK)
        .execute(&mut *tx)
        .await?;
    loop {
        let (moved, count) = replay_chunk(&mut tx, &next, cursor).await?;
        if count == 0 {
            break;
        }
        cursor = moved;
        done += count;
    }
    sqlx::query(&format!(
        "ALTER SCHEMA {live} RENAME TO {OLD}",
        live = crate::LIVE_SCHEMA
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "ALTER SCHEMA {NEXT} RENAME TO {live}",
        live = crate::LIVE_SCHEMA
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("DROP SCHEMA {OLD} CASCADE"))
        .execute(&mut *tx)
        .await?;
    let listings: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.listings",
        crate::LIVE_SCHEMA
    ))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    progress(done, done);
    Ok(Rebuilt {
        events: done,
        listings,
    })
}

/// Applies the next chunk of events in global order; returns the new cursor and the count.
async fn replay_chunk(
    connection: &mut sqlx::PgConnection,
    schema: &Schema,
    after: Cursor,
) -> Result<(Cursor, u64), ApplyError> {
    let events = outbox::read_after(&mut *connection, after, CHUNK).await?;
    let Some(last) = events.last().map(|e| e.cursor) else {
        return Ok((after, 0));
    };
    let count = u64::try_from(events.len()).unwrap_or(0);
    let facts: Vec<Fact> = events.into_iter().map(Fact::from).collect();
    let _: Applied = apply::apply(connection, schema, facts).await?;
    Ok((last, count))
}
