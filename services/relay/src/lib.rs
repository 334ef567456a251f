//! The relay: the only component that publishes to JetStream, and the only one that knows
//! its publish semantics.
//!
//! It reads committed events from PostgreSQL in global order ([`keh_store::outbox`]) and
//! publishes them pipelined, each with `Nats-Msg-Id` = event id and a precondition on what
//! the stream holds last: the first message of a pipeline `Nats-Expected-Last-Sequence`, each
//! next one `Nats-Expected-Last-Msg-Id` = the previous event's id. The stream accepts messages
//! only in exactly the order the relay sends them, so per-listing order in the stream equals
//! per-listing sequence in the store, and a refused message makes everything after it in the
//! pipeline refused too (no holes).
//!
//! On every (re)connect it reconciles with the stream: it reads the stream's last message,
//! finds that event in the store and resumes right after it. It never trusts the
//! de-duplication window (two minutes, and a single replica's unsynced tail can vanish in a
//! crash).
//!
//! Several relays may run: a PostgreSQL advisory lock, held on a dedicated connection that
//! also carries every read, elects one leader; the others wait and take over when its
//! session ends.
//!
//! This file holds the settings, leadership and the leader's loop; `reconcile` the stream's
//! creation and the reconciliation, `publish` the pipelines and messages, `metrics` what
//! the relay reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use bytes::Bytes;
use keh_events::envelope::headers;
use keh_events::subject::{SubjectLayout, fnv1a32};

use keh_platform::health::Check;
use keh_store::outbox::{self, Cursor, StoredEvent};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest a busy relay goes without saving its checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

mod metrics;
mod publish;
mod reconcile;

use publish::PipelineEnd;

pub use metrics::RelayMetrics;

/// Relay configuration.
#[derive(Clone, Debug)]
pub struct RelaySettings {
    /// JetStream stream name.
    pub stream: String,
    /// Subject prefix (see `keh_events::subject`).
    pub subject_prefix: String,
    /// Fixed number of partitions.
    pub partitions: u32,
    /// Stream replicas (3 in production).
    pub replicas: usize,
    /// JetStream de-duplication window.
    pub duplicate_window: Duration,
    /// Maximum age of messages in the stream (zero: kept for ever).
    pub max_age: Duration,
    /// Most bytes the stream may hold (-1: no limit); a full stream refuses new messages.
    pub max_bytes: i64,
    /// Events read and published per pipeline.
    pub batch_size: i64,
    /// Poll interval when no notification arrives (notifications can be missed on reconnect).
    pub idle_poll: Duration,
    /// After a pipeline shorter than `batch_size`, how long to let events gather before
    /// reading again (fewer, larger reads and pipelines under load).
    pub gather: Duration,
    /// How often a standby relay tries to become leader.
    pub leader_retry: Duration,
    /// How long to wait for a publish acknowledgement.
    pub ack_timeout: Duration,
    /// Publish the public form (`keh_events::public::redact_public`: no private fields, no
    /// actor names, no unsafe media URLs):
    /// the public stream, which outside subscribers read.
    pub redact_private: bool,
    /// How often the leader refreshes its backlog and consumer gauges.
    pub metrics_every: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            stream: "KEH_LISTINGS".to_owned(),
            subject_prefix: "keh".to_owned(),
            partitions: 8,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_age: Duration::ZERO,
            max_bytes: -1,
            batch_size: 500,
            idle_poll: Duration::from_secs(1),
            gather: Duration::from_millis(10),
            leader_retry: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(5),
            redact_private: true,
            metrics_every: Duration::from_secs(5),
        }
    }
}

/// Why a relay stopped leading (it then steps down and competes again).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("reading the outbox: {0}")]
    Outbox(#[from] outbox::ReadError),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(
        "the last {0} messages of the stream name no event of the store: stream and store disagree, an operator must decide"
    )]
    StreamAheadOfStore(u64),
}

fn js_error(error: impl std::fmt::Display) -> RelayError {
    RelayError::JetStream(error.to_string())
}

/// How many unknown messages at the stream's end a reconciliation looks past before it
/// gives up and asks for an operator.
const MAX_WALK_BACK: u64 = 10_000;

/// Where publication stands: the last published event and the stream sequence it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    cursor: Cursor,
    stream_sequence: u64,
}

/// A relay instance.
pub struct Relay {
    settings: RelaySettings,
    layout: SubjectLayout,
    database: PgConnectOptions,
    pool: PgPool,
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    metrics: RelayMetrics,
    /// Connections of the NATS client so far (raised by `connect_nats`).
    connections: Arc<AtomicU64>,
    /// The connection count this relay last reconciled for.
    reconciled_for: AtomicU64,
}

/// Connects to NATS without failing when it is down: the client keeps retrying, and the
/// relay reconciles once it is back. `connections` counts every (re)connection, so that each
/// relay sharing the client (the public and the internal stream's) notices every one.
pub async fn connect_nats(
    url: &str,
    name: &str,
    connections: Arc<AtomicU64>,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    // async-nats ignores credentials in the URL: `nats://user:password@host` is applied here.
    let address: async_nats::ServerAddr = url.parse().map_err(|error: std::io::Error| {
        async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::ServerParse, error)
    })?;
    let mut options = async_nats::ConnectOptions::new();
    if let (Some(user), Some(password)) = (address.username(), address.password()) {
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    options
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(2_000))
        })
        .event_callback(move |event| {
            let connections = Arc::clone(&connections);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        tracing::info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        })
        .connect(address)
        .await
}

impl Relay {
    /// `database_url` opens the leader's dedicated connection; `pool` serves notifications.
    pub fn new(
        settings: RelaySettings,
        database: PgConnectOptions,
        pool: PgPool,
        nats: async_nats::Client,
        connections: Arc<AtomicU64>,
        registry: &prometheus::Registry,
    ) -> Result<Self, prometheus::Error> {
        let jetstream = jetstream::ContextBuilder::new()
            .ack_timeout(settings.ack_timeout)
            .max_ack_inflight(usize::try_from(settings.batch_size.max(1)).unwrap_or(500) * 2)
            .backpressure_on_inflight(true)
            .build(nats.clone());
        Ok(Self {
            layout: SubjectLayout::new(settings.subject_prefix.clone(), settings.partitions),
            metrics: RelayMetrics::register(registry, &settings.stream)?,
            settings,
            // Every query on the leader's connection walks `events` by `(tx_id,
            // global_position)` from the cursor. PostgreSQL cannot estimate a row comparison
            // on `xid8` nor the snapshot's xmin, guesses that a third of the table matches
            // and scans all of it: 180 ms per held-back check at 700,000 events, which every
            // event then waited for. The index is always the right path here.
            database: database.options([("enable_seqscan", "off")]),
            pool,
            nats,
            jetstream,
            connections,
            reconciled_for: AtomicU64::new(0),
        })
    }

    /// This relay's own metrics (tests read its publish counter).
    pub fn metrics(&self) -> &RelayMetrics {
        &self.metrics
    }

    /// Readiness: the relay is ready when NATS is connected.
    pub fn health(&self, required: bool) -> Check {
        let nats = self.nats.clone();
        Check::new("nats", required, move || {
            let state = nats.connection_state();
            Box::pin(async move {
                match state {
                    async_nats::connection::State::Connected => Ok(()),
                    other => Err(format!("NATS connection is {other}")),
                }
            })
        })
    }

    /// Runs until `shutdown`: competes for leadership, leads, steps down on failure.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let Some(mut leader) = self.become_leader(&shutdown).await else {
                return;
            };
            self.metrics.leader.set(1);
            tracing::info!(stream = %self.settings.stream, "relay is the leader");
            let outcome = self.lead(&mut leader, &shutdown).await;
            self.metrics.leader.set(0);
            // Closing the session releases the advisory lock for a standby.
            let _ = leader.close().await;
            match outcome {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "relay stepped down");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff.next()) => {}
                    }
                }
            }
        }
    }

    /// Opens a dedicated session and waits until it holds the stream's advisory lock.
    async fn become_leader(&self, shutdown: &CancellationToken) -> Option<PgConnection> {
        let lock_key = i64::from(fnv1a32(
            format!("keh-relay:{}", self.settings.stream).as_bytes(),
        ));
        loop {
            let attempt = async {
                let mut connection = self.database.connect().await?;
                loop {
                    let acquired = sqlx::query_scalar!(
                        r#"SELECT pg_try_advisory_lock($1) AS "acquired!""#,
                        lock_key,
                    )
                    .fetch_one(&mut connection)
                    .await?;
                    if acquired {
                        return Ok::<_, sqlx::Error>(connection);
                    }
                    tokio::time::sleep(self.settings.leader_retry).await;
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return None,
                result = attempt => match result {
                    Ok(connection) => return Some(connection),
                    Err(error) => {
                        tracing::warn!(%error, "cannot reach PostgreSQL for leader election");
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(self.settings.leader_retry) => {}
                        }
                    }
                }
            }
        }
    }

    /// Publishes as leader until shutdown (Ok) or until PostgreSQL fails (Err).
    async fn lead(
        &self,
        leader: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("keh_events").await?;
        let mut position: Option<Position> = None;
        // How far the stream is known to hold the store, kept while NATS is away (when
        // `position` is unknown) so that the backlog gauges keep growing during an outage:
        // that is when `KehRelayBacklogStale` must fire.
        let mut known: Option<Position> = None;
        let mut nats_backoff = Backoff::new();
        let mut last_backlog = tokio::time::Instant::now() - Duration::from_secs(60);
        // The checkpoint is for metrics (reconciliation trusts the stream, not it): saved at
        // most once per CHECKPOINT_EVERY and when the relay goes idle, not after every
        // pipeline, where its commit (and WAL flush) cost as much as the read.
        let mut unsaved: Option<(Cursor, Uuid)> = None;
        let mut last_saved = tokio::time::Instant::now() - CHECKPOINT_EVERY;
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let connections = self.connections.load(Ordering::SeqCst);
            if self.reconciled_for.swap(connections, Ordering::SeqCst) != connections {
                position = None;
            }
            if last_backlog.elapsed() > self.settings.metrics_every {
                let cursor = match known {
                    Some(p) => p.cursor,
                    None => outbox::load_checkpoint(&mut *leader, &self.settings.stream)
                        .await?
                        .unwrap_or(Cursor::START),
                };
                self.record_backlog(leader, cursor).await?;
                // Consumer lag and the stream's size need NATS: only once reconciled (else
                // every refresh would wait out a request timeout), and never for long: a
                // NATS that died unnoticed must not hold back the backlog gauge above,
                // which is what tells of the outage.
                if position.is_some() {
                    self.record_stream_gauges().await;
                }
                last_backlog = tokio::time::Instant::now();
            }
            let current = match position {
                Some(p) => p,
                None => match self.reconcile(leader).await {
                    Ok(p) => {
                        nats_backoff = Backoff::new();
                        // Messages whose acknowledgement was lost (NATS went away after
                        // storing them) were published all the same: only the leader
                        // publishes, so the stream's growth since then is ours.
                        if let Some(before) = known {
                            self.metrics
                                .published
                                .inc_by(p.stream_sequence.saturating_sub(before.stream_sequence));
                        }
                        position = Some(p);
                        known = Some(p);
                        p
                    }
                    // PostgreSQL failures end the leadership; NATS failures are waited out.
                    Err(error @ (RelayError::Database(_) | RelayError::Outbox(_))) => {
                        return Err(error);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot reconcile with JetStream yet");
                        self.pause(shutdown, nats_backoff.next()).await;
                        continue;
                    }
                },
            };
            let timer = keh_platform::metrics::db_timer("outbox.read");
            let batch = outbox::read_after(
                &mut *leader,
                current.cursor,
                self.settings.batch_size,
                outbox::Placement::Partitions(self.settings.partitions),
            )
            .await?;
            drop(timer);
            if batch.is_empty() {
                if let Some((cursor, event_id)) = unsaved.take() {
                    outbox::save_checkpoint(&mut *leader, &self.settings.stream, cursor, event_id)
                        .await?;
                    last_saved = tokio::time::Instant::now();
                }
                let held_back = outbox::held_back(&mut *leader, current.cursor).await?;
                let wait = if held_back {
                    Duration::from_millis(10)
                } else {
                    self.settings.idle_poll
                };
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    notification = listener.recv() => { notification?; }
                    () = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let partial = i64::try_from(batch.len()).unwrap_or(i64::MAX) < self.settings.batch_size;
            let (reached, end) = self.publish(&batch, current).await;
            if reached != current {
                if let Some(last) = batch.iter().find(|e| e.cursor == reached.cursor) {
                    unsaved = Some((reached.cursor, last.envelope.event_id));
                }
                if last_saved.elapsed() >= CHECKPOINT_EVERY
                    && let Some((cursor, event_id)) = unsaved.take()
                {
                    outbox::save_checkpoint(&mut *leader, &self.settings.stream, cursor, event_id)
                        .await?;
                    last_saved = tokio::time::Instant::now();
                }
                position = Some(reached);
                known = Some(reached);
            }
            match end {
                // Under load, reading again at once finds only the few events committed
                // while this pipeline was out: let them gather.
                PipelineEnd::Complete if partial && !self.settings.gather.is_zero() => {
                    self.pause(shutdown, self.settings.gather).await;
                }
                PipelineEnd::Complete => {}
                // The stream already holds that event (de-duplicated by its id): it was
                // skipped, and publication goes on after it without reconciling (which would
                // lead back to it).
                PipelineEnd::Duplicate(event_id) => {
                    tracing::error!(%event_id, "JetStream already held this event; skipped it (stream order differs from store order here)");
                }
                PipelineEnd::Failed(error) => {
                    self.metrics.publish_errors.inc();
                    tracing::warn!(%error, "publish failed; reconciling with the stream before going on");
                    position = None;
                    self.pause(shutdown, nats_backoff.next()).await;
                }
            }
        }
    }

    async fn pause(&self, shutdown: &CancellationToken, delay: Duration) {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Exponential backoff from 100 ms to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    fn next(&mut self) -> Duration {
        let current = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        current
    }
}
