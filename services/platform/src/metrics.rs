//! Prometheus metrics that are not about HTTP. Each application instance owns its
//! [`Registry`] (two relays in one test process keep separate counters). The one exception
//! is [`db_timer`]'s histogram: database operations happen deep in the store, relay,
//! consumers and queries, so it is one per process, registered into each instance's
//! registry.

use std::sync::LazyLock;

use prometheus::{HistogramOpts, HistogramVec, Opts, Registry};

/// `keh_db_operation_duration_seconds{operation}`: see [`db_timer`].
static DB_OPERATIONS: LazyLock<Option<HistogramVec>> = LazyLock::new(|| {
    HistogramVec::new(
        HistogramOpts::new(
            "keh_db_operation_duration_seconds",
            "Time of one database operation (its queries, and the wait for a pooled connection), by operation",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ]),
        &["operation"],
    )
    .ok()
});

/// Times a database operation until the guard drops (also on error or cancellation), under
/// a fixed operation name (`event_store.append`, `query.search`, …; never user input).
pub fn db_timer(operation: &str) -> Option<prometheus::HistogramTimer> {
    DB_OPERATIONS
        .as_ref()
        .map(|h| h.with_label_values(&[operation]).start_timer())
}

/// Adds the process's database-operation histogram to an instance's registry.
pub fn register_db_metrics(registry: &Registry) -> Result<(), prometheus::Error> {
    match DB_OPERATIONS.as_ref() {
        Some(histogram) => registry.register(Box::new(histogram.clone())),
        None => Ok(()),
    }
}

/// The connection pool's state, read when Prometheus scrapes: connections in use and idle,
/// and the pool's maximum. A pool at its maximum with requests waiting shows up as 503s
/// (`KEH_DB_ACQUIRE_TIMEOUT_MS`) and as `in_use` pinned at `max`.
pub struct PoolMetrics {
    pool: sqlx::PgPool,
    connections: prometheus::IntGaugeVec,
    max: prometheus::IntGauge,
}

impl PoolMetrics {
    pub fn register(registry: &Registry, pool: sqlx::PgPool) -> Result<(), prometheus::Error> {
        let metrics = Self {
            pool,
            connections: prometheus::IntGaugeVec::new(
                Opts::new(
                    "keh_db_pool_connections",
                    "PostgreSQL connections of this process's pool, by state",
                ),
                &["state"],
            )?,
            max: prometheus::IntGauge::new(
                "keh_db_pool_max_connections",
                "The most connections the pool opens (KEH_DB_MAX_CONNECTIONS)",
            )?,
        };
        registry.register(Box::new(metrics))
    }
}

impl prometheus::core::Collector for PoolMetrics {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut descs = self.connections.desc();
        descs.extend(self.max.desc());
        descs
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let size = i64::from(self.pool.size());
        let idle = i64::try_from(self.pool.num_idle()).unwrap_or(i64::MAX);
        self.connections.with_label_values(&["idle"]).set(idle);
        self.connections
            .with_label_values(&["in_use"])
            .set((size - idle).max(0));
        self.max
            .set(i64::from(self.pool.options().get_max_connections()));
        let mut families = self.connections.collect();
        families.extend(self.max.collect());
        families
    }
}
