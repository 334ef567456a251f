//! Blue/green rebuild: replay the event store into fresh tables, then swap them in.
//!
//! The new tables are built in schema `read_model_next` while the live projector and the
//! query API keep using `read_model`. The swap runs in one transaction holding the
//! [`SWAP_LOCK`](crate::projector::SWAP_LOCK) exclusively (so no projector batch straddles
//! it): it applies whatever was committed since the bulk replay, renames the schemas and
//! drops the old one. Readers see the old tables until the commit and the new ones after.
//! Events committed later reach the new tables through the projector as usual (duplicates
//! are skipped by version, gaps repaired from the store).
//!
//! The bulk replay is a load, not a stream of updates: the fresh tables get their secondary
//! indexes and their search words (`listing_text`, kept by statement triggers on the live
//! tables) once it is done, built in one pass each rather than maintained row by row. It
//! reads the next chunk of events while the current one is applied, and applies each chunk
//! on up to [`APPLIERS`] connections at once, split by listing (a listing's events stay in
//! order on one of them). The catch-up in the swap runs with everything in place.

use futures::StreamExt as _;
use keh_events::EventEnvelope;
use keh_store::outbox::{self, Cursor, Placement};
use sqlx::{Acquire, PgPool};
use tokio::sync::mpsc;

use crate::apply::{self, Applied, ApplyError, Schema};
use crate::projector::SWAP_LOCK;

const NEXT: &str = "read_model_next";
const OLD: &str = "read_model_old";
/// Events per chunk of the bulk replay (the catch-up in the swap reads as many at a time).
const CHUNK: i64 = 5_000;
/// Connections applying one chunk at once, each on its own listings (fewer when the pool is
/// smaller): the replay waits on commits more than on either processor, and at 200,000
/// listings four of them on two cores replayed 1.3-1.4x faster than two (bench/RESULTS.md).
const APPLIERS: usize = 4;
/// The statement triggers that keep `listing_text` (migration 0011): off during the load,
/// which fills the table in one statement at the end.
const TEXT_TRIGGERS: [&str; 2] = ["listings_text_inserted", "listings_text_updated"];

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub listings: i64,
}

/// Rebuilds every read model from the event store and swaps it in. `partitions`: the
/// stream's partition count (each event is replayed as the envelope the stream carries).
/// `progress(done, total)` is called after each chunk.
pub async fn rebuild(
    pool: &PgPool,
    partitions: u32,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, ApplyError> {
    let next = Schema::new(NEXT)
        .ok_or_else(|| ApplyError::Database(sqlx::Error::Protocol("schema name".into())))?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {NEXT} CASCADE"))
        .execute(pool)
        .await?;
    sqlx::query!("SELECT keh_create_read_model($1)", NEXT)
        .execute(pool)
        .await?;
    let total = keh_store::outbox::event_count(pool).await?;

    let deferred = Deferred::take(pool, &next).await?;
    let mut done = 0_u64;
    let phase = std::time::Instant::now();
    let placement = Placement::Partitions(partitions);
    let mut cursor = load(pool, &next, placement, |count| {
        done += count;
        progress(done, total.max(done));
    })
    .await?;
    tracing::info!(
        events = done,
        seconds = phase.elapsed().as_secs_f64(),
        "rebuild: events replayed"
    );
    let phase = std::time::Instant::now();
    deferred.restore(pool, &next).await?;
    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        "rebuild: indexes and search words built"
    );
    let phase = std::time::Instant::now();

    // Fresh tables have no planner statistics until autovacuum gets to them, and without
    // them PostgreSQL guesses: searches on the swapped-in tables took a second instead of a
    // millisecond. Analyze them before readers see them.
    let tables = sqlx::query_scalar!(
        r#"SELECT format('%I.%I', schemaname, tablename) AS "table!"
             FROM pg_tables WHERE schemaname = $1"#,
        NEXT,
    )
    .fetch_all(pool)
    .await?;
    if !tables.is_empty() {
        sqlx::query(&format!("ANALYZE {}", tables.join(", ")))
            .execute(pool)
            .await?;
    }

    tracing::info!(
        seconds = phase.elapsed().as_secs_f64(),
        "rebuild: tables analyzed"
    );

    // The swap: catch up with what was committed meanwhile, then rename, atomically.
    let mut connection = pool.acquire().await?;
    let mut tx = connection.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", SWAP_LOCK)
        .execute(&mut *tx)
        .await?;
    loop {
        let (moved, count) = replay_chunk(&mut tx, &next, cursor, placement).await?;
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
    let listings = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM read_model.listings"#)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    progress(done, done);
    Ok(Rebuilt {
        events: done,
        listings,
    })
}

/// The bulk replay into `schema`: one task reads the chunks in global order while the
/// previous one is applied. Returns the cursor of the last event replayed.
async fn load(
    pool: &PgPool,
    schema: &Schema,
    placement: Placement,
    mut loaded: impl FnMut(u64),
) -> Result<Cursor, ApplyError> {
    let (chunks, mut ready) = mpsc::channel::<Result<(Cursor, Vec<EventEnvelope>), ApplyError>>(1);
    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut cursor = Cursor::START;
            loop {
                let read: Result<_, ApplyError> = async {
                    let mut connection = pool.acquire().await?;
                    Ok(outbox::read_after(&mut *connection, cursor, CHUNK, placement).await?)
                }
                .await;
                let chunk = match read {
                    Ok(events) if events.is_empty() => return,
                    Ok(events) => {
                        cursor = events.last().map_or(cursor, |e| e.cursor);
                        Ok((cursor, events.into_iter().map(|e| e.envelope).collect()))
                    }
                    Err(error) => Err(error),
                };
                let failed = chunk.is_err();
                // The loader stopped (it failed): nothing more to read for.
                if chunks.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        })
    };
    // One connection is the reader's.
    let appliers = usize::try_from(pool.options().get_max_connections())
        .unwrap_or(1)
        .saturating_sub(1)
        .clamp(1, APPLIERS);
    let mut last = Cursor::START;
    while let Some(chunk) = ready.recv().await {
        let (cursor, facts) = chunk?;
        let count = facts.len() as u64;
        // A listing's events all go to the same applier, in order; the appliers share no
        // row, so their transactions never wait for one another.
        let mut parts: Vec<Vec<EventEnvelope>> = (0..appliers).map(|_| Vec::new()).collect();
        for fact in facts {
            let hash = keh_events::subject::fnv1a32(fact.listing_key.as_str().as_bytes());
            let part = usize::try_from(hash).unwrap_or_default() % appliers;
            parts[part].push(fact);
        }
        futures::stream::iter(parts.into_iter().filter(|p| !p.is_empty()))
            .map(|part| async move {
                let mut tx = pool.begin().await?;
                let _: Applied = apply::apply(&mut tx, schema, part).await?;
                tx.commit().await?;
                Ok::<(), ApplyError>(())
            })
            .buffer_unordered(appliers)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        last = cursor;
        loaded(count);
    }
    reader
        .await
        .map_err(|e| ApplyError::Database(sqlx::Error::Protocol(e.to_string())))?;
    Ok(last)
}

/// What the fresh tables get only once the bulk replay is done: their secondary indexes
/// (whatever `keh_create_read_model` made; the unique ones stay, as the replay's upserts
/// need them) and their search words.
struct Deferred {
    /// (table, definition) of each index dropped.
    indexes: Vec<(String, String)>,
}

impl Deferred {
    /// Drops the secondary indexes of `schema` (remembering their definitions) and turns
    /// the search-word triggers off.
    async fn take(pool: &PgPool, schema: &Schema) -> Result<Self, ApplyError> {
        let found = sqlx::query!(
            r#"SELECT i.indexrelid::regclass::text AS "name!", t.relname::text AS "table!",
                      pg_get_indexdef(i.indexrelid) AS "definition!"
                 FROM pg_index i
                 JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                WHERE n.nspname = $1 AND NOT i.indisunique
                ORDER BY 1"#,
            schema.as_str(),
        )
        .fetch_all(pool)
        .await?;
        let mut indexes = Vec::with_capacity(found.len());
        for row in found {
            let (name, table, definition) = (row.name, row.table, row.definition);
            sqlx::query(&format!("DROP INDEX {name}"))
                .execute(pool)
                .await?;
            indexes.push((table, definition));
        }
        let s = schema.as_str();
        for trigger in TEXT_TRIGGERS {
            sqlx::query(&format!(
                "ALTER TABLE {s}.listings DISABLE TRIGGER {trigger}"
            ))
            .execute(pool)
            .await?;
        }
        Ok(Self { indexes })
    }

    /// Fills `listing_text` from the loaded rows and builds its indexes, while the other
    /// tables' indexes are built beside it one at a time; then turns the search-word
    /// triggers back on.
    async fn restore(self, pool: &PgPool, schema: &Schema) -> Result<(), ApplyError> {
        let s = schema.as_str();
        let (text_indexes, others): (Vec<_>, Vec<_>) = self
            .indexes
            .into_iter()
            .partition(|(table, _)| table == "listing_text");
        let text = async {
            sqlx::query(&format!(
                "INSERT INTO {s}.listing_text (listing_key, search)
                 SELECT listing_key, to_tsvector('simple', public.keh_listing_words(state)) FROM {s}.listings"
            ))
            .execute(pool)
            .await?;
            for (_, definition) in text_indexes {
                sqlx::query(&definition).execute(pool).await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        let others = async {
            for (_, definition) in others {
                sqlx::query(&definition).execute(pool).await?;
            }
            Ok::<(), sqlx::Error>(())
        };
        futures::try_join!(text, others)?;
        for trigger in TEXT_TRIGGERS {
            sqlx::query(&format!(
                "ALTER TABLE {s}.listings ENABLE TRIGGER {trigger}"
            ))
            .execute(pool)
            .await?;
        }
        Ok(())
    }
}

/// Applies the next chunk of events in global order; returns the new cursor and the count.
async fn replay_chunk(
    connection: &mut sqlx::PgConnection,
    schema: &Schema,
    after: Cursor,
    placement: Placement,
) -> Result<(Cursor, u64), ApplyError> {
    let events = outbox::read_after(&mut *connection, after, CHUNK, placement).await?;
    let Some(last) = events.last().map(|e| e.cursor) else {
        return Ok((after, 0));
    };
    let count = events.len() as u64;
    let facts: Vec<EventEnvelope> = events.into_iter().map(|e| e.envelope).collect();
    let _: Applied = apply::apply(connection, schema, facts).await?;
    Ok((last, count))
}
