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
use sqlx::PgExecutor;
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

/// A row of `events` as the reads below select it. `tx_id` is read as text (sqlx has no
/// xid8 type) under another name: an output column named `tx_id` would make `ORDER BY tx_id`
/// sort the text, and "10000" < "9999".
struct EventRow {
    event_id: Uuid,
    aggregate_id: ListingKey,
    sequence: Sequence,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    tx_text: String,
    global_position: i64,
    recorded_at: DateTime<Utc>,
}

/// Which partition an event's listing is in.
#[derive(Clone, Copy, Debug)]
pub enum Placement {
    /// The stream's partition count: each listing's partition follows from its key.
    Partitions(u32),
    /// Every event read is of one listing, whose partition this is.
    Partition(u32),
}

impl EventRow {
    fn decode(self, placement: Placement) -> Result<StoredEvent, ReadError> {
        let Self {
            event_id,
            aggregate_id: listing_key,
            sequence,
            event_type,
            event_version: version,
            payload,
            metadata,
            tx_text: tx_id,
            global_position,
            recorded_at,
        } = self;
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
        let event: ListingEvent =
            serde_json::from_str(&payload).map_err(|e| undecodable(e.to_string()))?;
        let metadata: HashMap<String, String> =
            serde_json::from_str(&metadata).map_err(|e| undecodable(format!("metadata: {e}")))?;
        let cursor = Cursor {
            tx_id: tx_id
                .parse()
                .map_err(|_| undecodable(format!("tx_id {tx_id}")))?,
            global_position,
        };
        let metadata = Metadata::from_map(&metadata);
        Ok(StoredEvent {
            envelope: EventEnvelope {
                event_id,
                schema_version: version,
                partition: match placement {
                    Placement::Partitions(count) => partition_of(listing_key.as_str(), count),
                    Placement::Partition(partition) => partition,
                },
                listing_key,
                sequence,
                global_position,
                effective_at: event.effective_at(),
                recorded_at,
                actor: metadata.actor,
                correlation_id: metadata.correlation_id,
                causation_id: metadata.causation_id,
                event,
            },
            cursor,
            traceparent: metadata.traceparent,
        })
    }
}

/// Up to `limit` events after `after`, in global order, that no running transaction can
/// precede any more.
pub async fn read_after(
    executor: impl PgExecutor<'_>,
    after: Cursor,
    limit: i64,
    placement: Placement,
) -> Result<Vec<StoredEvent>, ReadError> {
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT event_id AS "event_id!", aggregate_id AS "aggregate_id: ListingKey",
                  sequence AS "sequence: Sequence", event_type, event_version,
                  payload::text AS "payload!", metadata::text AS "metadata!",
                  tx_id::text AS "tx_text!", global_position AS "global_position!",
                  recorded_at AS "recorded_at!"
             FROM events
            WHERE (tx_id, global_position) > ($1::text::xid8, $2)
              AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY events.tx_id, events.global_position
            LIMIT $3"#,
        after.tx_id.to_string(),
        after.global_position,
        limit,
    )
    .fetch_all(executor)
    .await?;
    rows.into_iter().map(|row| row.decode(placement)).collect()
}

/// Whether committed events exist that are still held back behind a running transaction
/// (the relay then polls briefly instead of waiting for the next notification).
pub async fn held_back(executor: impl PgExecutor<'_>, after: Cursor) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM events
                           WHERE (tx_id, global_position) > ($1::text::xid8, $2)
                             AND tx_id >= pg_snapshot_xmin(pg_current_snapshot())) AS "held_back!""#,
        after.tx_id.to_string(),
        after.global_position,
    )
    .fetch_one(executor)
    .await
}

/// The cursor of an event, by id (`None`: the store has no such event).
pub async fn cursor_of(
    executor: impl PgExecutor<'_>,
    event_id: Uuid,
) -> Result<Option<Cursor>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT tx_id::text AS "tx!", global_position AS "global_position!"
             FROM events WHERE event_id = $1"#,
        event_id,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.and_then(|r| cursor_from_row((r.tx, r.global_position))))
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
    let row = sqlx::query!(
        r#"SELECT count(*) AS "count!", min(recorded_at) AS oldest
             FROM events WHERE (tx_id, global_position) > ($1::text::xid8, $2)"#,
        after.tx_id.to_string(),
        after.global_position,
    )
    .fetch_one(executor)
    .await?;
    Ok((row.count, row.oldest))
}

/// Records how far `stream` has been published.
pub async fn save_checkpoint(
    executor: impl PgExecutor<'_>,
    stream: &str,
    cursor: Cursor,
    event_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO relay_checkpoints (stream, tx_id, global_position, event_id, updated_at)
         VALUES ($1, $2::text::xid8, $3, $4, now())
         ON CONFLICT (stream) DO UPDATE
            SET tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position,
                event_id = EXCLUDED.event_id, updated_at = now()",
        stream,
        cursor.tx_id.to_string(),
        cursor.global_position,
        event_id,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// The last saved checkpoint of `stream`.
pub async fn load_checkpoint(
    executor: impl PgExecutor<'_>,
    stream: &str,
) -> Result<Option<Cursor>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT tx_id::text AS "tx!", global_position
             FROM relay_checkpoints WHERE stream = $1"#,
        stream,
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.and_then(|r| cursor_from_row((r.tx, r.global_position))))
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
    let rows = sqlx::query_as!(
        EventRow,
        r#"SELECT event_id AS "event_id!", aggregate_id AS "aggregate_id: ListingKey",
                  sequence AS "sequence: Sequence", event_type, event_version,
                  payload::text AS "payload!", metadata::text AS "metadata!",
                  tx_id::text AS "tx_text!", global_position AS "global_position!",
                  recorded_at AS "recorded_at!"
             FROM events
            WHERE aggregate_type = 'Listing' AND aggregate_id = $1 AND sequence > $2
              AND ($3::bigint IS NULL OR sequence <= $3)
              AND ($4::timestamptz IS NULL OR recorded_at <= $4)
            ORDER BY sequence"#,
        listing_key.as_str(),
        after.map_or(0, i64::from),
        up_to.map(i64::from),
        recorded_until,
    )
    .fetch_all(executor)
    .await?;
    rows.into_iter()
        .map(|row| row.decode(Placement::Partition(partition)))
        .collect()
}

/// How many events the store holds (a rebuild's progress total).
pub async fn event_count(executor: impl PgExecutor<'_>) -> Result<u64, sqlx::Error> {
    let count = sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM events"#)
        .fetch_one(executor)
        .await?;
    u64::try_from(count).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The last sequence stored for a listing, or `None` when it has no events.
pub async fn last_sequence(
    executor: impl PgExecutor<'_>,
    listing_key: &ListingKey,
) -> Result<Option<Sequence>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT max(sequence) AS "last: Sequence"
             FROM events WHERE aggregate_type = 'Listing' AND aggregate_id = $1"#,
        listing_key.as_str(),
    )
    .fetch_one(executor)
    .await
}
