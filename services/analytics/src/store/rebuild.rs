//! The analytics rebuild: every derived table from the event store, in one transaction.

use chrono::NaiveDate;
use keh_projections::apply::ApplyError;
use keh_store::outbox::{self, Cursor};
use sqlx::PgPool;

use super::recompute::recompute_all;
use super::{ANALYTICS_LOCK, AnalyticsError, apply_facts};

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub listings: i64,
    pub series: i64,
}

/// Deletes every derived analytics table and rebuilds it from the event store, in one
/// transaction: readers see the old figures until it commits. Report jobs are kept.
/// `partitions`: the stream's partition count (events are replayed as the stream carries
/// them).
pub async fn rebuild(
    pool: &PgPool,
    today: NaiveDate,
    partitions: u32,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, AnalyticsError> {
    let placement = outbox::Placement::Partitions(partitions);
    const CHUNK: i64 = 5_000;
    let total = keh_store::outbox::event_count(pool).await?;
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", ANALYTICS_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "TRUNCATE analytics.listing_facts, analytics.dirty_series, analytics.dirty_marks, analytics.series, analytics.market_metrics",
    )
    .execute(&mut *tx)
    .await?;
    let mut cursor = Cursor::START;
    let mut done = 0_u64;
    loop {
        let events = outbox::read_after(&mut *tx, cursor, CHUNK, placement)
            .await
            .map_err(ApplyError::from)?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            break;
        };
        cursor = last;
        done += events.len() as u64;
        apply_facts(&mut tx, events.into_iter().map(|e| e.envelope).collect()).await?;
        progress(done, total.max(done));
    }
    sqlx::query!(
        "INSERT INTO analytics.clock (today) VALUES ($1) ON CONFLICT (id) DO UPDATE SET today = $1",
        today,
    )
    .execute(&mut *tx)
    .await?;
    recompute_all(&mut tx, today).await?;
    let listings =
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM analytics.listing_facts"#)
            .fetch_one(&mut *tx)
            .await?;
    let series = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM analytics.series"#)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Rebuilt {
        events: done,
        listings,
        series,
    })
}
