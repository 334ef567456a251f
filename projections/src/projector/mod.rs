//! The consumer machinery of the projector (JetStream → read model) and of every other
//! role that folds the stream into tables (the analytics worker): an [`Applier`] says what a
//! batch does, [`Projector`] does the rest.
//!
//! One durable pull consumer per partition (`{group}-p{N}`, filter
//! `{prefix}.listing.{N}.>`), so a listing's events are consumed in order by exactly one
//! worker. Replicas share partitions: each heartbeats in `consumer_members`, owns
//! `ceil(partitions / live replicas)` of them as session advisory locks on its own
//! connection (released if it dies), and hands extras back when replicas join. A batch is
//! applied in one transaction and acknowledged only after it commits. A message that can
//! never be applied (not an event envelope) is parked in `parked_events` and terminated:
//! visible, counted, and not blocking anything else.
//!
//! The partitions a replica owns commit together ([`Committer`]): each partition worker
//! hands its batch to the replica's committer and waits; the committer applies every batch
//! waiting at that moment in one transaction, then answers each worker, which acknowledges
//! its messages. Under a trickle of commands this is one transaction for what all partitions
//! received meanwhile instead of one per partition (group commit); a listing's events come
//! from one partition only, so their order within the transaction is the partition's.
//!
//! This module holds the group (membership, partition leases, workers); `committer` the
//! group commit, `partition` one partition's consumer (batches, acknowledgements, parking).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use keh_events::EventEnvelope;
use keh_events::subject::{SubjectLayout, fnv1a32};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::apply::{self, Applied, ApplyError, Schema};

mod committer;
mod partition;

use committer::{Committer, Submission};
use partition::PartitionWorker;

/// What a consumer group does with a batch of events, inside the transaction the consumer
/// commits before acknowledging them. It must be idempotent and order-aware per listing
/// (skip what it has applied, repair gaps from the event store): messages are redelivered.
pub trait Applier: Send + Sync + 'static {
    fn apply<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        facts: Vec<EventEnvelope>,
    ) -> impl Future<Output = Result<Applied, ApplyError>> + Send + 'a;
}

/// The read model's applier: holds the rebuild's swap lock shared, so no batch straddles a
/// swap.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadModel;

impl Applier for ReadModel {
    async fn apply(
        &self,
        connection: &mut PgConnection,
        facts: Vec<EventEnvelope>,
    ) -> Result<Applied, ApplyError> {
        // Choosing the live schema holds the swap lock shared (see `Schema::choose`).
        apply::apply(connection, &Schema::live(), facts).await
    }
}

/// Holds advisory lock `key` shared until the transaction ends: batches run side by side,
/// and whoever takes it exclusively (a rebuild) waits for them and holds them off.
pub async fn hold_shared(connection: &mut PgConnection, key: i64) -> Result<(), sqlx::Error> {
    sqlx::query!("SELECT pg_advisory_xact_lock_shared($1)", key)
        .execute(connection)
        .await
        .map(|_| ())
}

/// Deliveries of a message that can never apply before it is parked.
const MAX_ATTEMPTS: i64 = 3;

/// Key of the advisory lock a rebuild takes exclusively to swap schemas; every batch takes it
/// shared, so no batch straddles a swap.
pub const SWAP_LOCK: i64 = 0x6b65_685f_7377_6170;

/// Projector configuration.
#[derive(Clone, Debug)]
pub struct ProjectorSettings {
    pub stream: String,
    pub subject_prefix: String,
    pub partitions: u32,
    /// Consumer group (durable consumer names are `{group}-p{N}`).
    pub group: String,
    /// Messages applied per transaction.
    pub batch_size: usize,
    pub heartbeat: Duration,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// The least time from the end of one transaction of a replica's batches to the start of
    /// the next: under load, fewer and larger transactions; a batch after a quiet spell goes
    /// at once.
    pub gather: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            stream: "KEH_LISTINGS".to_owned(),
            subject_prefix: "keh".to_owned(),
            partitions: 8,
            group: "projector".to_owned(),
            batch_size: 500,
            heartbeat: Duration::from_secs(2),
            ack_wait: Duration::from_secs(30),
            gather: Duration::from_millis(10),
        }
    }
}

/// A consumer group's metrics, named `keh_{prefix}_…` (the lag histogram is named by the
/// caller, as it is the figure operators alert on).
#[derive(Clone)]
pub struct ProjectorMetrics {
    pub applied: IntCounter,
    pub duplicates: IntCounter,
    pub repaired: IntCounter,
    pub parked: IntCounter,
    pub partitions_owned: IntGauge,
    /// Recorded in the store → committed in the read model.
    pub lag: Histogram,
}

impl ProjectorMetrics {
    fn register(
        registry: &Registry,
        prefix: &str,
        lag_name: &str,
    ) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            applied: IntCounter::new(
                format!("keh_{prefix}_applied_total"),
                format!("Events applied by the {prefix}"),
            )?,
            duplicates: IntCounter::new(
                format!("keh_{prefix}_duplicates_total"),
                "Redelivered or duplicate events skipped",
            )?,
            repaired: IntCounter::new(
                format!("keh_{prefix}_gap_repairs_total"),
                "Missing events read from the event store",
            )?,
            parked: IntCounter::new(
                format!("keh_{prefix}_parked_total"),
                "Messages parked as unprocessable",
            )?,
            partitions_owned: IntGauge::new(
                format!("keh_{prefix}_partitions_owned"),
                "Partitions this replica consumes",
            )?,
            lag: Histogram::with_opts(
                HistogramOpts::new(
                    lag_name,
                    format!("Event recorded → applied by the {prefix}"),
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
                ]),
            )?,
        };
        registry.register(Box::new(metrics.applied.clone()))?;
        registry.register(Box::new(metrics.duplicates.clone()))?;
        registry.register(Box::new(metrics.repaired.clone()))?;
        registry.register(Box::new(metrics.parked.clone()))?;
        registry.register(Box::new(metrics.partitions_owned.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        Ok(metrics)
    }
}

/// A replica of a consumer group (the projector's, or another [`Applier`]'s).
pub struct Projector<A: Applier = ReadModel> {
    applier: Arc<A>,
    settings: ProjectorSettings,
    layout: SubjectLayout,
    database: PgConnectOptions,
    pool: PgPool,
    jetstream: jetstream::Context,
    metrics: ProjectorMetrics,
    member_id: Uuid,
}

struct Worker {
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Worker {
    /// A projector dropped without `stop` (its task aborted) kills its workers too, as a
    /// crashed process would: their unacknowledged messages are redelivered.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

impl Projector<ReadModel> {
    /// The projector role: the read model, metrics `keh_projector_*` and
    /// `keh_projection_lag_seconds`.
    pub fn new(
        settings: ProjectorSettings,
        database: PgConnectOptions,
        pool: PgPool,
        nats: async_nats::Client,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        Self::with_applier(
            ReadModel,
            ("projector", "keh_projection_lag_seconds"),
            settings,
            database,
            pool,
            nats,
            registry,
        )
    }
}

impl<A: Applier> Projector<A> {
    /// A consumer group applying with `applier`; `names` are the metric prefix and the lag
    /// histogram's name.
    pub fn with_applier(
        applier: A,
        names: (&str, &str),
        settings: ProjectorSettings,
        database: PgConnectOptions,
        pool: PgPool,
        nats: async_nats::Client,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        Ok(Self {
            applier: Arc::new(applier),
            layout: SubjectLayout::new(settings.subject_prefix.clone(), settings.partitions),
            metrics: ProjectorMetrics::register(registry, names.0, names.1)?,
            settings,
            database,
            pool,
            jetstream: jetstream::new(nats),
            member_id: Uuid::new_v4(),
        })
    }

    /// Runs until `shutdown`, then finishes in-flight batches and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) {
        let (submissions, queue) = mpsc::channel(
            usize::try_from(self.settings.partitions)
                .unwrap_or(8)
                .max(1)
                * 2,
        );
        let committer = Committer {
            applier: Arc::clone(&self.applier),
            pool: self.pool.clone(),
            operation: format!("{}.apply", self.settings.group),
            metrics: self.metrics.clone(),
            gather: self.settings.gather,
            batch_size: self.settings.batch_size.max(1),
        };
        let committing = tokio::spawn(committer.run(queue));
        self.consume(shutdown, submissions).await;
        // Every worker has stopped, and with them every sender: the committer ends.
        let _ = committing.await;
        let _ = sqlx::query!(
            "DELETE FROM consumer_members WHERE consumer_group = $1 AND member_id = $2",
            self.settings.group,
            self.member_id,
        )
        .execute(&self.pool)
        .await;
    }

    /// Owns its share of partitions until `shutdown`; their workers hand their batches to
    /// `submissions` (the committer).
    async fn consume(&self, shutdown: CancellationToken, submissions: mpsc::Sender<Submission>) {
        let mut workers: HashMap<u32, Worker> = HashMap::new();
        let mut locks: Option<PgConnection> = None;
        loop {
            if let Err(error) = self.rebalance(&mut locks, &mut workers, &submissions).await {
                tracing::warn!(group = %self.settings.group, %error, "consumer lost its coordination session; releasing partitions");
                stop_all(&mut workers).await;
                locks = None;
            }
            self.metrics
                .partitions_owned
                .set(i64::try_from(workers.len()).unwrap_or(0));
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.heartbeat) => {}
            }
        }
        stop_all(&mut workers).await;
    }

    fn lock_key(&self, partition: u32) -> i64 {
        i64::from(fnv1a32(
            format!(
                "{}:{}:{partition}",
                self.settings.stream, self.settings.group
            )
            .as_bytes(),
        ))
    }

    /// Heartbeats, then claims or hands back partitions towards a fair share.
    async fn rebalance(
        &self,
        locks: &mut Option<PgConnection>,
        workers: &mut HashMap<u32, Worker>,
        submissions: &mpsc::Sender<Submission>,
    ) -> Result<(), sqlx::Error> {
        let connection = match locks {
            Some(c) => c,
            None => locks.insert(self.database.connect().await?),
        };
        // A worker that ended by itself (it only does on a bug) gives its partition back, so
        // that the lock count stays one per partition owned.
        let finished: Vec<u32> = workers
            .iter()
            .filter(|(_, w)| w.handle.as_ref().is_none_or(JoinHandle::is_finished))
            .map(|(p, _)| *p)
            .collect();
        for partition in finished {
            workers.remove(&partition);
            sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", self.lock_key(partition))
                .fetch_one(&mut *connection)
                .await?;
            tracing::error!(
                partition,
                "partition worker ended unexpectedly; partition released"
            );
        }
        // A replica that missed three heartbeats is gone: its share is redistributed.
        let stale = self.settings.heartbeat * 3;
        sqlx::query!(
            "INSERT INTO consumer_members (consumer_group, member_id, heartbeat_at) VALUES ($1, $2, now())
             ON CONFLICT (consumer_group, member_id) DO UPDATE SET heartbeat_at = now()",
            self.settings.group,
            self.member_id,
        )
        .execute(&mut *connection)
        .await?;
        sqlx::query!(
            "DELETE FROM consumer_members WHERE consumer_group = $1 AND heartbeat_at < now() - $2::interval",
            self.settings.group,
            format!("{} milliseconds", stale.as_millis()) as _,
        )
        .execute(&mut *connection)
        .await?;
        let members = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM consumer_members WHERE consumer_group = $1"#,
            self.settings.group,
        )
        .fetch_one(&mut *connection)
        .await?;
        let partitions = self.settings.partitions;
        let share = usize::try_from(
            u64::from(partitions).div_ceil(u64::try_from(members.max(1)).unwrap_or(1)),
        )
        .unwrap_or(1);
        // Hand back extras first (a joining replica can then take them).
        while workers.len() > share {
            let Some(&partition) = workers.keys().max() else {
                break;
            };
            if let Some(worker) = workers.remove(&partition) {
                stop(worker).await;
            }
            sqlx::query_scalar!("SELECT pg_advisory_unlock($1)", self.lock_key(partition))
                .fetch_one(&mut *connection)
                .await?;
            tracing::info!(partition, "handed partition back");
        }
        for partition in 0..partitions {
            if workers.len() >= share {
                break;
            }
            if workers.contains_key(&partition) {
                continue;
            }
            let acquired = sqlx::query_scalar!(
                r#"SELECT pg_try_advisory_lock($1) AS "acquired!""#,
                self.lock_key(partition),
            )
            .fetch_one(&mut *connection)
            .await?;
            if acquired {
                tracing::info!(partition, "consuming partition");
                workers.insert(partition, self.spawn_worker(partition, submissions));
            }
        }
        Ok(())
    }

    fn spawn_worker(&self, partition: u32, submissions: &mpsc::Sender<Submission>) -> Worker {
        let token = CancellationToken::new();
        let context = PartitionWorker {
            partition,
            name: format!("{}-p{partition}", self.settings.group),
            filter: self.layout.partition_filter(partition),
            stream: self.settings.stream.clone(),
            batch_size: self.settings.batch_size.max(1),
            ack_wait: self.settings.ack_wait,
            pool: self.pool.clone(),
            jetstream: self.jetstream.clone(),
            metrics: self.metrics.clone(),
            committer: submissions.clone(),
        };
        let child = token.clone();
        let handle = tokio::spawn(async move { context.run(child).await });
        Worker {
            token,
            handle: Some(handle),
        }
    }
}

async fn stop(mut worker: Worker) {
    worker.token.cancel();
    if let Some(handle) = worker.handle.take() {
        let _ = handle.await;
    }
}

/// Stops every worker at once (one after another, each would wait out the others' last
/// batch and request in turn).
async fn stop_all(workers: &mut HashMap<u32, Worker>) {
    for worker in workers.values() {
        worker.token.cancel();
    }
    futures::future::join_all(workers.drain().map(|(_, worker)| stop(worker))).await;
}
