//! A search's filters: parsed from the query string, and appended to the statement as
//! conditions with bound values.

use chrono::{DateTime, Utc};
use keh_events::reso::{PropertyType, StandardStatus};
use keh_http::Problem;
use rust_decimal::Decimal;
use sqlx::QueryBuilder;

use crate::SCHEMA;
use crate::params::{Params, invalid};

/// The parsed filters of a search.
pub(super) struct Filters {
    statuses: Vec<String>,
    types: Vec<String>,
    city: Option<String>,
    postal_code: Option<String>,
    min_price: Option<Decimal>,
    max_price: Option<Decimal>,
    min_beds: Option<i32>,
    min_baths: Option<i32>,
    min_area: Option<Decimal>,
    max_area: Option<Decimal>,
    bbox: Option<[f64; 4]>,
    text: Option<String>,
    modified_since: Option<DateTime<Utc>>,
}

impl Filters {
    pub(super) fn parse(params: &Params) -> Result<Self, Problem> {
        let statuses: Vec<StandardStatus> = params.list("status", "StandardStatus values")?;
        let types: Vec<PropertyType> = params.list("property_type", "PropertyType values")?;
        let small = |v: Option<i64>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        Ok(Self {
            statuses: statuses.iter().map(|s| s.as_str().to_owned()).collect(),
            types: types.iter().map(|s| s.as_str().to_owned()).collect(),
            city: params.text("city")?.map(str::to_owned),
            postal_code: params.text("postal_code")?.map(str::to_owned),
            min_price: params.decimal("min_price")?,
            max_price: params.decimal("max_price")?,
            min_beds: small(params.integer("min_beds", 0, 999)?),
            min_baths: small(params.integer("min_baths", 0, 999)?),
            min_area: params.decimal("min_area")?,
            max_area: params.decimal("max_area")?,
            bbox: params.text("bbox")?.map(parse_bbox).transpose()?,
            text: params.text("q")?.map(str::to_owned),
            modified_since: params.timestamp("modified_since")?,
        })
    }

    /// Appends ` WHERE …` with every filter bound as a parameter.
    pub(super) fn push(&self, query: &mut QueryBuilder<'_, sqlx::Postgres>) {
        query.push(" WHERE true");
        push_any_of(query, "standard_status", &self.statuses);
        push_any_of(query, "property_type", &self.types);
        if let Some(city) = &self.city {
            query
                .push(" AND lower(city) = lower(")
                .push_bind(city.clone())
                .push(")");
        }
        if let Some(postal_code) = &self.postal_code {
            query
                .push(" AND postal_code = ")
                .push_bind(postal_code.clone());
        }
        push_range(query, "list_price", self.min_price, self.max_price);
        push_range(query, "living_area", self.min_area, self.max_area);
        if let Some(beds) = self.min_beds {
            query.push(" AND bedrooms_total >= ").push_bind(beds);
        }
        if let Some(baths) = self.min_baths {
            query
                .push(" AND bathrooms_total_integer >= ")
                .push_bind(baths);
        }
        if let Some([min_lon, min_lat, max_lon, max_lat]) = self.bbox {
            query
                .push(" AND point(longitude::float8, latitude::float8) <@ box(point(")
                .push_bind(min_lon)
                .push(", ")
                .push_bind(min_lat)
                .push("), point(")
                .push_bind(max_lon)
                .push(", ")
                .push_bind(max_lat)
                .push("))");
        }
        if let Some(text) = &self.text {
            query
                .push(format!(
                    " AND listing_key IN (SELECT listing_key FROM {SCHEMA}.listing_text WHERE search @@ plainto_tsquery('simple', "
                ))
                .push_bind(text.clone())
                .push("))");
        }
        if let Some(since) = self.modified_since {
            query.push(" AND recorded_at >= ").push_bind(since);
        }
    }
}

/// `column = value` for one value, `column = ANY(values)` for several. One value must be an
/// equality: PostgreSQL then walks an index on `(column, sort column)` in sort order, which
/// it does not do for `ANY` (a search of one status sorted by price would sort every row of
/// that status).
fn push_any_of(query: &mut QueryBuilder<'_, sqlx::Postgres>, column: &str, values: &[String]) {
    match values {
        [] => {}
        [one] => {
            query
                .push(format!(" AND {column} = "))
                .push_bind(one.clone());
        }
        many => {
            query
                .push(format!(" AND {column} = ANY("))
                .push_bind(many.to_vec())
                .push(")");
        }
    }
}

fn push_range(
    query: &mut QueryBuilder<'_, sqlx::Postgres>,
    column: &str,
    min: Option<Decimal>,
    max: Option<Decimal>,
) {
    if let Some(min) = min {
        query.push(format!(" AND {column} >= ")).push_bind(min);
    }
    if let Some(max) = max {
        query.push(format!(" AND {column} <= ")).push_bind(max);
    }
}

fn parse_bbox(raw: &str) -> Result<[f64; 4], Problem> {
    let bad = || {
        invalid(
            "bbox",
            "invalid-value",
            "must be minLon,minLat,maxLon,maxLat in degrees",
        )
    };
    let numbers: Vec<f64> = raw
        .split(',')
        .map(|p| p.trim().parse::<f64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [min_lon, min_lat, max_lon, max_lat] = numbers.as_slice() else {
        return Err(bad());
    };
    let in_range =
        |lon: f64, lat: f64| (-180.0..=180.0).contains(&lon) && (-90.0..=90.0).contains(&lat);
    if !in_range(*min_lon, *min_lat)
        || !in_range(*max_lon, *max_lat)
        || min_lon > max_lon
        || min_lat > max_lat
    {
        return Err(bad());
    }
    Ok([*min_lon, *min_lat, *max_lon, *max_lat])
}
