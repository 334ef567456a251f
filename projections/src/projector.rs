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

use crate::apply::{self, Applied, ApplyError, Fact, Schema};

/// What a consumer group does with a batch of events, inside the transaction the consumer
/// commits before acknowledging them. It must be idempotent and order-aware per listing
/// (skip what it has applied, repair gaps from the event store): messages are redelivered.
pub trait Applier: Send + Sync + 'static {
    fn apply<'a>(
        &'a self,
        connection: &'a mut PgConnection,
        facts: Vec<Fact>,
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
        facts: Vec<Fact>,
    ) -> Result<Applied, ApplyError> {
        hold_shared(connection, SWAP_LOCK).await?;
        apply::apply(connection, &Schema::live(), facts).await
    }
}

/// Holds advisory lock `key` shared until the transaction ends: batches run side by side,
/// and whoever takes it exclusively (a rebuild) waits for them and holds them off.
pub async fn hold_shared(connection: &mut PgConnection, key: i64) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(key)
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
        let _ = sqlx::query(
            "DELETE FROM consumer_members WHERE consumer_group = $1 AND member_id = $2",
        )
        .bind(&self.settings.group)
        .bind(self.member_id)
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
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.lock_key(partition))
                .execute(&mut *connection)
                .await?;
            tracing::error!(
                partition,
                "partition worker ended unexpectedly; partition released"
            );
        }
        // A replica that missed three heartbeats is gone: its share is redistributed.
        let stale = self.settings.heartbeat * 3;
        sqlx::query(
            "INSERT INTO consumer_members (consumer_group, member_id, heartbeat_at) VALUES ($1, $2, now())
             ON CONFLICT (consumer_group, member_id) DO UPDATE SET heartbeat_at = now()",
        )
        .bind(&self.settings.group)
        .bind(self.member_id)
        .execute(&mut *connection)
        .await?;
        sqlx::query("DELETE FROM consumer_members WHERE consumer_group = $1 AND heartbeat_at < now() - $2::interval")
            .bind(&self.settings.group)
            .bind(format!("{} milliseconds", stale.as_millis()))
            .execute(&mut *connection)
            .await?;
        let members: i64 =
            sqlx::query_scalar("SELECT count(*) FROM consumer_members WHERE consumer_group = $1")
                .bind(&self.settings.group)
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
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(self.lock_key(partition))
                .execute(&mut *connection)
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
            let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(self.lock_key(partition))
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

async fn stop_all(workers: &mut HashMap<u32, Worker>) {
    for (_, worker) in workers.drain() {
        stop(worker).await;
    }
}

/// One batch handed to the committer, and where its outcome goes.
struct Submission {
    facts: Vec<Fact>,
    done: oneshot::Sender<Result<(), ApplyError>>,
}

/// Applies the batches of every partition a replica owns, as many at a time as are waiting,
/// in one transaction each time.
struct Committer<A> {
    applier: Arc<A>,
    pool: PgPool,
    /// The database-operation name its transactions are timed under (`projector.apply`).
    operation: String,
    metrics: ProjectorMetrics,
    /// How long after a transaction's end the next one waits for batches to gather.
    gather: Duration,
    /// A worker's largest batch: one this full means its stream is behind, and nothing is
    /// gained by waiting.
    batch_size: usize,
}

impl<A: Applier> Committer<A> {
    async fn run(self, mut queue: mpsc::Receiver<Submission>) {
        let mut last = tokio::time::Instant::now();
        while let Some(first) = queue.recv().await {
            // Under load, batches arrive while a transaction runs: waiting out the rest of
            // `gather` since the last one lets the next take more of them (fewer, larger
            // transactions); after a pause the first batch goes at once, and so does a full
            // one (catching up, waiting would only cap the rate: 250 ms between
            // transactions held the analytics catch-up to a third).
            if first.facts.len() < self.batch_size {
                tokio::time::sleep_until(last + self.gather).await;
            }
            let mut waiting = vec![first];
            while let Ok(next) = queue.try_recv() {
                waiting.push(next);
            }
            self.commit_waiting(waiting).await;
            last = tokio::time::Instant::now();
        }
    }

    /// Commits the batches waiting together, answering each; if that fails, each on its
    /// own, so the others commit and the failing one's worker handles its own failure.
    async fn commit_waiting(&self, mut waiting: Vec<Submission>) {
        if waiting.len() == 1 {
            let Submission { facts, done } = waiting.remove(0);
            let _ = done.send(self.commit(facts).await);
            return;
        }
        let together: Vec<Fact> = waiting.iter().flat_map(|s| s.facts.clone()).collect();
        if self.commit(together).await.is_ok() {
            for submission in waiting {
                let _ = submission.done.send(Ok(()));
            }
            return;
        }
        for Submission { facts, done } in waiting {
            let _ = done.send(self.commit(facts).await);
        }
    }

    /// Applies `facts` in one committed transaction and records the metrics.
    async fn commit(&self, facts: Vec<Fact>) -> Result<(), ApplyError> {
        let oldest = facts.iter().map(|f| f.recorded_at).min();
        let _timer = keh_platform::metrics::db_timer(&self.operation);
        let mut tx = self.pool.begin().await?;
        let applied = self.applier.apply(&mut tx, facts).await?;
        tx.commit().await?;
        self.metrics.applied.inc_by(applied.applied);
        self.metrics.duplicates.inc_by(applied.duplicates);
        self.metrics.repaired.inc_by(applied.repaired);
        if let Some(oldest) = oldest {
            self.metrics
                .lag
                .observe((chrono::Utc::now() - oldest).as_seconds_f64().max(0.0));
        }
        Ok(())
    }
}

/// Why a partition's consumer stopped; [`PartitionWorker::run`] decides from it how to go
/// on (wait for the stream, or retry with a growing pause).
#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    /// The stream does not exist yet: the relay creates it.
    #[error("the stream does not exist yet")]
    NoStream,
    #[error("JetStream: {0}")]
    JetStream(#[source] async_nats::Error),
    #[error("acknowledging a message: {0}")]
    Ack(#[source] async_nats::Error),
    #[error("the message stream ended")]
    Ended,
    #[error("parking a message: {0}")]
    Park(#[source] sqlx::Error),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl ConsumeError {
    fn jetstream(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::JetStream(Box::new(error))
    }

    /// `error`, whose JetStream answer is `cause`: the stream's absence is [`Self::NoStream`].
    fn from_jetstream(
        cause: jetstream::Error,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        if cause.error_code() == ErrorCode::STREAM_NOT_FOUND {
            Self::NoStream
        } else {
            Self::jetstream(error)
        }
    }
}

struct PartitionWorker {
    partition: u32,
    name: String,
    filter: String,
    stream: String,
    batch_size: usize,
    ack_wait: Duration,
    pool: PgPool,
    jetstream: jetstream::Context,
    metrics: ProjectorMetrics,
    committer: mpsc::Sender<Submission>,
}

impl PartitionWorker {
    async fn run(self, shutdown: CancellationToken) {
        let mut delay = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.consume(&shutdown).await {
                Ok(()) => return,
                // Until the relay has created the stream there is nothing to consume.
                Err(ConsumeError::NoStream) => {
                    tracing::debug!(
                        partition = self.partition,
                        "waiting for the stream to exist"
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(partition = self.partition, %error, "partition consumer failed; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), ConsumeError> {
        let stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| match e.kind() {
                GetStreamErrorKind::JetStream(cause) => ConsumeError::from_jetstream(cause, e),
                _ => ConsumeError::jetstream(e),
            })?;
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                &self.name,
                pull::Config {
                    durable_name: Some(self.name.clone()),
                    filter_subject: self.filter.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    max_ack_pending: i64::try_from(self.batch_size * 2).unwrap_or(1000),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match e.kind() {
                ConsumerErrorKind::JetStream(cause) => ConsumeError::from_jetstream(cause, e),
                _ => ConsumeError::jetstream(e),
            })?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch_size)
            .messages()
            .await
            .map_err(ConsumeError::jetstream)?;
        loop {
            let first = tokio::select! {
                () = shutdown.cancelled() => {
                    // Acknowledgements are buffered by the client: send them before the
                    // partition is handed over, or its next owner gets them again.
                    let _ = self.jetstream.client().flush().await;
                    return Ok(());
                }
                next = messages.next() => next,
            };
            let Some(first) = first else {
                return Err(ConsumeError::Ended);
            };
            let mut batch = vec![first.map_err(ConsumeError::jetstream)?];
            // Take whatever else arrives within a millisecond of the previous one: low
            // latency when idle, large transactions under load. (Taking only what is ready
            // at once, `now_or_never`, stopped at the pull stream's first pending poll, a few
            // dozen messages: with a longer gathering window, the consumers then fell
            // behind the stream.) A message already here is taken without arming a timer.
            while batch.len() < self.batch_size {
                let next = match messages.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        let waited =
                            tokio::time::timeout(Duration::from_millis(1), messages.next()).await;
                        let Ok(next) = waited else { break };
                        next
                    }
                };
                match next {
                    Some(Ok(message)) => batch.push(message),
                    Some(Err(error)) => return Err(ConsumeError::jetstream(error)),
                    None => break,
                }
            }
            self.process(batch).await?;
        }
    }

    /// Applies one batch; acknowledges after commit; parks what can never apply.
    async fn process(&self, batch: Vec<jetstream::Message>) -> Result<(), ConsumeError> {
        let mut parsed = Vec::with_capacity(batch.len());
        for message in batch {
            match serde_json::from_slice::<EventEnvelope>(&message.payload) {
                Ok(envelope) => parsed.push((message, Fact::from(envelope))),
                Err(error) => self.park(&message, None, &error.to_string()).await?,
            }
        }
        if parsed.is_empty() {
            return Ok(());
        }
        let facts: Vec<Fact> = parsed.iter().map(|(_, f)| f.clone()).collect();
        // One span per traced message, continuing the trace its publisher put in the
        // `traceparent` header; each lasts until its batch is committed (or fails).
        let _spans: Vec<tracing::Span> = parsed
            .iter()
            .filter_map(|(message, fact)| self.apply_span(message, fact))
            .collect();
        match self.apply_committed(facts).await {
            Ok(()) => {
                for (message, _) in &parsed {
                    message.ack().await.map_err(ConsumeError::Ack)?;
                }
                Ok(())
            }
            Err(error) if !error.is_permanent() => {
                // Nothing was committed and the cause is passing (a connection): the whole
                // batch comes back after a pause.
                for (message, _) in &parsed {
                    let _ = message
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
                Err(error.into())
            }
            Err(error) => {
                // Some event can never apply: one message at a time, so that only its listing
                // is held back (its later events gap-repair into the same failure).
                tracing::warn!(partition = self.partition, %error, "a batch cannot apply; applying its messages one by one");
                for (message, fact) in parsed {
                    match self.apply_committed(vec![fact.clone()]).await {
                        Ok(()) => message.ack().await.map_err(ConsumeError::Ack)?,
                        Err(error) if error.is_permanent() => {
                            let delivered = message.info().map_or(1, |i| i.delivered);
                            if delivered >= MAX_ATTEMPTS {
                                self.park(&message, Some(&fact), &error.to_string()).await?;
                            } else {
                                let _ = message
                                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                                    .await;
                            }
                        }
                        Err(error) => {
                            let _ = message
                                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                                .await;
                            return Err(error.into());
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn apply_span(&self, message: &jetstream::Message, fact: &Fact) -> Option<tracing::Span> {
        let traceparent = message
            .headers
            .as_ref()?
            .get(keh_events::envelope::headers::TRACEPARENT)?
            .as_str();
        let span = tracing::info_span!(
            "apply",
            otel.name = %format_args!("apply {}", self.name),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.consumer.group.name = %self.name,
            messaging.message.id = %fact.event_id,
            listing_key = %fact.listing_key,
            sequence = fact.sequence,
        );
        keh_platform::telemetry::set_parent(&span, Some(traceparent));
        Some(span)
    }

    /// Applies `facts` through the replica's committer (in one committed transaction,
    /// maybe with other partitions' batches); returns once it has committed or failed.
    async fn apply_committed(&self, facts: Vec<Fact>) -> Result<(), apply::ApplyError> {
        let (done, outcome) = oneshot::channel();
        let closed = || ApplyError::Database(sqlx::Error::PoolClosed);
        self.committer
            .send(Submission { facts, done })
            .await
            .map_err(|_| closed())?;
        outcome.await.map_err(|_| closed())?
    }

    async fn park(
        &self,
        message: &jetstream::Message,
        fact: Option<&Fact>,
        reason: &str,
    ) -> Result<(), ConsumeError> {
        let event_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(keh_events::envelope::headers::MSG_ID))
            .and_then(|v| Uuid::parse_str(v.as_str()).ok())
            .unwrap_or_else(Uuid::new_v4);
        sqlx::query(
            "INSERT INTO parked_events (consumer, event_id, listing_key, sequence, subject, reason, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(event_id)
        .bind(fact.map(|f| f.listing_key.as_str()))
        .bind(fact.map(|f| f.sequence))
        .bind(message.subject.as_str())
        .bind(reason)
        .bind(String::from_utf8_lossy(&message.payload).as_ref())
        .execute(&self.pool)
        .await
        .map_err(ConsumeError::Park)?;
        self.metrics.parked.inc();
        tracing::error!(consumer = %self.name, %event_id, reason, "parked an unprocessable message");
        message
            .ack_with(AckKind::Term)
            .await
            .map_err(ConsumeError::Ack)
    }
}
