//! The analytics role's background work besides its consumer group: recomputing dirty
//! series, moving the clock at midnight UTC, building report jobs, and publishing business
//! metrics for Prometheus.

use std::time::Duration;

use chrono::Utc;
use prometheus::{GaugeVec, IntGauge, Opts, Registry};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{reports, store};

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Pause between rounds when there is nothing to do; within a busy round, the least
    /// time between two folds of the dirty marks.
    pub tick: Duration,
    /// Series claimed at a time (each is recomputed in its own transaction).
    pub series_per_round: i64,
    /// How long a claimed report job or dirty series is reserved before another worker may
    /// take it over.
    pub report_lease: Duration,
    /// The shortest time between two recomputations of one series: changes arriving
    /// meanwhile wait and are folded into the next one.
    pub min_interval: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            series_per_round: 16,
            report_lease: Duration::from_secs(60),
            min_interval: Duration::from_secs(2),
        }
    }
}

/// Business figures of the current month, per area (the whole market and each city), all
/// property types together.
#[derive(Clone)]
struct BusinessMetrics {
    inventory: GaugeVec,
    new_listings: GaugeVec,
    median_list_price: GaugeVec,
    closed_sales: GaugeVec,
    price_changes: GaugeVec,
    dirty: IntGauge,
}

impl BusinessMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let vec =
            |name: &str, help: &str| GaugeVec::new(Opts::new(name, help), &["area_kind", "area"]);
        let metrics = Self {
            inventory: vec(
                "keh_market_active_inventory",
                "Listings active (Active or Active Under Contract) today",
            )?,
            new_listings: vec(
                "keh_market_new_listings",
                "Listings that came on the market this month",
            )?,
            median_list_price: vec(
                "keh_market_median_list_price",
                "Median list price of listings active this month",
            )?,
            closed_sales: vec("keh_market_closed_sales", "Listings closed this month")?,
            price_changes: vec("keh_market_price_changes", "List price changes this month")?,
            dirty: IntGauge::new(
                "keh_analytics_dirty_series",
                "Series waiting for their metrics to be recomputed",
            )?,
        };
        for gauge in [
            &metrics.inventory,
            &metrics.new_listings,
            &metrics.median_list_price,
            &metrics.closed_sales,
            &metrics.price_changes,
        ] {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(metrics.dirty.clone()))?;
        Ok(metrics)
    }

    async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let month = crate::compute::Grain::Month.start_of(Utc::now().date_naive());
        let rows = sqlx::query_as!(
            CurrentMonth,
            "SELECT area_kind, area, inventory, new_listings, median_list_price, home_sales, price_changes
               FROM analytics.market_metrics
              WHERE period = 'month' AND period_start = $1 AND property_type = 'All'
                AND area_kind IN ('market', 'city')",
            month,
        )
        .fetch_all(pool)
        .await?;
        for gauge in [
            &self.inventory,
            &self.new_listings,
            &self.median_list_price,
            &self.closed_sales,
            &self.price_changes,
        ] {
            gauge.reset();
        }
        for row in rows {
            let labels = [row.area_kind.as_str(), row.area.as_str()];
            self.inventory
                .with_label_values(&labels)
                .set(f64::from(row.inventory));
            self.new_listings
                .with_label_values(&labels)
                .set(f64::from(row.new_listings));
            if let Some(median) = row.median_list_price.and_then(|m| m.to_f64()) {
                self.median_list_price
                    .with_label_values(&labels)
                    .set(median);
            }
            self.closed_sales
                .with_label_values(&labels)
                .set(f64::from(row.home_sales));
            self.price_changes
                .with_label_values(&labels)
                .set(f64::from(row.price_changes));
        }
        self.dirty.set(store::dirty_count(pool).await?);
        Ok(())
    }
}

#[derive(sqlx::FromRow)]
struct CurrentMonth {
    area_kind: String,
    area: String,
    inventory: i32,
    new_listings: i32,
    median_list_price: Option<Decimal>,
    home_sales: i32,
    price_changes: i32,
}

/// The analytics worker (one per analytics replica; replicas share the work).
pub struct AnalyticsWorker {
    pool: PgPool,
    settings: WorkerSettings,
    metrics: BusinessMetrics,
}

impl AnalyticsWorker {
    pub fn new(
        pool: PgPool,
        settings: WorkerSettings,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            pool,
            settings,
            metrics: BusinessMetrics::register(registry)?,
        })
    }

    /// Runs until `shutdown`; a round in progress finishes first.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut delay = self.settings.tick;
        let mut state = RoundState::default();
        while !shutdown.is_cancelled() {
            match self.round(&shutdown, &mut state).await {
                Ok(()) => delay = self.settings.tick,
                Err(error) => {
                    tracing::warn!(%error, "analytics round failed; retrying");
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn round(
        &self,
        shutdown: &CancellationToken,
        state: &mut RoundState,
    ) -> Result<(), store::AnalyticsError> {
        let today = Utc::now().date_naive();
        // The shared clock is only consulted when this worker sees the date change.
        if state.day != Some(today) {
            if store::advance_clock(&self.pool, today).await? {
                tracing::info!(%today, "new day: every series is recomputed for it");
            }
            state.day = Some(today);
        }
        let mut recomputed = false;
        let mut folded: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            // At most once per tick, not before every claim: the fold deletes every mark, a
            // scan of a table whose dead rows pile up between two visits of autovacuum
            // (about 9 ms a fold under a steady stream of commands, six folds a second when
            // it ran per claim).
            if folded.is_none_or(|at| at.elapsed() >= self.settings.tick) {
                store::fold_marks(&self.pool).await?;
                folded = Some(std::time::Instant::now());
            }
            // The date of each batch: another replica may move the clock meanwhile.
            let _timer = keh_platform::metrics::db_timer("analytics.recompute");
            let claimed = store::recompute_dirty(
                &self.pool,
                self.settings.series_per_round,
                Utc::now().date_naive().max(today),
                self.settings.report_lease,
                self.settings.min_interval,
            )
            .await?;
            if claimed == 0 {
                break;
            }
            recomputed = true;
        }
        while !shutdown.is_cancelled()
            && reports::process_next(&self.pool, self.settings.report_lease).await?
        {}
        // The gauges change when figures were recomputed; the dirty count in between.
        if recomputed
            || state
                .refreshed
                .is_none_or(|at| at.elapsed() >= METRICS_EVERY)
        {
            self.metrics.refresh(&self.pool).await?;
            state.refreshed = Some(std::time::Instant::now());
        }
        Ok(())
    }
}

/// How often the business gauges are read again when nothing was recomputed.
const METRICS_EVERY: Duration = Duration::from_secs(15);

/// What a worker remembers between rounds.
#[derive(Default)]
struct RoundState {
    /// The last date this worker moved the shared clock for.
    day: Option<chrono::NaiveDate>,
    /// When the business gauges were last read.
    refreshed: Option<std::time::Instant>,
}
