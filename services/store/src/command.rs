//! Executing Listing commands against the event store.

use cqrs_es::event_sink::EventSink;
use std::collections::HashMap;

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use keh_events::{ListingEvent, Metadata};
use keh_listing::{Listing, ListingCommand, ListingError};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a command did not append.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// The aggregate refused it (404/409/422 by kind).
    #[error(transparent)]
    Rule(ListingError),
    /// `If-Match` named another version than the current one.
    #[error("the listing is at version {current}")]
    VersionMismatch { current: u64 },
    /// Another transaction won: a concurrent write to the listing, or a unique reservation
    /// (`ListingId`, idempotency key) taken meanwhile. Nothing was appended.
    #[error("a concurrent change conflicted with this command")]
    Conflict,
    /// PostgreSQL could not be reached in time. Nothing was appended.
    #[error("the event store is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("unexpected event store failure")]
    Internal(#[source] BoxError),
    /// The caller may not change this listing (nothing was appended).
    #[error("{0}")]
    Forbidden(&'static str),
}

/// The listings a command may touch, checked against the listing before and after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Any listing (administrators, integrations).
    #[default]
    Any,
    /// Listings whose `ListAgentKey` is this agent's, or whose `ListOfficeKey` is
    /// `office_key` when one is given.
    Agent {
        agent_key: String,
        office_key: Option<String>,
    },
}

impl Access {
    /// Whether a listing in this state is within reach.
    pub fn permits(&self, state: &keh_listing::ListingState) -> bool {
        match self {
            Self::Any => true,
            Self::Agent {
                agent_key,
                office_key,
            } => {
                let d = &state.details;
                d.list_agent_key
                    .as_ref()
                    .is_some_and(|k| k.as_str() == agent_key)
                    || office_key.as_ref().is_some_and(|office| {
                        d.list_office_key
                            .as_ref()
                            .is_some_and(|k| k.as_str() == office)
                    })
            }
        }
    }
}

/// A command's outcome.
#[derive(Clone, Debug)]
pub struct Executed {
    /// The listing after the command.
    pub listing: Listing,
    /// Events appended (0: the command changed nothing).
    pub appended: usize,
}

/// What an `Idempotency-Key` recorded with its events.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct IdempotencyRecord {
    pub aggregate_id: String,
    pub request_hash: String,
    pub response_status: i32,
    pub last_sequence: i64,
    /// The problem+json body of a refusal (`None` for an answer with the listing's state).
    pub problem: Option<serde_json::Value>,
}

/// The Listing event store.
pub struct Store {
    pool: PgPool,
    events: PersistedEventStore<PostgresEventRepository, Listing>,
    snapshot_every: usize,
    /// Listings as this process last appended to them, so that the next command on one
    /// skips loading it (two queries of the five a command costs). Never trusted: an entry
    /// another writer has overtaken makes the append conflict on `(aggregate_id,
    /// sequence)` (sequences are gapless), and any outcome decided on an entry other than
    /// a successful append (a refusal, a version mismatch, no change) is decided again on a
    /// fresh load. So a cached entry changes what a command costs, never what it decides.
    cache: std::sync::Mutex<HashMap<String, Cached>>,
    /// Group commit of concurrent appends, started on first use (it needs the runtime).
    appender: std::sync::OnceLock<crate::append::Appender>,
}

/// A listing as the store last appended it.
#[derive(Clone)]
struct Cached {
    listing: Listing,
    sequence: usize,
    snapshot: Option<usize>,
}

/// How many times a command is decided on a freshly loaded state while concurrent appends
/// keep taking the listing's next sequence first (then it is a 409).
const DECISIONS: u32 = 3;

/// The most listings the cache keeps (a few KiB each).
const CACHE_ENTRIES: usize = 10_000;

impl Store {
    /// `snapshot_every`: a snapshot is written every N events, so loading a listing reads at
    /// most one snapshot and N events, whatever the length of its history.
    pub fn new(pool: PgPool, snapshot_every: usize) -> Self {
        let repo = PostgresEventRepository::new(pool.clone());
        Self {
            pool,
            events: PersistedEventStore::new_snapshot_store(repo, snapshot_every.max(1)),
            snapshot_every: snapshot_every.max(1),
            cache: std::sync::Mutex::new(HashMap::new()),
            appender: std::sync::OnceLock::new(),
        }
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut HashMap<String, Cached>) -> T) -> T {
        match self.cache.lock() {
            Ok(mut guard) => f(&mut guard),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Loads the current state of a listing (`Listing::default()` if it does not exist).
    pub async fn load(&self, listing_key: &str) -> Result<Listing, ExecuteError> {
        let context = self
            .events
            .load_aggregate(listing_key)
            .await
            .map_err(map_error)?;
        Ok(context.aggregate)
    }

    /// Decides `command` on the current state and appends its events atomically.
    ///
    /// `expected_versions` (from `If-Match`) must contain the listing's version. Between the
    /// load and the append another writer may win; the primary key on
    /// `(aggregate_id, sequence)` then refuses this append ([`ExecuteError::Conflict`]).
    #[tracing::instrument(
        name = "event_store.execute",
        skip_all,
        fields(otel.kind = "internal", db.system.name = "postgresql", listing_key = %listing_key, appended = tracing::field::Empty)
    )]
    pub async fn execute(
        &self,
        listing_key: &str,
        command: ListingCommand,
        metadata: &Metadata,
        expected_versions: Option<&[u64]>,
        access: &Access,
    ) -> Result<Executed, ExecuteError> {
        let decide = |context| {
            self.decide_and_append(
                context,
                command.clone(),
                metadata,
                expected_versions,
                access,
            )
        };
        let cached = self.with_cache(|cache| cache.get(listing_key).cloned());
        if let Some(cached) = cached {
            let context = EventStoreAggregateContext {
                aggregate_id: listing_key.to_owned(),
                aggregate: cached.listing,
                current_sequence: cached.sequence,
                current_snapshot: cached.snapshot,
            };
            match decide(context).await {
                Ok(executed) if executed.appended > 0 => return Ok(executed),
                Err(error @ ExecuteError::Unavailable(_)) => {
                    self.with_cache(|cache| cache.remove(listing_key));
                    return Err(error);
                }
                // Decided on what may be an old state: decide again on the stored one.
                _ => {
                    self.with_cache(|cache| cache.remove(listing_key));
                }
            }
        }
        // Decided on the stored state; if another append took the listing's next sequence
        // first, decided again on the state it left (as if this command had come after it):
        // a command without `If-Match` applies to the current state, and one with it is
        // checked against it.
        let mut attempt = 1;
        loop {
            let load = keh_platform::metrics::db_timer("event_store.load");
            let context = self
                .events
                .load_aggregate(listing_key)
                .await
                .map_err(map_error)?;
            drop(load);
            match decide(context).await {
                Err(ExecuteError::Conflict) if attempt < DECISIONS => attempt += 1,
                outcome => return outcome,
            }
        }
    }

    async fn decide_and_append(
        &self,
        context: EventStoreAggregateContext<Listing>,
        command: ListingCommand,
        metadata: &Metadata,
        expected_versions: Option<&[u64]>,
        access: &Access,
    ) -> Result<Executed, ExecuteError> {
        if context
            .aggregate
            .state()
            .is_some_and(|state| !access.permits(state))
        {
            return Err(ExecuteError::Forbidden(
                "this listing belongs to another agent; only its agent (or an administrator) may change it",
            ));
        }
        // Lossless: `usize` is at most 64 bits wide.
        let current = context.current_sequence as u64;
        if let Some(expected) = expected_versions
            && !expected.contains(&current)
        {
            return Err(ExecuteError::VersionMismatch { current });
        }
        // cqrs-es 0.5's sink applies events to the aggregate it is given, and `commit`
        // applies them again when it builds a snapshot. Deciding on a copy keeps the
        // context's aggregate at its loaded state, so snapshots never double-apply.
        let mut after = context.aggregate.clone();
        let sink = EventSink::default();
        after
            .handle(command, &(), &sink)
            .await
            .map_err(ExecuteError::Rule)?;
        let events: Vec<ListingEvent> = sink.collect().await;
        if after.state().is_some_and(|state| !access.permits(state)) {
            return Err(ExecuteError::Forbidden(
                "an agent may only create or keep listings whose ListAgentKey is their own",
            ));
        }
        let appended = events.len();
        tracing::Span::current().record("appended", appended);
        if appended > 0 {
            let key = context.aggregate_id.clone();
            let sequence = context.current_sequence;
            // What postgres-es does on commit: a snapshot when the append reaches the next
            // multiple of `snapshot_every`.
            let snapshot = if appended >= self.snapshot_every - sequence % self.snapshot_every {
                Some(context.current_snapshot.map_or(1, |s| s + 1))
            } else {
                context.current_snapshot
            };
            let _append = keh_platform::metrics::db_timer("event_store.append");
            // A snapshot is written by postgres-es with its events; everything else goes
            // through the group commit, and comes back here if that did not write it.
            let grouped = if snapshot == context.current_snapshot {
                self.appender
                    .get_or_init(|| crate::append::Appender::start(self.pool.clone()))
                    .append(crate::append::Append {
                        listing_key: key.clone(),
                        after: sequence,
                        events: events.clone(),
                        metadata: metadata.to_map(),
                    })
                    .await
            } else {
                crate::append::Appended::Alone
            };
            if grouped == crate::append::Appended::Unknown {
                self.with_cache(|cache| cache.remove(&key));
                return Err(ExecuteError::Unavailable(
                    "the event store connection failed while committing; the outcome is unknown, retry with the same Idempotency-Key".into(),
                ));
            }
            if grouped == crate::append::Appended::Stale {
                self.with_cache(|cache| cache.remove(&key));
                return Err(ExecuteError::Conflict);
            }
            if grouped == crate::append::Appended::Alone {
                self.events
                    .commit(events, context, metadata.to_map())
                    .await
                    .map_err(map_error)?;
            }
            let entry = Cached {
                listing: after.clone(),
                sequence: sequence + appended,
                snapshot,
            };
            self.with_cache(|cache| {
                if cache.len() >= CACHE_ENTRIES {
                    // Make room: drop a tenth (any tenth: every entry is only a shortcut).
                    let drop: Vec<String> =
                        cache.keys().take(CACHE_ENTRIES / 10).cloned().collect();
                    for key in drop {
                        cache.remove(&key);
                    }
                }
                cache.insert(key, entry);
            });
        }
        Ok(Executed {
            listing: after,
            appended,
        })
    }

    /// The listing as it was right after its event number `version` (1-based).
    pub async fn state_at(&self, listing_key: &str, version: i64) -> Result<Listing, ExecuteError> {
        let payloads: Vec<String> = sqlx::query_scalar!(
            r#"SELECT payload::text AS "payload!" FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence <= $3
              ORDER BY sequence"#,
            Listing::TYPE,
            listing_key,
            version,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
        let events = payloads
            .iter()
            .map(|p| serde_json::from_str::<ListingEvent>(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ExecuteError::Internal(Box::new(e)))?;
        Ok(keh_listing::aggregate::replay(events))
    }

    /// What an idempotency key recorded, if its events were committed.
    pub async fn idempotency_record(
        &self,
        scope: &str,
    ) -> Result<Option<IdempotencyRecord>, ExecuteError> {
        sqlx::query_as!(
            IdempotencyRecord,
            "SELECT aggregate_id, request_hash, response_status, last_sequence, problem
               FROM idempotency_keys WHERE scope = $1",
            scope,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)
    }

    /// Records the answer of a command that appended nothing (a refusal, or no change), so
    /// that a retry with the same key gets it again. The first record of a key wins.
    pub async fn record_answer(
        &self,
        scope: &str,
        record: &IdempotencyRecord,
    ) -> Result<(), ExecuteError> {
        sqlx::query!(
            "INSERT INTO idempotency_keys (scope, aggregate_id, request_hash, response_status, last_sequence, problem)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope) DO NOTHING",
            scope,
            record.aggregate_id,
            record.request_hash,
            record.response_status,
            record.last_sequence,
            record.problem,
        )
        .execute(&self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(())
    }

    /// The listing that holds a `ListingId`, if any.
    pub async fn listing_id_owner(&self, listing_id: &str) -> Result<Option<String>, ExecuteError> {
        sqlx::query_scalar!(
            "SELECT listing_key FROM listing_ids WHERE listing_id = $1",
            listing_id,
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    // A protocol error or a crashed connection worker is a connection cut mid-message (a
    // server shutting down); 57P: shutdown and starting up, 08: connection failures,
    // 53: out of resources (too many connections).
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    ) || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c.starts_with("53")))
}

/// Maps a direct sqlx failure.
pub(crate) fn map_sqlx(error: sqlx::Error) -> ExecuteError {
    if is_unavailable(&error) {
        ExecuteError::Unavailable(Box::new(error))
    } else {
        ExecuteError::Internal(Box::new(error))
    }
}

fn map_error(error: AggregateError<ListingError>) -> ExecuteError {
    match error {
        AggregateError::UserError(e) => ExecuteError::Rule(e),
        AggregateError::AggregateConflict => ExecuteError::Conflict,
        AggregateError::DatabaseConnectionError(e) => ExecuteError::Unavailable(e),
        AggregateError::DeserializationError(e) => ExecuteError::Internal(e),
        // postgres-es reports pool timeouts as "unexpected": look inside.
        AggregateError::UnexpectedError(e) => match e.downcast_ref::<sqlx::Error>() {
            Some(sqlx_error) if is_unavailable(sqlx_error) => ExecuteError::Unavailable(e),
            _ => ExecuteError::Internal(e),
        },
    }
}
