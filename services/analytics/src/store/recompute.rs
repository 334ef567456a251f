//! Recomputing dirty series (claimed, computed, written in one statement), and the clock
//! that marks every series dirty when the UTC date changes.

use chrono::NaiveDate;
use futures::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};

use super::{AnalyticsError, HISTORY_YEARS, SeriesKey, fold_marks};
use crate::compute::{self, Grain, PeriodMetrics};
use crate::facts::{ALL_TYPES, AreaKind, MarketFacts};

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
    let claimed = sqlx::query_as!(
        Dirty,
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
        limit,
        format!("{} milliseconds", lease.as_millis()) as _,
        format!("{} milliseconds", min_interval.as_millis()) as _,
    )
    .fetch_all(pool)
    .await?;
    for dirty in &claimed {
        let mut tx = pool.begin().await?;
        // Two workers on one series (a claim can outlive its lease) take turns, and each
        // reads the facts only once it holds the series.
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            format!("{}|{}|{}", dirty.area_kind, dirty.area, dirty.property_type),
        )
        .execute(&mut *tx)
        .await?;
        if let Some(key) = dirty.key() {
            recompute_series(&mut tx, &key, dirty.dirty_from, today).await?;
        }
        let done = sqlx::query!(
            "DELETE FROM analytics.dirty_series
              WHERE area_kind = $1 AND area = $2 AND property_type = $3 AND generation = $4",
            dirty.area_kind,
            dirty.area,
            dirty.property_type,
            dirty.generation,
        )
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Marked again while we computed: hand it back for the next round.
            sqlx::query!(
                "UPDATE analytics.dirty_series SET claimed_until = NULL
                  WHERE area_kind = $1 AND area = $2 AND property_type = $3",
                dirty.area_kind,
                dirty.area,
                dirty.property_type,
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(claimed.len())
}

/// Recomputes every dirty series inside the caller's transaction (the rebuild's).
pub(super) async fn recompute_all(
    connection: &mut PgConnection,
    today: NaiveDate,
) -> Result<usize, AnalyticsError> {
    fold_marks(&mut *connection).await?;
    let dirty = sqlx::query_as!(
        Dirty,
        "SELECT area_kind, area, property_type, dirty_from, generation FROM analytics.dirty_series",
    )
    .fetch_all(&mut *connection)
    .await?;
    for (key, from) in dirty.iter().filter_map(|d| Some((d.key()?, d.dirty_from))) {
        recompute_series(connection, &key, from, today).await?;
    }
    sqlx::query!("DELETE FROM analytics.dirty_series")
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
    sqlx::query!(
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
        key.kind.as_str(),
        key.area,
        key.property_type,
        &periods as &[&str],
        &date(|p| p.period_start),
        &date(|p| p.period_end),
        &date(|p| p.as_of),
        &count(|p| p.new_listings),
        &count(|p| p.active_listings),
        &count(|p| p.inventory),
        &count(|p| p.pending_sales),
        &count(|p| p.home_sales),
        &count(|p| p.price_changes),
        column(|p| p.median_list_price) as _,
        column(|p| p.median_list_price_per_sqft) as _,
        column(|p| p.median_sale_price) as _,
        column(|p| p.median_sale_price_per_sqft) as _,
        column(|p| p.median_days_on_market) as _,
        column(|p| p.sale_to_list_ratio) as _,
        column(|p| p.sale_to_original_list_ratio) as _,
        column(|p| p.sold_above_list) as _,
        column(|p| p.price_drops) as _,
        column(|p| p.months_of_supply) as _,
        &grains as &[&str],
        &from_starts,
        &first_starts,
        listings,
        first,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Moves the clock to `today`; when the date changed, every series is marked dirty from the
/// new day (its periods' figures are as of today, and a new period may have begun).
pub async fn advance_clock(pool: &PgPool, today: NaiveDate) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!(
        "INSERT INTO analytics.clock (today) VALUES ($1) ON CONFLICT DO NOTHING",
        today,
    )
    .execute(&mut *tx)
    .await?;
    let previous = sqlx::query_scalar!(
        "UPDATE analytics.clock c SET today = $1
           FROM (SELECT today FROM analytics.clock FOR UPDATE) old
          WHERE old.today < $1
         RETURNING old.today",
        today,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(previous) = previous else {
        tx.commit().await?;
        return Ok(false);
    };
    let from = previous.succ_opt().unwrap_or(today);
    sqlx::query!(
        r#"INSERT INTO analytics.dirty_series (area_kind, area, property_type, dirty_from)
         SELECT area_kind, area, property_type, $1 FROM analytics.series
          ORDER BY area_kind COLLATE "C", area COLLATE "C", property_type COLLATE "C"
         ON CONFLICT (area_kind, area, property_type)
         DO UPDATE SET dirty_from = LEAST(analytics.dirty_series.dirty_from, EXCLUDED.dirty_from),
                       generation = nextval('analytics.dirty_generation')"#,
        from,
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}
