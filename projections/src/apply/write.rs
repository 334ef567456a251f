//! The read model's rows as a batch leaves them: each statement writes every listing of
//! the batch at once (`UNNEST` of one array per column), not a statement per row.

use std::collections::HashSet;

use chrono::Utc;
use keh_events::envelope::EventEnvelope;
use keh_listing::ListingState;
use sqlx::PgConnection;

use super::{ApplyError, Changed};

/// Upserts the rows in one statement; never moves a row back to an older version (two
/// appliers can overlap for a moment while a partition changes hands). Returns the keys it
/// wrote.
pub(super) async fn write_listings(
    connection: &mut PgConnection,
    changed: &[Changed],
) -> Result<HashSet<String>, ApplyError> {
    if changed.is_empty() {
        return Ok(HashSet::new());
    }
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
    let written = sqlx::query_scalar!(
        "INSERT INTO listings (listing_key, version, standard_status, property_type, list_price, city, postal_code,
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
         WHERE listings.version < EXCLUDED.version
         RETURNING listing_key",
        &keys,
        versions as _,
        &statuses as &[&str],
        &types as &[&str],
        &prices,
        cities as _,
        postal_codes as _,
        bedrooms as _,
        bathrooms as _,
        areas as _,
        latitudes as _,
        longitudes as _,
        &modified,
        &recorded,
        &states,
    )
    .fetch_all(&mut *connection)
    .await?;
    Ok(written.into_iter().collect())
}

/// Appends the timeline rows of the batch in one statement (a row already there stays).
pub(super) async fn write_history(
    connection: &mut PgConnection,
    changed: &[Changed],
) -> Result<(), ApplyError> {
    let facts: Vec<&EventEnvelope> = changed.iter().flat_map(|c| c.history.iter()).collect();
    if facts.is_empty() {
        return Ok(());
    }
    let data: Vec<serde_json::Value> = facts
        .iter()
        .map(|f| {
            serde_json::to_value(&f.event)
                .ok()
                .and_then(|v| v.get("Data").cloned())
                .unwrap_or(serde_json::Value::Null)
        })
        .collect();
    sqlx::query!(
        "INSERT INTO listing_events (listing_key, sequence, event_id, event_type, effective_at, recorded_at, actor, correlation_id, data)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::uuid[], $4::text[], $5::timestamptz[], $6::timestamptz[],
             $7::text[], $8::uuid[], $9::jsonb[])
         ON CONFLICT (listing_key, sequence) DO NOTHING",
        facts.iter().map(|f| &f.listing_key).collect::<Vec<_>>() as _,
        facts.iter().map(|f| f.sequence).collect::<Vec<_>>() as _,
        &facts.iter().map(|f| f.event_id).collect::<Vec<_>>(),
        &facts.iter().map(|f| f.event.event_type()).collect::<Vec<_>>() as &[&str],
        &facts.iter().map(|f| f.effective_at).collect::<Vec<_>>(),
        &facts.iter().map(|f| f.recorded_at).collect::<Vec<_>>(),
        &facts.iter().map(|f| f.actor.as_str()).collect::<Vec<_>>() as &[&str],
        &facts.iter().map(|f| f.correlation_id).collect::<Vec<_>>(),
        &data,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Replaces the listing's media rows with its current media (one `DELETE`, one `INSERT`
/// whatever their number).
pub(super) async fn write_media(
    connection: &mut PgConnection,
    state: &ListingState,
) -> Result<(), ApplyError> {
    let media = &state.media;
    let orders = media
        .iter()
        .map(|m| i32::try_from(m.order))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApplyError::Database(sqlx::Error::Encode(Box::new(e))))?;
    let key = state.listing_key.as_str();
    sqlx::query!("DELETE FROM listing_media WHERE listing_key = $1", key)
        .execute(&mut *connection)
        .await?;
    sqlx::query!(
        "INSERT INTO listing_media (listing_key, media_key, media_order, media_url, media_category, short_description)
         SELECT $1, * FROM UNNEST($2::text[], $3::integer[], $4::text[], $5::text[], $6::text[])",
        key,
        &media.iter().map(|m| m.media_key.as_str()).collect::<Vec<_>>() as &[&str],
        &orders,
        &media.iter().map(|m| m.media_url.as_str()).collect::<Vec<_>>() as &[&str],
        &media.iter().map(|m| m.media_category.as_str()).collect::<Vec<_>>() as &[&str],
        media
            .iter()
            .map(|m| m.short_description.as_ref().map(|d| d.as_str()))
            .collect::<Vec<_>>() as _,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Replaces the listing's open-house rows with its current open houses (one `DELETE`, one
/// `INSERT` whatever their number).
pub(super) async fn write_open_houses(
    connection: &mut PgConnection,
    state: &ListingState,
) -> Result<(), ApplyError> {
    let houses = &state.open_houses;
    let key = state.listing_key.as_str();
    sqlx::query!(
        "DELETE FROM listing_open_houses WHERE listing_key = $1",
        key
    )
    .execute(&mut *connection)
    .await?;
    sqlx::query!(
        "INSERT INTO listing_open_houses (listing_key, open_house_key, open_house_date, open_house_start_time,
             open_house_end_time, open_house_type, open_house_status, open_house_remarks, showing_agent_key)
         SELECT $1, * FROM UNNEST($2::text[], $3::date[], $4::timestamptz[], $5::timestamptz[], $6::text[],
             $7::text[], $8::text[], $9::text[])",
        key,
        &houses.iter().map(|o| o.open_house_key.as_str()).collect::<Vec<_>>() as &[&str],
        &houses.iter().map(|o| o.open_house_date).collect::<Vec<_>>(),
        &houses.iter().map(|o| o.open_house_start_time).collect::<Vec<_>>(),
        &houses.iter().map(|o| o.open_house_end_time).collect::<Vec<_>>(),
        &houses.iter().map(|o| o.open_house_type.as_str()).collect::<Vec<_>>() as &[&str],
        &houses
            .iter()
            .map(|o| match o.open_house_status {
                keh_listing::OpenHouseStatus::Active => "Active",
                keh_listing::OpenHouseStatus::Canceled => "Canceled",
            })
            .collect::<Vec<_>>() as &[&str],
        houses
            .iter()
            .map(|o| o.open_house_remarks.as_ref().map(|r| r.as_str()))
            .collect::<Vec<_>>() as _,
        houses
            .iter()
            .map(|o| o.showing_agent_key.as_ref().map(|r| r.as_str()))
            .collect::<Vec<_>>() as _,
    )
    .execute(&mut *connection)
    .await?;
    Ok(())
}
