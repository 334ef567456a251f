//! Applying events to the read model: idempotent, order-aware per listing.
//!
//! Each listing row remembers the last sequence applied (`version`). An event at or below it
//! is a duplicate and is skipped; an event beyond `version + 1` means events are missing, and
//! they are read from the event store (the source of truth) and applied first. Nothing here
//! depends on the order or the number of times events arrive, so redeliveries, a restarted
//! consumer and the rebuild all converge on the same rows.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use keh_events::envelope::EventEnvelope;
use keh_events::{ListingKey, Sequence};
use keh_listing::{Listing, ListingState};
use keh_store::outbox;
use sqlx::PgConnection;

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
    State(ListingKey, serde_json::Error),
    #[error("listing {listing}: events {from}..{to} are not in the event store")]
    Missing {
        listing: ListingKey,
        from: u64,
        to: u64,
    },
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

/// A batch's events by listing, each listing's in sequence order; a second copy of an
/// event in the batch is counted as a duplicate.
pub type ByListing = BTreeMap<ListingKey, BTreeMap<Sequence, EventEnvelope>>;

/// Groups `events` by listing (see [`ByListing`]).
pub fn by_listing(events: Vec<EventEnvelope>, outcome: &mut Applied) -> ByListing {
    let mut grouped = ByListing::new();
    for event in events {
        let slot = grouped.entry(event.listing_key.clone()).or_default();
        if slot.insert(event.sequence, event).is_some() {
            outcome.duplicates += 1;
        }
    }
    grouped
}

/// Hands `step` each of one listing's events that follow `version` (the last sequence
/// applied, 0 for none), in order: duplicates are counted and skipped, and events missing
/// before one are read from the event store (the source of truth) and handed over first.
/// Returns the last sequence handed over (`None`: nothing new).
pub async fn in_order(
    connection: &mut PgConnection,
    key: &ListingKey,
    mut version: u64,
    events: BTreeMap<Sequence, EventEnvelope>,
    outcome: &mut Applied,
    mut step: impl FnMut(EventEnvelope) -> Result<(), ApplyError>,
) -> Result<Option<Sequence>, ApplyError> {
    let mut last = None;
    for (sequence, event) in events {
        if sequence.get() <= version {
            outcome.duplicates += 1;
            continue;
        }
        if sequence.get() > version + 1 {
            let missing = outbox::listing_events(
                &mut *connection,
                key,
                Sequence::try_from(version).ok(),
                Sequence::try_from(sequence.get() - 1).ok(),
                None,
                event.partition,
            )
            .await?;
            for stored in missing {
                outcome.repaired += 1;
                version = stored.envelope.sequence.get();
                step(stored.envelope)?;
            }
            if version != sequence.get() - 1 {
                // The store does not have them either: the message cannot apply.
                return Err(ApplyError::Missing {
                    listing: key.clone(),
                    from: version + 1,
                    to: sequence.get() - 1,
                });
            }
        }
        version = sequence.get();
        last = Some(sequence);
        outcome.applied += 1;
        step(event)?;
    }
    Ok(last)
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

/// Applies `events` inside the caller's transaction (`connection` is in one).
pub async fn apply(
    connection: &mut PgConnection,
    schema: &Schema,
    events: Vec<EventEnvelope>,
) -> Result<Applied, ApplyError> {
    let mut outcome = Applied::default();
    let by_listing = by_listing(events, &mut outcome);
    if by_listing.is_empty() {
        return Ok(outcome);
    }
    let s = schema.as_str();
    // Every row of the batch, locked at once in key order: concurrent appliers lock in the
    // same order (no deadlock), and a batch costs a handful of statements, not a few per event.
    let keys: Vec<&ListingKey> = by_listing.keys().collect();
    // As text, parsed straight into the typed state (no `serde_json::Value` tree first).
    let rows: Vec<(ListingKey, Sequence, String)> = sqlx::query_as(&format!(
        "SELECT listing_key, version, state::text FROM {s}.listings WHERE listing_key = ANY($1)
          ORDER BY listing_key FOR UPDATE"
    ))
    .bind(&keys)
    .fetch_all(&mut *connection)
    .await?;
    let mut current: HashMap<ListingKey, (Sequence, String)> = rows
        .into_iter()
        .map(|(key, version, state)| (key, (version, state)))
        .collect();
    let mut changed = Vec::new();
    for (key, facts) in by_listing {
        if let Some(change) =
            advance(connection, &key, current.remove(&key), facts, &mut outcome).await?
        {
            changed.push(change);
        }
    }
    let written = write_listings(connection, schema, &changed).await?;
    write_history(connection, schema, &changed).await?;
    for change in changed
        .iter()
        .filter(|c| written.contains(c.state.listing_key.as_str()))
    {
        // A newer version already there (two appliers overlapped) is left alone.
        let touches = |types: &[&str]| {
            change
                .history
                .iter()
                .any(|f| types.contains(&f.event.event_type()))
        };
        // A new listing has neither media nor open houses: only their own events touch them.
        if touches(&["MediaAdded", "MediaRemoved", "MediaReordered"]) {
            write_media(connection, schema, &change.state).await?;
        }
        if touches(&["OpenHouseScheduled", "OpenHouseCanceled"]) {
            write_open_houses(connection, schema, &change.state).await?;
        }
    }
    Ok(outcome)
}

/// A listing moved forward by a batch.
struct Changed {
    state: ListingState,
    version: Sequence,
    history: Vec<EventEnvelope>,
}

/// Applies one listing's events to its current row (skipping duplicates, filling gaps from
/// the store). `None` when nothing new happened to it.
async fn advance(
    connection: &mut PgConnection,
    key: &ListingKey,
    row: Option<(Sequence, String)>,
    events: BTreeMap<Sequence, EventEnvelope>,
    outcome: &mut Applied,
) -> Result<Option<Changed>, ApplyError> {
    let (version, mut listing) = match row {
        Some((version, state)) => {
            let state: ListingState =
                serde_json::from_str(&state).map_err(|e| ApplyError::State(key.clone(), e))?;
            (version.get(), Listing::from_state(state))
        }
        None => (0, Listing::default()),
    };
    let mut history: Vec<EventEnvelope> = Vec::new();
    let last = in_order(connection, key, version, events, outcome, |event| {
        listing.apply_event(event.event.clone());
        history.push(event);
        Ok(())
    })
    .await?;
    let Some(version) = last else {
        return Ok(None);
    };
    Ok(listing.state().cloned().map(|state| Changed {
        state,
        version,
        history,
    }))
}

/// Upserts the rows in one statement; never moves a row back to an older version (two
/// appliers can overlap for a moment while a partition changes hands). Returns the keys it
/// wrote.
async fn write_listings(
    connection: &mut PgConnection,
    schema: &Schema,
    changed: &[Changed],
) -> Result<HashSet<String>, ApplyError> {
    if changed.is_empty() {
        return Ok(HashSet::new());
    }
    let s = schema.as_str();
    let mut keys = Vec::with_capacity(changed.len());
    let mut versions = Vec::with_capacity(changed.len());
    let mut statuses = Vec::with_capacity(changed.len());
    let mut types = Vec::with_capacity(changed.len());
    let mut prices = Vec::with_capacity(changed.len());
    let mut cities = Vec::with_capacity(changed.len());
    let mut postal_codes = Vec::with_capacity(changed.len());
    let mut bedrooms = Vec::with_capacity(changed.len());
    let mut bathrooms = Vec::with_capacity(changed.len());
    let mut areas = Vec::with_capacity(changed.len());
    let mut latitudes = Vec::with_capacity(changed.len());
    let mut longitudes = Vec::with_capacity(changed.len());
    let mut modified = Vec::with_capacity(changed.len());
    let mut recorded = Vec::with_capacity(changed.len());
    let mut states = Vec::with_capacity(changed.len());
    for change in changed {
        let state = &change.state;
        let d = &state.details;
        keys.push(state.listing_key.as_str().to_owned());
        versions.push(change.version);
        statuses.push(state.standard_status.as_str());
        types.push(state.property_type.as_str());
        prices.push(state.list_price.get());
        cities.push(d.city.as_ref().map(|c| c.as_str().to_owned()));
        postal_codes.push(d.postal_code.as_ref().map(|c| c.as_str().to_owned()));
        bedrooms.push(d.bedrooms_total.map(|v| v.get()));
        bathrooms.push(d.bathrooms_total_integer.map(|v| v.get()));
        areas.push(d.living_area.map(|v| v.get()));
        latitudes.push(d.latitude.map(|v| v.get()));
        longitudes.push(d.longitude.map(|v| v.get()));
        modified.push(state.modification_timestamp);
        recorded.push(
            change
                .history
                .last()
                .map_or_else(Utc::now, |f| f.recorded_at),
        );
        states.push(
            serde_json::to_string(state)
                .map_err(|e| ApplyError::State(state.listing_key.clone(), e))?,
        );
    }
    let written: Vec<String> = sqlx::query_scalar(&format!(
        "INSERT INTO {s}.listings (listing_key, version, standard_status, property_type, list_price, city, postal_code,
             bedrooms_total, bathrooms_total_integer, living_area, latitude, longitude, modification_timestamp, recorded_at, state)
         SELECT k, v, ss, pt, lp, c, pc, b, ba, la, lat, lon, mt, ra, st::jsonb
           FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::numeric[], $6::text[], $7::text[],
             $8::integer[], $9::integer[], $10::numeric[], $11::numeric[], $12::numeric[], $13::timestamptz[],
             $14::timestamptz[], $15::text[]) AS r(k, v, ss, pt, lp, c, pc, b, ba, la, lat, lon, mt, ra, st)
         ON CONFLICT (listing_key) DO UPDATE SET
             version = EXCLUDED.version, standard_status = EXCLUDED.standard_status,
             property_type = EXCLUDED.property_type, list_price = EXCLUDED.list_price, city = EXCLUDED.city,
             postal_code = EXCLUDED.postal_code, bedrooms_total = EXCLUDED.bedrooms_total,
             bathrooms_total_integer = EXCLUDED.bathrooms_total_integer, living_area = EXCLUDED.living_area,
             latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
             modification_timestamp = EXCLUDED.modification_timestamp, recorded_at = EXCLUDED.recorded_at,
             state = EXCLUDED.state
         WHERE {s}.listings.version < EXCLUDED.version
         RETURNING listing_key"
    ))
    .bind(keys)
    .bind(versions)
    .bind(statuses)
    .bind(types)
    .bind(prices)
    .bind(cities)
    .bind(postal_codes)
    .bind(bedrooms)
    .bind(bathrooms)
    .bind(areas)
    .bind(latitudes)
    .bind(longitudes)
    .bind(modified)
    .bind(recorded)
    .bind(states)
    .fetch_all(&mut *connection)
    .await?;
    Ok(written.into_iter().collect())
}

/// Appends the timeline rows of the batch in one statement (a row already there stays).
async fn write_history(
    connection: &mut PgConnection,
    schema: &Schema,
    changed: &[Changed],
) -> Result<(), ApplyError> {
    let facts: Vec<&EventEnvelope> = changed.iter().flat_map(|c| c.history.iter()).collect();
    if facts.is_empty() {
        return Ok(());
    }
    let s = schema.as_str();
    let data: Vec<serde_json::Value> = facts
        .iter()
        .map(|f| {
            serde_json::to_value(&f.event)
                .ok()
                .and_then(|v| v.get("Data").cloned())
                .unwrap_or(serde_json::Value::Null)
        })
        .collect();
    sqlx::query(&format!(
        "INSERT INTO {s}.listing_events (listing_key, sequence, event_id, event_type, effective_at, recorded_at, actor, correlation_id, data)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::timestamptz[], $6::timestamptz[],
             $7::text[], $8::uuid[], $9::jsonb[])
         ON CONFLICT (listing_key, sequence) DO NOTHING"
    ))
    .bind(facts.iter().map(|f| &f.listing_key).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.sequence).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.event_id).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.event.event_type()).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.effective_at).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.recorded_at).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.actor.as_str()).collect::<Vec<_>>())
    .bind(facts.iter().map(|f| f.correlation_id).collect::<Vec<_>>())
    .bind(data)
    .execute(&mut *connection)
    .await?;
    Ok(())
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
