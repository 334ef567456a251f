//! The read model's rows as a batch leaves them: each statement writes every listing of
//! the batch at once (`UNNEST` of one array per column), not a statement per row.

use std::collections::HashSet;

use chrono::Utc;
use keh_events::ListingKey;
use keh_events::envelope::EventEnvelope;
use keh_listing::ListingState;
use sqlx::PgConnection;

use super::{ApplyError, Changed, Schema};

/// Upserts the rows in one statement; never moves a row back to an older version (two
/// appliers can overlap for a moment while a partition changes hands). Returns the keys it
/// wrote.
pub(super) async fn write_listings(
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
pub(super) async fn write_history(
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

/// Replaces the listing's rows of `table` (its media or its open houses) with `insert`'s:
/// one `DELETE` and one `INSERT … SELECT FROM UNNEST` whatever their number.
async fn replace_rows(
    connection: &mut PgConnection,
    schema: &Schema,
    table: &str,
    key: &ListingKey,
    insert: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<(), ApplyError> {
    let s = schema.as_str();
    sqlx::query(&format!("DELETE FROM {s}.{table} WHERE listing_key = $1"))
        .bind(key)
        .execute(&mut *connection)
        .await?;
    insert.execute(&mut *connection).await?;
    Ok(())
}

/// Replaces the listing's media rows with its current media.
pub(super) async fn write_media(
    connection: &mut PgConnection,
    schema: &Schema,
    state: &ListingState,
) -> Result<(), ApplyError> {
    let s = schema.as_str();
    let media = &state.media;
    let orders = media
        .iter()
        .map(|m| i32::try_from(m.order))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApplyError::Database(sqlx::Error::Encode(Box::new(e))))?;
    let sql = format!(
        "INSERT INTO {s}.listing_media (listing_key, media_key, media_order, media_url, media_category, short_description)
         SELECT $1, * FROM UNNEST($2::text[], $3::integer[], $4::text[], $5::text[], $6::text[])"
    );
    let insert = sqlx::query(&sql)
        .bind(&state.listing_key)
        .bind(
            media
                .iter()
                .map(|m| m.media_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(orders)
        .bind(
            media
                .iter()
                .map(|m| m.media_url.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            media
                .iter()
                .map(|m| m.media_category.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            media
                .iter()
                .map(|m| m.short_description.as_ref().map(|d| d.as_str()))
                .collect::<Vec<_>>(),
        );
    replace_rows(
        connection,
        schema,
        "listing_media",
        &state.listing_key,
        insert,
    )
    .await
}

/// Replaces the listing's open-house rows with its current open houses.
pub(super) async fn write_open_houses(
    connection: &mut PgConnection,
    schema: &Schema,
    state: &ListingState,
) -> Result<(), ApplyError> {
    let s = schema.as_str();
    let houses = &state.open_houses;
    let sql = format!(
        "INSERT INTO {s}.listing_open_houses (listing_key, open_house_key, open_house_date, open_house_start_time,
             open_house_end_time, open_house_type, open_house_status, open_house_remarks, showing_agent_key)
         SELECT $1, * FROM UNNEST($2::text[], $3::date[], $4::timestamptz[], $5::timestamptz[], $6::text[],
             $7::text[], $8::text[], $9::text[])"
    );
    let insert = sqlx::query(&sql)
        .bind(&state.listing_key)
        .bind(
            houses
                .iter()
                .map(|o| o.open_house_key.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(houses.iter().map(|o| o.open_house_date).collect::<Vec<_>>())
        .bind(
            houses
                .iter()
                .map(|o| o.open_house_start_time)
                .collect::<Vec<_>>(),
        )
        .bind(
            houses
                .iter()
                .map(|o| o.open_house_end_time)
                .collect::<Vec<_>>(),
        )
        .bind(
            houses
                .iter()
                .map(|o| o.open_house_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            houses
                .iter()
                .map(|o| match o.open_house_status {
                    keh_listing::OpenHouseStatus::Active => "Active",
                    keh_listing::OpenHouseStatus::Canceled => "Canceled",
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            houses
                .iter()
                .map(|o| o.open_house_remarks.as_ref().map(|r| r.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            houses
                .iter()
                .map(|o| o.showing_agent_key.as_ref().map(|r| r.as_str()))
                .collect::<Vec<_>>(),
        );
    replace_rows(
        connection,
        schema,
        "listing_open_houses",
        &state.listing_key,
        insert,
    )
    .await
}
