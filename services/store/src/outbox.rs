//! Reading committed events in global order (the transactional outbox).
//!
//! Order is `(tx_id, global_position)`. A row is read only once its transaction is older than
//! every transaction still running (`tx_id < pg_snapshot_xmin(pg_current_snapshot())`): by
//! then it has committed or rolled back and no row can appear before it any more, so a
//! cursor that only moves forward never skips an event committed late. The price: one
//! long-running writing transaction anywhere in the database holds publication back until it
//! ends (the relay's backlog metric shows it).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use keh_events::subject::partition_of;
use keh_events::{EventEnvelope, ListingEvent, ListingKey, Metadata, SCHEMA_VERSION, Sequence};
use sqlx::{PgExecutor, Row};
use uuid::Uuid;

/// A position in the global order; `Cursor::START` is before every event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub tx_id: u64,
    pub global_position: i64,
}

impl Cursor {
    pub const START: Self = Self {
        tx_id: 0,
        global_position: 0,
    };
}

/// A committed event as the relay, rebuilds and gap repairs read it: the very envelope its
/// subscribers receive, its place in the global order, and the command's trace context.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub envelope: EventEnvelope,
    pub cursor: Cursor,
    /// W3C trace context of the command that stored it (the relay continues it).
    pub traceparent: Option<String>,
}

/// A stored row that cannot be read as a current event (a bug or a missing upcaster).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event {event_id} ({event_type} v{version}) cannot be decoded: {reason}")]
    Undecodable {
        event_id: Uuid,
        event_type: String,
        version: String,
        reason: String,
    },
}

// `tx_id` is read as text (sqlx has no xid8 type) under another name: an output column named
// `tx_id` would make `ORDER BY tx_id` sort the text, and "10000" < "9999".
const COLUMNS: &str =
    "event_id, aggregate_id, sequence, event_type, event_version, payload::text AS payload,
    metadata::text AS metadata, tx_id::text AS tx_text, global_position, recorded_at";

/// Which partition an event's listing is in.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// The stream's partition count: each listing's partition follows from its key.
    Partitions(u32),
    /// Every event read is of one listing, whose partition this is.
    Partition(u32),
}

fn decode(row: &sqlx::postgres::PgRow, placement: Placement) -> Result<StoredEvent, ReadError> {
    let event_id: Uuid = row.try_get("event_id")?;
    let event_type: String = row.try_get("event_type")?;
    let version: String = row.try_get("event_version")?;
    let undecodable = |reason: String| ReadError::Undecodable {
        event_id,
        event_type: event_type.clone(),
        version: version.clone(),
        reason,
    };
    // Version 1 is the only one so far; an older version gets its upcaster here.
    if version != SCHEMA_VERSION {
        return Err(undecodable(format!(
            "unknown schema version (this build writes {SCHEMA_VERSION})"
        )));
    }
    let payload: String = row.try_get("payload")?;
    let event: ListingEvent =
        serde_json::from_str(&payload).map_err(|e| undecodable(e.to_string()))?;
    let metadata: String = row.try_get("metadata")?;
    let metadata: HashMap<String, String> =
        serde_json::from_str(&metadata).map_err(|e| undecodable(format!("metadata: {e}")))?;
    let tx_id: String = row.try_get("tx_text")?;
    let cursor = Cursor {
        tx_id: tx_id
            .parse()
            .map_err(|_| undecodable(format!("tx_id {tx_id}")))?,
        global_position: row.try_get("global_position")?,
    };
    let metadata = Metadata::from_map(&metadata);
    let listing_key: ListingKey = row.try_get("aggregate_id")?;
    Ok(StoredEvent {
        envelope: EventEnvelope {
            event_id,
            schema_version: version,
            partition: match placement {
                Placement::Partitions(count) => partition_of(listing_key.as_str(), count),
                Placement::Partition(partition) => partition,
            },
            listing_key,
            sequence: row.try_get("sequence")?,
            global_position: cursor.global_position,
            effective_at: event.effective_at(),
            recorded_at: row.try_get("recorded_at")?,
            actor: metadata.actor,
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
            event,
        },
        cursor,
        traceparent: metadata.traceparent,
    })
}

/// Up to `limit` events after `after`, in global order, that no running transaction can
/// precede any more.
pub async fn read_after(
    executor: impl PgExecutor<'_>,
    after: Cursor,
    limit: i64,
    placement: Placement,
) -> Result<Vec<StoredEvent>, ReadError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE (tx_id, global_position) > ($1::text::xid8, $2)
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.tx_id, events.global_position
          LIMIT $3"
    );
    let rows = sqlx::query(&sql)
        .bind(after.tx_id.to_string())
        .bind(after.global_position)
        .bind(limit)
        .fetch_all(executor)
        .await?;
    rows.iter().map(|row| decode(row, placement)).collect()
}

/// Whether committed events exist that are still held back behind a running transaction
/// (the relay then polls briefly instead of waiting for the next notification).
pub async fn held_back(executor: impl PgExecutor<'_>, after: Cursor) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events
                         WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                           AND tx_id >= pg_snapshot_xmin(pg_current_snapshot()))",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .fetch_one(executor)
    .await
}

/// The cursor of an event, by id (`None`: the store has no such event).
pub async fn cursor_of(
    executor: impl PgExecutor<'_>,
    event_id: Uuid,
) -> Result<Option<Cursor>, sqlx::Error> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT tx_id::text, global_position FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.and_then(cursor_from_row))
}

/// A cursor from `(tx_id::text, global_position)`.
fn cursor_from_row((tx, position): (String, i64)) -> Option<Cursor> {
    Some(Cursor {
        tx_id: tx.parse().ok()?,
        global_position: position,
    })
}

/// Events not yet published after `after`, and the recorded time of the oldest.
pub async fn backlog(
    executor: impl PgExecutor<'_>,
    after: Cursor,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), min(recorded_at) FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2)",
    )
    .bind(after.tx_id.to_string())
    .bind(after.global_position)
    .fetch_one(executor)
    .await
}

/// Records how far `stream` has been published.
pub async fn save_checkpoint(
    executor: impl PgExecutor<'_>,
    stream: &str,
    cursor: Cursor,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO relay_checkpoints (stream, tx_id, global_position, event_id, updated_at)
         VALUES ($1, $2::text::xid8, $3, $4, now())
         ON CONFLICT (stream) DO UPDATE
            SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position,
                event_id = EXCLUDED.event_id, updated_at = now()",
    )
    .bind(stream)
    .bind(cursor.tx_id.to_string())
    .bind(cursor.global_position)
    .bind(event_id)
    .execute(executor)
    .await?;
    Ok(())
}

/// The last saved checkpoint of `stream`.
pub async fn load_checkpoint(
    executor: impl PgExecutor<'_>,
    stream: &str,
) -> Result<Option<Cursor>, sqlx::Error> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT tx_id::text, global_position FROM relay_checkpoints WHERE stream = $1",
    )
    .bind(stream)
    .fetch_optional(executor)
    .await?;
    Ok(row.and_then(cursor_from_row))
}

/// The committed events of one listing after sequence `after` (all of them for `None`), optionally only up to
/// sequence `up_to` and only those recorded at or before `recorded_until`, in sequence order
/// (gap repair, `as_of` reads).
pub async fn listing_events(
    executor: impl PgExecutor<'_>,
    listing_key: &ListingKey,
    after: Option<Sequence>,
    up_to: Option<Sequence>,
    recorded_until: Option<DateTime<Utc>>,
    partition: u32,
) -> Result<Vec<StoredEvent>, ReadError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events
          WHERE aggregate_type = 'Listing' AND aggregate_id = $1 AND sequence > $2
            AND ($3::bigint IS NULL OR sequence <= $3)
            AND ($4::timestamptz IS NULL OR recorded_at <= $4)
          ORDER BY sequence"
    );
    let rows = sqlx::query(&sql)
        .bind(listing_key)
        .bind(after.map_or(0, i64::from))
        .bind(up_to)
        .bind(recorded_until)
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| decode(row, Placement::Partition(partition)))
        .collect()
}

/// How many events the store holds (a rebuild's progress total).
pub async fn event_count(executor: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(executor)
        .await?;
    u64::try_from(count).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The last sequence stored for a listing, or `None` when it has no events.
pub async fn last_sequence(
    executor: impl PgExecutor<'_>,
    listing_key: &ListingKey,
) -> Result<Option<Sequence>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT max(sequence) FROM events WHERE aggregate_type = 'Listing' AND aggregate_id = $1",
    )
    .bind(listing_key)
    .fetch_one(executor)
    .await
}
