//! The analytics tables: the analytics consumer group's applier (market facts and dirty
//! series, in the batch's transaction), the recomputation of dirty series, the clock, the
//! rebuild, and the reads the query API and the reports serve.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use futures::TryStreamExt;
use keh_events::listing::ListingEvent;
use keh_projections::apply::{Applied, ApplyError, Fact};
use keh_projections::projector::Applier;
use keh_store::outbox::{self, Cursor};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::compute::{self, Grain, PeriodMetrics};
use crate::facts::{ALL_TYPES, AreaKind, MARKET, MarketFacts};

/// How many years back market figures are computed.
pub const HISTORY_YEARS: u32 = 30;

/// Taken shared by every analytics batch and exclusively by a rebuild, so that a rebuild
/// sees no batch half-way.
pub const ANALYTICS_LOCK: i64 = 0x6b65_685f_616e_616c;

/// A series: one area and one property type (or every type, [`ALL_TYPES`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub kind: AreaKind,
    pub area: String,
    pub property_type: String,
}

/// Ordered as the table's key in byte order (`COLLATE "C"`): every writer of
/// `dirty_series` locks its rows in this order, so two writers never deadlock.
impl Ord for SeriesKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.kind.as_str(), &self.area, &self.property_type).cmp(&(
            other.kind.as_str(),
            &other.area,
            &other.property_type,
        ))
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SeriesKey {
    pub fn market() -> Self {
        Self {
            kind: AreaKind::Market,
            area: MARKET.to_owned(),
            property_type: ALL_TYPES.to_owned(),
        }
    }
}

/// The series a listing's facts count in.
pub fn series_of(facts: &MarketFacts) -> Vec<SeriesKey> {
    let mut keys = Vec::new();
    for (kind, area) in facts.areas() {
        for property_type in [facts.property_type.as_str(), ALL_TYPES] {
            keys.push(SeriesKey {
                kind,
                area: area.clone(),
                property_type: property_type.to_owned(),
            });
        }
    }
    keys
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("listing {0}: stored market facts cannot be read: {1}")]
    Facts(String, serde_json::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// The analytics consumer group's applier.
#[derive(Clone, Copy, Debug, Default)]
pub struct MarketApplier;

impl Applier for MarketApplier {
    async fn apply(
        &self,
        connection: &mut PgConnection,
        facts: Vec<Fact>,
    ) -> Result<Applied, ApplyError> {
        keh_projections::projector::hold_shared(connection, ANALYTICS_LOCK).await?;
        apply_facts(connection, facts).await
    }
}

/// Folds `facts` into the listings' market facts (duplicates skipped, gaps repaired from
/// the event store) and marks the series they change dirty, in the caller's transaction.
pub async fn apply_facts(
    connection: &mut PgConnection,
    facts: Vec<Fact>,
) -> Result<Applied, ApplyError> {
    let mut outcome = Applied::default();
    let mut by_listing: BTreeMap<String, BTreeMap<i64, ListingEvent>> = BTreeMap::new();
    for fact in facts {
        let slot = by_listing.entry(fact.listing_key).or_default();
        if slot.insert(fact.sequence, fact.event).is_some() {
            outcome.duplicates += 1;
        }
    }
    if by_listing.is_empty() {
        return Ok(outcome);
    }
    let keys: Vec<String> = by_listing.keys().cloned().collect();
    // As text, parsed straight into the typed facts: a `serde_json::Value` tree of every
    // listing's timeline first was the analytics worker's largest cost under load (perf).
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT listing_key, version, facts::text FROM analytics.listing_facts
          WHERE listing_key = ANY($1) ORDER BY listing_key FOR UPDATE",
    )
    .bind(&keys)
    .fetch_all(&mut *connection)
    .await?;
    let mut current: HashMap<String, (i64, String)> = rows
        .into_iter()
        .map(|(key, version, facts)| (key, (version, facts)))
        .collect();

    let mut written: Vec<(String, i64, MarketFacts)> = Vec::new();
    let mut marks: BTreeMap<SeriesKey, NaiveDate> = BTreeMap::new();
    for (key, events) in by_listing {
        let (mut version, mut facts) = match current.remove(&key) {
            Some((version, value)) => (
                version,
                Some(
                    serde_json::from_str::<MarketFacts>(&value)
                        .map_err(|e| ApplyError::State(key.clone(), e))?,
                ),
            ),
            None => (0, None),
        };
        let before = facts.as_ref().map(series_of).unwrap_or_default();
        let start = version;
        let mut dirty: Option<NaiveDate> = None;
        for (sequence, event) in events {
            if sequence <= version {
                outcome.duplicates += 1;
                continue;
            }
            if sequence > version + 1 {
                let missing = outbox::listing_events(
                    &mut *connection,
                    &key,
                    version,
                    Some(sequence - 1),
                    None,
                )
                .await?;
                for stored in missing {
                    outcome.repaired += 1;
                    version = stored.sequence;
                    fold(&key, &mut facts, &stored.event, &mut dirty)?;
                }
                if version != sequence - 1 {
                    return Err(ApplyError::Missing {
                        listing: key,
                        from: version + 1,
                        to: sequence - 1,
                    });
                }
            }
            version = sequence;
            outcome.applied += 1;
            fold(&key, &mut facts, &event, &mut dirty)?;
        }
        let Some(facts) = facts.filter(|_| version > start) else {
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
    key: &str,
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
                listing: key.to_owned(),
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
    rows: &[(String, i64, MarketFacts)],
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
        keys.push(key.as_str());
        versions.push(*version);
        types.push(facts.property_type.as_str());
        cities.push(facts.city.as_deref());
        postal_codes.push(facts.postal_code.as_deref());
        subdivisions.push(facts.subdivision.as_deref());
        first_dates.push(facts.first_date());
        last_dates.push(facts.last_date());
        values.push(serde_json::to_string(facts).map_err(|e| ApplyError::State(key.clone(), e))?);
    }
    sqlx::query(
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
    )
    .bind(keys)
    .bind(versions)
    .bind(types)
    .bind(cities)
    .bind(postal_codes)
    .bind(subdivisions)
    .bind(first_dates)
    .bind(last_dates)
    .bind(values)
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
    sqlx::query(
        "INSERT INTO analytics.dirty_marks (area_kind, area, property_type, dirty_from)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::date[])",
    )
    .bind(kinds)
    .bind(areas)
    .bind(types)
    .bind(dates)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Moves the appended marks into `dirty_series` (one row per series, its earliest date, a
/// new generation when marked again), locking the series' rows in key order so two
/// folders never deadlock. Marks committed after this statement began wait for the next.
pub async fn fold_marks(executor: impl sqlx::PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH moved AS (
             DELETE FROM analytics.dirty_marks
             RETURNING area_kind, area, property_type, dirty_from)
         INSERT INTO analytics.dirty_series (area_kind, area, property_type, dirty_from)
         SELECT area_kind, area, property_type, min(dirty_from) FROM moved
          GROUP BY area_kind, area, property_type
          ORDER BY area_kind COLLATE \"C\", area COLLATE \"C\", property_type COLLATE \"C\"
         ON CONFLICT (area_kind, area, property_type)
         DO UPDATE SET dirty_from = LEAST(analytics.dirty_series.dirty_from, EXCLUDED.dirty_from),
                       generation = nextval('analytics.dirty_generation')",
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// The `WHERE` clause selecting a series' listings (`$1` area, `$2` property type).
fn series_filter(kind: AreaKind) -> String {
    let area = kind.column().map_or_else(
        || "$1::text IS NOT NULL".to_owned(),
        |c| format!("{c} = $1"),
    );
    format!("{area} AND ($2 = '{ALL_TYPES}' OR property_type = $2)")
}

/// A dirty series as claimed by a worker.
#[derive(sqlx::FromRow)]
struct Dirty {
    area_kind: String,
    area: String,
    property_type: String,
    dirty_from: NaiveDate,
    generation: i64,
}

impl Dirty {
    fn key(&self) -> Option<SeriesKey> {
        AreaKind::parse(&self.area_kind).map(|kind| SeriesKey {
            kind,
            area: self.area.clone(),
            property_type: self.property_type.clone(),
        })
    }
}

/// Claims up to `limit` dirty series for `lease` and recomputes each in its own
/// transaction. The appliers never wait for a recomputation: a series marked again
/// meanwhile keeps its mark (its generation moved) and is recomputed once more. Returns how
/// many series it claimed. Only series whose marks are folded ([`fold_marks`]) are seen.
pub async fn recompute_dirty(
    pool: &PgPool,
    limit: i64,
    today: NaiveDate,
    lease: std::time::Duration,
    min_interval: std::time::Duration,
) -> Result<usize, AnalyticsError> {
    // A series recomputed less than `min_interval` ago waits (its mark stays and collects
    // further changes): under a steady stream of commands the whole-market series, which
    // holds every listing, would otherwise be recomputed back to back and keep a core busy.
    // A series quiet for longer is recomputed at once.
    let claimed: Vec<Dirty> = sqlx::query_as(
        "UPDATE analytics.dirty_series d SET claimed_until = now() + $2::interval
           FROM (SELECT d.area_kind, d.area, d.property_type FROM analytics.dirty_series d
                   LEFT JOIN analytics.series s
                     ON (s.area_kind, s.area, s.property_type) = (d.area_kind, d.area, d.property_type)
                  WHERE (d.claimed_until IS NULL OR d.claimed_until < now())
                    AND (s.computed_at IS NULL OR s.computed_at <= now() - $3::interval)
                  ORDER BY d.dirty_from, d.area_kind, d.area, d.property_type
                  LIMIT $1 FOR UPDATE OF d SKIP LOCKED) c
          WHERE (d.area_kind, d.area, d.property_type) = (c.area_kind, c.area, c.property_type)
         RETURNING d.area_kind, d.area, d.property_type, d.dirty_from, d.generation",
    )
    .bind(limit)
    .bind(format!("{} milliseconds", lease.as_millis()))
    .bind(format!("{} milliseconds", min_interval.as_millis()))
    .fetch_all(pool)
    .await?;
    for dirty in &claimed {
        let mut tx = pool.begin().await?;
        // Two workers on one series (a claim can outlive its lease) take turns, and each
        // reads the facts only once it holds the series.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "{}|{}|{}",
                dirty.area_kind, dirty.area, dirty.property_type
            ))
            .execute(&mut *tx)
            .await?;
        if let Some(key) = dirty.key() {
            recompute_series(&mut tx, &key, dirty.dirty_from, today).await?;
        }
        let done = sqlx::query(
            "DELETE FROM analytics.dirty_series
              WHERE area_kind = $1 AND area = $2 AND property_type = $3 AND generation = $4",
        )
        .bind(&dirty.area_kind)
        .bind(&dirty.area)
        .bind(&dirty.property_type)
        .bind(dirty.generation)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Marked again while we computed: hand it back for the next round.
            sqlx::query(
                "UPDATE analytics.dirty_series SET claimed_until = NULL
                  WHERE area_kind = $1 AND area = $2 AND property_type = $3",
            )
            .bind(&dirty.area_kind)
            .bind(&dirty.area)
            .bind(&dirty.property_type)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(claimed.len())
}

/// Recomputes every dirty series inside the caller's transaction (the rebuild's).
async fn recompute_all(
    connection: &mut PgConnection,
    today: NaiveDate,
) -> Result<usize, AnalyticsError> {
    fold_marks(&mut *connection).await?;
    let dirty: Vec<Dirty> = sqlx::query_as(
        "SELECT area_kind, area, property_type, dirty_from, generation FROM analytics.dirty_series",
    )
    .fetch_all(&mut *connection)
    .await?;
    for (key, from) in dirty.iter().filter_map(|d| Some((d.key()?, d.dirty_from))) {
        recompute_series(connection, &key, from, today).await?;
    }
    sqlx::query("DELETE FROM analytics.dirty_series")
        .execute(&mut *connection)
        .await?;
    Ok(dirty.len())
}

/// Recomputes one series' periods from the ones holding `from` on.
pub async fn recompute_series(
    connection: &mut PgConnection,
    key: &SeriesKey,
    from: NaiveDate,
    today: NaiveDate,
) -> Result<(), AnalyticsError> {
    let filter = series_filter(key.kind);
    let (listings, first): (i64, Option<NaiveDate>) = sqlx::query_as(&format!(
        "SELECT count(*), min(first_date) FROM analytics.listing_facts WHERE {filter}"
    ))
    .bind(&key.area)
    .bind(&key.property_type)
    .fetch_one(&mut *connection)
    .await?;
    let bind_key = |sql: &'static str| {
        sqlx::query(sql)
            .bind(key.kind.as_str())
            .bind(key.area.clone())
            .bind(key.property_type.clone())
    };
    let Some(first) = first.filter(|_| listings > 0) else {
        bind_key("DELETE FROM analytics.market_metrics WHERE area_kind = $1 AND area = $2 AND property_type = $3")
            .execute(&mut *connection)
            .await?;
        bind_key("DELETE FROM analytics.series WHERE area_kind = $1 AND area = $2 AND property_type = $3")
            .execute(&mut *connection)
            .await?;
        return Ok(());
    };
    // Figures reach back at most `HISTORY_YEARS`: a mistyped year (0205) must not make a
    // series of a hundred thousand weeks.
    let floor = today
        .checked_sub_months(chrono::Months::new(12 * HISTORY_YEARS))
        .unwrap_or(today);
    let first = first.max(floor);
    let from = from.max(first);
    // Every listing that can touch a period holding `from`.
    let earliest = Grain::ALL
        .iter()
        .map(|g| g.start_of(from))
        .min()
        .unwrap_or(from);
    // Streamed and decoded row by row straight into `MarketFacts`: the whole market is one
    // series, and holding its rows (or their `serde_json::Value` trees) at once cost
    // gigabytes at 200k listings.
    let mut facts = Vec::with_capacity(usize::try_from(listings).unwrap_or(0));
    let sql = format!(
        "SELECT listing_key, facts::text FROM analytics.listing_facts
          WHERE {filter} AND (last_date IS NULL OR last_date >= $3)"
    );
    let mut rows = sqlx::query_as::<_, (String, String)>(&sql)
        .bind(&key.area)
        .bind(&key.property_type)
        .bind(earliest)
        .fetch(&mut *connection);
    while let Some((listing_key, text)) = rows.try_next().await? {
        facts.push(
            serde_json::from_str::<MarketFacts>(&text)
                .map_err(|e| AnalyticsError::Facts(listing_key, e))?,
        );
    }
    drop(rows);
    // Everything is computed before the first write: a transaction gets its id at its first
    // write, and until it ends the relay publishes nothing committed after it (it reads
    // only below the oldest running transaction id, law 3). Computing the whole market
    // inside that window held every command's event back for as long as it took.
    let computed: Vec<(Grain, Vec<PeriodMetrics>)> = Grain::ALL
        .into_iter()
        .map(|grain| (grain, compute::compute(&facts, grain, from, today)))
        .collect();
    drop(facts);
    write_series(connection, key, &computed, from, first, int(listings)).await?;
    Ok(())
}

fn int(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Writes a recomputed series in one statement (one round trip, where a delete and an
/// insert per grain and the series row took five): every grain's computed periods are
/// upserted, the periods of the recomputed range (from `from` on, and before the series'
/// first date) that were not computed again are deleted, and the series row is updated.
async fn write_series(
    connection: &mut PgConnection,
    key: &SeriesKey,
    computed: &[(Grain, Vec<PeriodMetrics>)],
    from: NaiveDate,
    first: NaiveDate,
    listings: i32,
) -> Result<(), sqlx::Error> {
    let rows = || {
        computed
            .iter()
            .flat_map(|(grain, periods)| periods.iter().map(move |p| (*grain, p)))
    };
    let column = |f: fn(&PeriodMetrics) -> Option<Decimal>| -> Vec<Option<Decimal>> {
        rows().map(|(_, p)| f(p)).collect()
    };
    let count =
        |f: fn(&PeriodMetrics) -> i64| -> Vec<i32> { rows().map(|(_, p)| int(f(p))).collect() };
    let date = |f: fn(&PeriodMetrics) -> NaiveDate| -> Vec<NaiveDate> {
        rows().map(|(_, p)| f(p)).collect()
    };
    let periods: Vec<&str> = rows().map(|(grain, _)| grain.as_str()).collect();
    let grains: Vec<&str> = computed.iter().map(|(grain, _)| grain.as_str()).collect();
    let from_starts: Vec<NaiveDate> = computed.iter().map(|(g, _)| g.start_of(from)).collect();
    let first_starts: Vec<NaiveDate> = computed.iter().map(|(g, _)| g.start_of(first)).collect();
    sqlx::query(
        "WITH n AS (
             SELECT * FROM UNNEST($4::text[], $5::date[], $6::date[], $7::date[],
                  $8::integer[], $9::integer[], $10::integer[], $11::integer[], $12::integer[], $13::integer[],
                  $14::numeric[], $15::numeric[], $16::numeric[], $17::numeric[], $18::numeric[], $19::numeric[],
                  $20::numeric[], $21::numeric[], $22::numeric[], $23::numeric[])
               AS n(period, period_start, period_end, as_of,
                    new_listings, active_listings, inventory, pending_sales, home_sales, price_changes,
                    median_list_price, median_list_price_per_sqft, median_sale_price, median_sale_price_per_sqft,
                    median_days_on_market, sale_to_list_ratio, sale_to_original_list_ratio, sold_above_list,
                    price_drops, months_of_supply)),
         gone AS (
             DELETE FROM analytics.market_metrics m
              USING UNNEST($24::text[], $25::date[], $26::date[]) AS g(period, from_start, first_start)
              WHERE m.area_kind = $1 AND m.area = $2 AND m.property_type = $3 AND m.period = g.period
                AND (m.period_start >= g.from_start OR m.period_start < g.first_start)
                AND NOT EXISTS (SELECT 1 FROM n WHERE n.period = m.period AND n.period_start = m.period_start)),
         written AS (
             INSERT INTO analytics.market_metrics
                  (area_kind, area, property_type, period, period_start, period_end, as_of,
                   new_listings, active_listings, inventory, pending_sales, home_sales, price_changes,
                   median_list_price, median_list_price_per_sqft, median_sale_price, median_sale_price_per_sqft,
                   median_days_on_market, sale_to_list_ratio, sale_to_original_list_ratio, sold_above_list,
                   price_drops, months_of_supply)
             SELECT $1, $2, $3, period, period_start, period_end, as_of,
                    new_listings, active_listings, inventory, pending_sales, home_sales, price_changes,
                    median_list_price, median_list_price_per_sqft, median_sale_price, median_sale_price_per_sqft,
                    median_days_on_market, sale_to_list_ratio, sale_to_original_list_ratio, sold_above_list,
                    price_drops, months_of_supply
               FROM n
             ON CONFLICT (area_kind, area, property_type, period, period_start) DO UPDATE SET
                 period_end = EXCLUDED.period_end, as_of = EXCLUDED.as_of,
                 new_listings = EXCLUDED.new_listings, active_listings = EXCLUDED.active_listings,
                 inventory = EXCLUDED.inventory, pending_sales = EXCLUDED.pending_sales,
                 home_sales = EXCLUDED.home_sales, price_changes = EXCLUDED.price_changes,
                 median_list_price = EXCLUDED.median_list_price,
                 median_list_price_per_sqft = EXCLUDED.median_list_price_per_sqft,
                 median_sale_price = EXCLUDED.median_sale_price,
                 median_sale_price_per_sqft = EXCLUDED.median_sale_price_per_sqft,
                 median_days_on_market = EXCLUDED.median_days_on_market,
                 sale_to_list_ratio = EXCLUDED.sale_to_list_ratio,
                 sale_to_original_list_ratio = EXCLUDED.sale_to_original_list_ratio,
                 sold_above_list = EXCLUDED.sold_above_list, price_drops = EXCLUDED.price_drops,
                 months_of_supply = EXCLUDED.months_of_supply)
         INSERT INTO analytics.series (area_kind, area, property_type, listings, first_date, computed_at)
         VALUES ($1, $2, $3, $27, $28, now())
         ON CONFLICT (area_kind, area, property_type) DO UPDATE SET
             listings = EXCLUDED.listings, first_date = EXCLUDED.first_date, computed_at = now()",
    )
    .bind(key.kind.as_str())
    .bind(&key.area)
    .bind(&key.property_type)
    .bind(periods)
    .bind(date(|p| p.period_start))
    .bind(date(|p| p.period_end))
    .bind(date(|p| p.as_of))
    .bind(count(|p| p.new_listings))
    .bind(count(|p| p.active_listings))
    .bind(count(|p| p.inventory))
    .bind(count(|p| p.pending_sales))
    .bind(count(|p| p.home_sales))
    .bind(count(|p| p.price_changes))
    .bind(column(|p| p.median_list_price))
    .bind(column(|p| p.median_list_price_per_sqft))
    .bind(column(|p| p.median_sale_price))
    .bind(column(|p| p.median_sale_price_per_sqft))
    .bind(column(|p| p.median_days_on_market))
    .bind(column(|p| p.sale_to_list_ratio))
    .bind(column(|p| p.sale_to_original_list_ratio))
    .bind(column(|p| p.sold_above_list))
    .bind(column(|p| p.price_drops))
    .bind(column(|p| p.months_of_supply))
    .bind(grains)
    .bind(from_starts)
    .bind(first_starts)
    .bind(listings)
    .bind(first)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Moves the clock to `today`; when the date changed, every series is marked dirty from the
/// new day (its periods' figures are as of today, and a new period may have begun).
pub async fn advance_clock(pool: &PgPool, today: NaiveDate) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO analytics.clock (today) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(today)
        .execute(&mut *tx)
        .await?;
    let previous: Option<NaiveDate> = sqlx::query_scalar(
        "UPDATE analytics.clock c SET today = $1
           FROM (SELECT today FROM analytics.clock FOR UPDATE) old
          WHERE old.today < $1
         RETURNING old.today",
    )
    .bind(today)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(previous) = previous else {
        tx.commit().await?;
        return Ok(false);
    };
    let from = previous.succ_opt().unwrap_or(today);
    sqlx::query(
        "INSERT INTO analytics.dirty_series (area_kind, area, property_type, dirty_from)
         SELECT area_kind, area, property_type, $1 FROM analytics.series
          ORDER BY area_kind COLLATE \"C\", area COLLATE \"C\", property_type COLLATE \"C\"
         ON CONFLICT (area_kind, area, property_type)
         DO UPDATE SET dirty_from = LEAST(analytics.dirty_series.dirty_from, EXCLUDED.dirty_from),
                       generation = nextval('analytics.dirty_generation')",
    )
    .bind(from)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: u64,
    pub listings: i64,
    pub series: i64,
}

/// Deletes every derived analytics table and rebuilds it from the event store, in one
/// transaction: readers see the old figures until it commits. Report jobs are kept.
pub async fn rebuild(
    pool: &PgPool,
    today: NaiveDate,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, AnalyticsError> {
    const CHUNK: i64 = 5_000;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ANALYTICS_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "TRUNCATE analytics.listing_facts, analytics.dirty_series, analytics.dirty_marks, analytics.series, analytics.market_metrics",
    )
    .execute(&mut *tx)
    .await?;
    let mut cursor = Cursor::START;
    let mut done = 0_u64;
    loop {
        let events = outbox::read_after(&mut *tx, cursor, CHUNK)
            .await
            .map_err(ApplyError::from)?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            break;
        };
        cursor = last;
        done += u64::try_from(events.len()).unwrap_or(0);
        apply_facts(&mut tx, events.into_iter().map(Fact::from).collect()).await?;
        progress(done, total.max(done));
    }
    sqlx::query(
        "INSERT INTO analytics.clock (today) VALUES ($1) ON CONFLICT (id) DO UPDATE SET today = $1",
    )
    .bind(today)
    .execute(&mut *tx)
    .await?;
    recompute_all(&mut tx, today).await?;
    let listings: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.listing_facts")
        .fetch_one(&mut *tx)
        .await?;
    let series: i64 = sqlx::query_scalar("SELECT count(*) FROM analytics.series")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Rebuilt {
        events: done,
        listings,
        series,
    })
}

/// One period of a series, as the API and the reports show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct MetricsRow {
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub as_of: NaiveDate,
    pub new_listings: i32,
    pub active_listings: i32,
    pub inventory: i32,
    pub pending_sales: i32,
    pub home_sales: i32,
    pub price_changes: i32,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_list_price: Option<Decimal>,
    #[serde(rename = "MedianListPricePerSqFt", serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_list_price_per_sqft: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_sale_price: Option<Decimal>,
    #[serde(rename = "MedianSalePricePerSqFt", serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_sale_price_per_sqft: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub median_days_on_market: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub sale_to_list_ratio: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub sale_to_original_list_ratio: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub sold_above_list: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub price_drops: Option<Decimal>,
    #[serde(serialize_with = "number")]
    #[schemars(with = "Option<f64>")]
    pub months_of_supply: Option<Decimal>,
}

/// Decimals are JSON numbers, written exactly (never through `f64`).
fn number<S: serde::Serializer>(value: &Option<Decimal>, serializer: S) -> Result<S::Ok, S::Error> {
    rust_decimal::serde::arbitrary_precision_option::serialize(
        &value.map(|v| v.normalize()),
        serializer,
    )
}

/// The columns of [`MetricsRow`] (the CSV header uses the JSON names).
pub const METRIC_NAMES: &[&str] = &[
    "PeriodStart",
    "PeriodEnd",
    "AsOf",
    "NewListings",
    "ActiveListings",
    "Inventory",
    "PendingSales",
    "HomeSales",
    "PriceChanges",
    "MedianListPrice",
    "MedianListPricePerSqFt",
    "MedianSalePrice",
    "MedianSalePricePerSqFt",
    "MedianDaysOnMarket",
    "SaleToListRatio",
    "SaleToOriginalListRatio",
    "SoldAboveList",
    "PriceDrops",
    "MonthsOfSupply",
];

/// A series' periods whose start lies in `from..=to`, oldest first.
pub async fn series_rows(
    executor: impl sqlx::PgExecutor<'_>,
    key: &SeriesKey,
    grain: Grain,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<MetricsRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT period_start, period_end, as_of, new_listings, active_listings, inventory, pending_sales,
                home_sales, price_changes, median_list_price, median_list_price_per_sqft, median_sale_price,
                median_sale_price_per_sqft, median_days_on_market, sale_to_list_ratio,
                sale_to_original_list_ratio, sold_above_list, price_drops, months_of_supply
           FROM analytics.market_metrics
          WHERE area_kind = $1 AND area = $2 AND property_type = $3 AND period = $4
            AND ($5::date IS NULL OR period_start >= $5) AND ($6::date IS NULL OR period_start <= $6)
          ORDER BY period_start",
    )
    .bind(key.kind.as_str())
    .bind(&key.area)
    .bind(&key.property_type)
    .bind(grain.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(executor)
    .await
}

/// A series the analytics worker has computed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SeriesRow {
    pub area_kind: String,
    pub area: String,
    pub property_type: String,
    pub listings: i32,
    pub first_date: NaiveDate,
}

/// Every computed series of `kind` (all kinds when `None`), optionally one property type.
pub async fn series_list(
    executor: impl sqlx::PgExecutor<'_>,
    kind: Option<AreaKind>,
    property_type: Option<&str>,
) -> Result<Vec<SeriesRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT area_kind, area, property_type, listings, first_date FROM analytics.series
          WHERE ($1::text IS NULL OR area_kind = $1) AND ($2::text IS NULL OR property_type = $2)
          ORDER BY area_kind, area, property_type",
    )
    .bind(kind.map(AreaKind::as_str))
    .bind(property_type)
    .fetch_all(executor)
    .await
}

/// Whether the series exists.
pub async fn series_exists(
    executor: impl sqlx::PgExecutor<'_>,
    key: &SeriesKey,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM analytics.series WHERE area_kind = $1 AND area = $2 AND property_type = $3)",
    )
    .bind(key.kind.as_str())
    .bind(&key.area)
    .bind(&key.property_type)
    .fetch_one(executor)
    .await
}

/// Series still waiting for recomputation (a measure of the worker's lag): those marked
/// and those whose marks are not folded yet.
pub async fn dirty_count(executor: impl sqlx::PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT area_kind, area, property_type FROM analytics.dirty_series
             UNION SELECT area_kind, area, property_type FROM analytics.dirty_marks) d",
    )
    .fetch_one(executor)
    .await
}
