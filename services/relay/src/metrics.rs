//! The relay's Prometheus metrics (registered per instance), and the gauges its leader
//! refreshes from the store and JetStream.

use futures::StreamExt as _;
use keh_store::outbox::{self, Cursor};
use sqlx::PgConnection;

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Counters and gauges of one relay.
#[derive(Clone)]
pub struct RelayMetrics {
    /// Events this relay published (acknowledged by JetStream, not duplicates).
    pub published: IntCounter,
    pub duplicates: IntCounter,
    pub publish_errors: IntCounter,
    pub reconciles: IntCounter,
    /// 1 while this instance is the leader.
    pub leader: IntGauge,
    /// Committed events not yet published.
    pub backlog: IntGauge,
    /// Age of the oldest unpublished event.
    pub backlog_age: Gauge,
    /// Recorded → acknowledged by JetStream.
    pub lag: Histogram,
    /// Per durable consumer of the stream: messages not yet delivered plus delivered and
    /// not yet acknowledged (the leader reads them from JetStream every few seconds, so the
    /// figure keeps moving when a consumer is down).
    pub consumer_pending: IntGaugeVec,
    /// Bytes the stream holds, and the most it may (-1: no limit).
    pub stream_bytes: IntGauge,
    pub stream_max_bytes: IntGauge,
}

impl RelayMetrics {
    /// Registers the metrics of the relay of `stream` (a `stream` label tells the public
    /// and the internal stream's relays apart).
    pub fn register(registry: &Registry, stream: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("stream", stream);
        let metrics = Self {
            published: IntCounter::with_opts(opts(
                "keh_relay_published_total",
                "Events published by this relay",
            ))?,
            duplicates: IntCounter::with_opts(opts(
                "keh_relay_duplicates_total",
                "Publishes JetStream reported as duplicates",
            ))?,
            publish_errors: IntCounter::with_opts(opts(
                "keh_relay_publish_errors_total",
                "Failed publish pipelines",
            ))?,
            reconciles: IntCounter::with_opts(opts(
                "keh_relay_reconciles_total",
                "Reconciliations with the stream",
            ))?,
            leader: IntGauge::with_opts(opts(
                "keh_relay_leader",
                "1 while this relay instance is the active leader",
            ))?,
            backlog: IntGauge::with_opts(opts(
                "keh_relay_backlog_events",
                "Committed events not yet published",
            ))?,
            backlog_age: Gauge::with_opts(opts(
                "keh_relay_backlog_age_seconds",
                "Age of the oldest unpublished event",
            ))?,
            lag: Histogram::with_opts(
                HistogramOpts::new(
                    "keh_relay_publish_lag_seconds",
                    "Time from commit to JetStream acknowledgement",
                )
                .const_label("stream", stream)
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
                ]),
            )?,
            consumer_pending: IntGaugeVec::new(
                opts(
                    "keh_consumer_pending_messages",
                    "Messages a durable consumer of the stream has not acknowledged yet",
                ),
                &["consumer"],
            )?,
            stream_bytes: IntGauge::with_opts(opts(
                "keh_relay_stream_bytes",
                "Bytes the stream holds",
            ))?,
            stream_max_bytes: IntGauge::with_opts(opts(
                "keh_relay_stream_max_bytes",
                "Most bytes the stream may hold (-1: no limit)",
            ))?,
        };
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.duplicates.clone()))?;
        registry.register(Box::new(metrics.publish_errors.clone()))?;
        registry.register(Box::new(metrics.reconciles.clone()))?;
        registry.register(Box::new(metrics.leader.clone()))?;
        registry.register(Box::new(metrics.backlog.clone()))?;
        registry.register(Box::new(metrics.backlog_age.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.consumer_pending.clone()))?;
        registry.register(Box::new(metrics.stream_bytes.clone()))?;
        registry.register(Box::new(metrics.stream_max_bytes.clone()))?;
        Ok(metrics)
    }
}

/// The longest the leader waits for JetStream's figures when it refreshes its gauges.
const NATS_GAUGES_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// The gauges the leader refreshes every `metrics_every`: the backlog from the store, the
/// stream's size and each consumer's pending count from JetStream.
impl super::Relay {
    pub(crate) async fn record_backlog(
        &self,
        leader: &mut PgConnection,
        cursor: Cursor,
    ) -> Result<(), sqlx::Error> {
        let (count, oldest) = outbox::backlog(&mut *leader, cursor).await?;
        self.metrics.backlog.set(count);
        let age = oldest.map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64().max(0.0));
        self.metrics.backlog_age.set(age);
        Ok(())
    }

    /// Reads the stream's size and every durable consumer's outstanding messages, for at
    /// most [`NATS_GAUGES_WITHIN`] (failures only logged: metrics).
    pub(crate) async fn record_stream_gauges(&self) {
        let _ = tokio::time::timeout(NATS_GAUGES_WITHIN, self.read_stream_gauges()).await;
    }

    async fn read_stream_gauges(&self) {
        let Ok(stream) = self.jetstream.get_stream(&self.settings.stream).await else {
            return;
        };
        // Fetched with the stream itself.
        let info = stream.cached_info();
        let bytes = i64::try_from(info.state.bytes).unwrap_or(i64::MAX);
        self.metrics.stream_bytes.set(bytes);
        self.metrics.stream_max_bytes.set(info.config.max_bytes);
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.next().await {
            match info {
                Ok(info) => {
                    let pending = i64::try_from(info.num_pending)
                        .unwrap_or(i64::MAX)
                        .saturating_add(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
                    self.metrics
                        .consumer_pending
                        .with_label_values(&[info.name.as_str()])
                        .set(pending);
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot read consumer state");
                    break;
                }
            }
        }
    }
}
