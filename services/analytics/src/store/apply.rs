//! The analytics consumer group's applier: a batch's events folded into the listings'
//! market facts, and the series they change marked dirty, in the batch's transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use keh_events::listing::ListingEvent;
use keh_events::{EventEnvelope, ListingKey, Sequence};
use keh_projections::apply::{self, Applied, ApplyError};
use keh_projections::projector::Applier;
use sqlx::PgConnection;

use super::{ANALYTICS_LOCK, SeriesKey, series_of};
use crate::facts::MarketFacts;

/// The analytics consumer group's applier.
#[derive(Clone, Copy, Debug, Default)]
pub struct MarketApplier;

impl Applier for MarketApplier {
    async fn apply(
        &self,
        connection: &mut PgConnection,
        facts: Vec<EventEnvelope>,
    ) -> Result<Applied, ApplyError> {
        keh_projections::projector::hold_shared(connection, ANALYTICS_LOCK).await?;
        apply_facts(connection, facts).await
    }
}

/// Folds `events` into the listings' market facts (duplicates skipped, gaps repaired from
/// the event store) and marks the series they change dirty, in the caller's transaction.
pub async fn apply_facts(
    connection: &mut PgConnection,
    events: Vec<EventEnvelope>,
) -> Result<Applied, ApplyError> {
    let mut outcome = Applied::default();
    let by_listing = apply::by_listing(events, &mut outcome);
    if by_listing.is_empty() {
        return Ok(outcome);
    }
    let keys: Vec<&ListingKey> = by_listing.keys().collect();
    // As text, parsed straight into the typed facts: a `serde_json::Value` tree of every
    // listing's timeline first was the analytics worker's largest cost under load (perf).
    let rows = sqlx::query!(
        r#"SELECT listing_key AS "listing_key: ListingKey", version AS "version: Sequence",
                  facts::text AS "facts!"
             FROM analytics.listing_facts
            WHERE listing_key = ANY($1) ORDER BY listing_key FOR UPDATE"#,
        &keys as _,
    )
    .fetch_all(&mut *connection)
    .await?
    .into_iter()
    .map(|r| (r.listing_key, r.version, r.facts));
    let mut current: HashMap<ListingKey, (Sequence, String)> = rows
        .into_iter()
        .map(|(key, version, facts)| (key, (version, facts)))
        .collect();

    let mut written: Vec<(ListingKey, Sequence, MarketFacts)> = Vec::new();
    let mut marks: BTreeMap<SeriesKey, NaiveDate> = BTreeMap::new();
    for (key, events) in by_listing {
        let (version, mut facts) = match current.remove(&key) {
            Some((version, value)) => (
                version.get(),
                Some(
                    serde_json::from_str::<MarketFacts>(&value)
                        .map_err(|e| ApplyError::State(key.clone(), e))?,
                ),
            ),
            None => (0, None),
        };
        let before = facts.as_ref().map(series_of).unwrap_or_default();
        let mut dirty: Option<NaiveDate> = None;
        let last = apply::in_order(connection, &key, version, events, &mut outcome, |event| {
            fold(&key, &mut facts, &event.event, &mut dirty)
        })
        .await?;
        let (Some(version), Some(facts)) = (last, facts) else {
            continue;
        };
        if let Some(date) = dirty {
            for series in before.into_iter().chain(series_of(&facts)) {
                let slot = marks.entry(series).or_insert(date);
                *slot = (*slot).min(date);
            }
        }
        written.push((key, version, facts));
    }
    write_facts(connection, &written).await?;
    mark_dirty(connection, &marks).await?;
    Ok(outcome)
}

fn fold(
    key: &ListingKey,
    facts: &mut Option<MarketFacts>,
    event: &ListingEvent,
    dirty: &mut Option<NaiveDate>,
) -> Result<(), ApplyError> {
    let date = match (facts.as_mut(), event) {
        (None, ListingEvent::ListingCreated(created)) => {
            let new = MarketFacts::created(created);
            let first = new.first_date();
            *facts = Some(new);
            Some(first)
        }
        (Some(facts), event) => facts.apply(event),
        // The first event of a listing is always its creation.
        (None, _) => {
            return Err(ApplyError::Missing {
                listing: key.clone(),
                from: 1,
                to: 1,
            });
        }
    };
    if let Some(date) = date {
        *dirty = Some(dirty.map_or(date, |d| d.min(date)));
    }
    Ok(())
}

async fn write_facts(
    connection: &mut PgConnection,
    rows: &[(ListingKey, Sequence, MarketFacts)],
) -> Result<(), ApplyError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(rows.len());
    let mut versions = Vec::with_capacity(rows.len());
    let mut types = Vec::with_capacity(rows.len());
    let mut cities = Vec::with_capacity(rows.len());
    let mut postal_codes = Vec::with_capacity(rows.len());
    let mut subdivisions = Vec::with_capacity(rows.len());
    let mut first_dates = Vec::with_capacity(rows.len());
    let mut last_dates = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(rows.len());
    for (key, version, facts) in rows {
        keys.push(key);
        versions.push(*version);
        types.push(facts.property_type.as_str());
        cities.push(facts.city.as_deref());
        postal_codes.push(facts.postal_code.as_deref());
        subdivisions.push(facts.subdivision.as_deref());
        first_dates.push(facts.first_date());
        last_dates.push(facts.last_date());
        values.push(serde_json::to_string(facts).map_err(|e| ApplyError::State(key.clone(), e))?);
    }
    sqlx::query!(
        "INSERT INTO analytics.listing_facts
             (listing_key, version, property_type, city, postal_code, subdivision, first_date, last_date, facts)
         SELECT k, v, t, c, p, s, fd, ld, f::jsonb
           FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::date[], $8::date[], $9::text[]) AS r(k, v, t, c, p, s, fd, ld, f)
         ON CONFLICT (listing_key) DO UPDATE SET
             version = EXCLUDED.version, property_type = EXCLUDED.property_type, city = EXCLUDED.city,
             postal_code = EXCLUDED.postal_code, subdivision = EXCLUDED.subdivision,
             first_date = EXCLUDED.first_date, last_date = EXCLUDED.last_date, facts = EXCLUDED.facts,
             updated_at = now()
         WHERE analytics.listing_facts.version < EXCLUDED.version",
        keys as _,
        versions as _,
        &types as &[&str],
        cities as _,
        postal_codes as _,
        subdivisions as _,
        &first_dates,
        last_dates as _,
        &values,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Marks series dirty from a date: appended to `dirty_marks`, which no two batches contend
/// on (the worker folds them into `dirty_series`, [`fold_marks`]).
pub async fn mark_dirty(
    connection: &mut PgConnection,
    marks: &BTreeMap<SeriesKey, NaiveDate>,
) -> Result<(), sqlx::Error> {
    if marks.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = marks.keys().map(|k| k.kind.as_str()).collect();
    let areas: Vec<&str> = marks.keys().map(|k| k.area.as_str()).collect();
    let types: Vec<&str> = marks.keys().map(|k| k.property_type.as_str()).collect();
    let dates: Vec<NaiveDate> = marks.values().copied().collect();
    sqlx::query!(
        "INSERT INTO analytics.dirty_marks (area_kind, area, property_type, dirty_from)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::date[])",
        &kinds as &[&str],
        &areas as &[&str],
        &types as &[&str],
        &dates,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Moves the appended marks into `dirty_series` (one row per series, its earliest date, a
/// new generation when marked again), locking the series' rows in key order so two
/// folders never deadlock. Marks committed after this statement began wait for the next.
pub async fn fold_marks(executor: impl sqlx::PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"WITH moved AS (
             DELETE FROM analytics.dirty_marks
             RETURNING area_kind, area, property_type, dirty_from)
         INSERT INTO analytics.dirty_series (area_kind, area, property_type, dirty_from)
         SELECT area_kind, area, property_type, min(dirty_from) FROM moved
          GROUP BY area_kind, area, property_type
          ORDER BY area_kind COLLATE "C", area COLLATE "C", property_type COLLATE "C"
         ON CONFLICT (area_kind, area, property_type)
         DO UPDATE SET dirty_from = LEAST(analytics.dirty_series.dirty_from, EXCLUDED.dirty_from),
                       generation = nextval('analytics.dirty_generation')"#,
    )
    .execute(executor)
    .await?;
    Ok(())
}
