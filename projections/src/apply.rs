//! Applying events to the read model: idempotent, order-aware per listing.
//!
//! Each listing row remembers the last sequence applied (`version`). An event at or below it
//! is a duplicate and is skipped; an event beyond `version + 1` means events are missing, and
//! they are read from the event store (the source of truth) and applied first. Nothing here
//! depends on the order or the number of times events arrive, so redeliveries, a restarted
//! consumer and the rebuild all converge on the same rows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use keh_events::envelope::EventEnvelope;
use keh_events::listing::ListingEvent;
use keh_listing::{Listing, ListingState};
use keh_store::outbox::{self, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

/// One event, from the stream or from the store.
#[derive(Clone, Debug)]
pub struct Fact {
    pub listing_key: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event: ListingEvent,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: Uuid,
}

impl From<EventEnvelope> for Fact {
    fn from(e: EventEnvelope) -> Self {
        Self {
            listing_key: e.listing_key,
            sequence: i64::try_from(e.sequence).unwrap_or(i64::MAX),
            event_id: e.event_id,
            effective_at: e.effective_at,
            recorded_at: e.recorded_at,
            actor: e.actor,
            correlation_id: e.correlation_id,
            event: e.event,
        }
    }
}

impl From<StoredEvent> for Fact {
    fn from(e: StoredEvent) -> Self {
        Self {
            listing_key: e.listing_key,
            sequence: e.sequence,
            event_id: e.event_id,
            effective_at: e.event.effective_at(),
            recorded_at: e.recorded_at,
            actor: e.metadata.actor,
            correlation_id: e.metadata.correlation_id,
            event: e.event,
        }
    }
}

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: u64,
    pub duplicates: u64,
    /// Events read from the store to fill gaps.
    pub repaired: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("reading the event store: {0}")]
    Store(#[from] outbox::ReadError),
    #[error("listing {0}: stored read-model state cannot be read: {1}")]
    State(String, serde_json::Error),
    #[error("listing {listing}: events {from}..{to} are not in the event store")]
    Missing { listing: String, from: i64, to: i64 },
}

impl ApplyError {
    /// Whether trying again can never help (the data is at fault, not a connection).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Database(_) | Self::Store(outbox::ReadError::Database(_)) => false,
            Self::Store(outbox::ReadError::Undecodable { .. })
            | Self::State(..)
            | Self::Missing { .. } => true,
        }
    }
}

/// A validated schema name (the live one or a rebuild's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema(String);

impl Schema {
    /// Lower-case letters, digits and underscores only: it is spliced into SQL.
    pub fn new(name: &str) -> Option<Self> {
        let valid = !name.is_empty()
            && name.len() < 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        valid.then(|| Self(name.to_owned()))
    }

    pub fn live() -> Self {
        Self(crate::LIVE_SCHEMA.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Applies `facts` inside the caller's transaction (`connection` is in one).
pub async fn apply(
    connection: &mut PgConnection,
    schema: &Schema,
    facts: Vec<Fact>,
) -> Result<Applied, ApplyError> {
    let mut by_listing: BTreeMap<String, BTreeMap<i64, Fact>> = BTreeMap::new();
    let mut outcome = Applied::default();
    for fact in facts {
        let slot = by_listing.entry(fact.listing_key.clone()).or_default();
        if slot.insert(fact.sequence, fact).is_some() {
            outcome.duplicates += 1;
        }
    }
    // Listings in key order: concurrent appliers lock rows in the same order (no deadlock).
    for (key, facts) in by_listing {
        apply_listing(connection, schema, &key, facts, &mut outcome).await?;
    }
    Ok(outcome)
}

async fn apply_listing(
    connection: &mut PgConnection,
    schema: &Schema,
    key: &str,
    facts: BTreeMap<i64, Fact>,
    outcome: &mut Applied,
) -> Result<(), ApplyError> {
    let s = schema.as_str();
    let row: Option<(i64, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT version, state FROM {s}.listings WHERE listing_key = $1 FOR UPDATE"
    ))
    .bind(key)
    .fetch_optional(&mut *connection)
    .await?;
    let (mut version, mut listing) = match row {
        Some((version, state)) => {
            let state: ListingState =
                serde_json::from_value(state).map_err(|e| ApplyError::State(key.to_owned(), e))?;
            (version, Listing::from_state(state))
        }
        None => (0, Listing::default()),
    };
    let start_version = version;
    let mut history: Vec<Fact> = Vec::new();
    for (sequence, fact) in facts {
        if sequence <= version {
            outcome.duplicates += 1;
            continue;
        }
        if sequence > version + 1 {
            // Missing events: the store has them (it is the source of truth).
            let missing =
                outbox::listing_events(&mut *connection, key, version, Some(sequence - 1), None)
                    .await?;
            for stored in missing {
                outcome.repaired += 1;
                version = stored.sequence;
                let fact = Fact::from(stored);
                listing.apply_event(fact.event.clone());
                history.push(fact);
            }
            if version != sequence - 1 {
                // The store does not have them either: the message cannot apply.
                return Err(ApplyError::Missing {
                    listing: key.to_owned(),
                    from: version + 1,
                    to: sequence - 1,
                });
            }
        }
        version = sequence;
        listing.apply_event(fact.event.clone());
        outcome.applied += 1;
        history.push(fact);
    }
    if version == start_version {
        return Ok(());
    }
    let Some(state) = listing.state() else {
        return Ok(());
    };
    let last_recorded = history.last().map_or_else(Utc::now, |f| f.recorded_at);
    if !write_listing(connection, schema, state, version, last_recorded).await? {
        // A newer version is already there (two appliers overlapped): leave it all alone.
        return Ok(());
    }
    let touches = |types: &[&str]| {
        history
            .iter()
            .any(|f| types.contains(&f.event.event_type()))
    };
    if touches(&[
        "ListingCreated",
        "MediaAdded",
        "MediaRemoved",
        "MediaReordered",
    ]) {
        write_media(connection, schema, state).await?;
    }
    if touches(&["ListingCreated", "OpenHouseScheduled", "OpenHouseCanceled"]) {
        write_open_houses(connection, schema, state).await?;
    }
    for fact in history {
        let data = serde_json::to_value(&fact.event).unwrap_or(serde_json::Value::Null);
        sqlx::query(&format!(
            "INSERT INTO {s}.listing_events (listing_key, sequence, event_id, event_type, effective_at, recorded_at, actor, correlation_id, data)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (listing_key, sequence) DO NOTHING"
        ))
        .bind(&fact.listing_key)
        .bind(fact.sequence)
        .bind(fact.event_id)
        .bind(fact.event.event_type())
        .bind(fact.effective_at)
        .bind(fact.recorded_at)
        .bind(&fact.actor)
        .bind(fact.correlation_id)
        .bind(data.get("Data").cloned().unwrap_or(serde_json::Value::Null))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Upserts the row; never moves a row back to an older version (two appliers can overlap
/// for a moment while a partition changes hands). Returns whether it wrote.
async fn write_listing(
    connection: &mut PgConnection,
    schema: &Schema,
    state: &ListingState,
    version: i64,
    recorded_at: DateTime<Utc>,
) -> Result<bool, ApplyError> {
    let s = schema.as_str();
    let json = serde_json::to_value(state)
        .map_err(|e| ApplyError::State(state.listing_key.to_string(), e))?;
    let d = &state.details;
    let written = sqlx::query(&format!(
        "INSERT INTO {s}.listings (listing_key, version, standard_status, property_type, list_price, city, postal_code,
             bedrooms_total, bathrooms_total_integer, living_area, latitude, longitude, modification_timestamp, recorded_at, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (listing_key) DO UPDATE SET
             version = EXCLUDED.version, standard_status = EXCLUDED.standard_status,
             property_type = EXCLUDED.property_type, list_price = EXCLUDED.list_price, city = EXCLUDED.city,
             postal_code = EXCLUDED.postal_code, bedrooms_total = EXCLUDED.bedrooms_total,
             bathrooms_total_integer = EXCLUDED.bathrooms_total_integer, living_area = EXCLUDED.living_area,
             latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
             modification_timestamp = EXCLUDED.modification_timestamp, recorded_at = EXCLUDED.recorded_at,
             state = EXCLUDED.state
         WHERE {s}.listings.version < EXCLUDED.version"
    ))
    .bind(state.listing_key.as_str())
    .bind(version)
    .bind(state.standard_status.as_str())
    .bind(state.property_type.as_str())
    .bind(state.list_price.get())
    .bind(d.city.as_ref().map(|c| c.as_str()))
    .bind(d.postal_code.as_ref().map(|c| c.as_str()))
    .bind(d.bedrooms_total.map(|v| v.get()))
    .bind(d.bathrooms_total_integer.map(|v| v.get()))
    .bind(d.living_area.map(|v| v.get()))
    .bind(d.latitude.map(|v| v.get()))
    .bind(d.longitude.map(|v| v.get()))
    .bind(state.modification_timestamp)
    .bind(recorded_at)
    .bind(json)
    .execute(&mut *connection)
    .await?;
    Ok(written.rows_affected() == 1)
}

/// Replaces the listing's media rows with its current media.
async fn write_media(
    connection: &mut PgConnection,
    schema: &Schema,
    state: &ListingState,
) -> Result<(), ApplyError> {
    let s = schema.as_str();
    let key = state.listing_key.as_str();
    sqlx::query(&format!(
        "DELETE FROM {s}.listing_media WHERE listing_key = $1"
    ))
    .bind(key)
    .execute(&mut *connection)
    .await?;
    for media in &state.media {
        sqlx::query(&format!(
            "INSERT INTO {s}.listing_media (listing_key, media_key, media_order, media_url, media_category, short_description)
             VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(key)
        .bind(media.media_key.as_str())
        .bind(i32::try_from(media.order).unwrap_or(i32::MAX))
        .bind(media.media_url.as_str())
        .bind(media.media_category.as_str())
        .bind(media.short_description.as_ref().map(|d| d.as_str()))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Replaces the listing's open-house rows with its current open houses.
async fn write_open_houses(
    connection: &mut PgConnection,
    schema: &Schema,
    state: &ListingState,
) -> Result<(), ApplyError> {
    let s = schema.as_str();
    let key = state.listing_key.as_str();
    sqlx::query(&format!(
        "DELETE FROM {s}.listing_open_houses WHERE listing_key = $1"
    ))
    .bind(key)
    .execute(&mut *connection)
    .await?;
    for open_house in &state.open_houses {
        let status = match open_house.open_house_status {
            keh_listing::OpenHouseStatus::Active => "Active",
            keh_listing::OpenHouseStatus::Canceled => "Canceled",
        };
        sqlx::query(&format!(
            "INSERT INTO {s}.listing_open_houses (listing_key, open_house_key, open_house_date, open_house_start_time,
                 open_house_end_time, open_house_type, open_house_status, open_house_remarks, showing_agent_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(key)
        .bind(open_house.open_house_key.as_str())
        .bind(open_house.open_house_date)
        .bind(open_house.open_house_start_time)
        .bind(open_house.open_house_end_time)
        .bind(open_house.open_house_type.as_str())
        .bind(status)
        .bind(open_house.open_house_remarks.as_ref().map(|r| r.as_str()))
        .bind(open_house.showing_agent_key.as_ref().map(|r| r.as_str()))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}
