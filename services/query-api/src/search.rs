//! Search: filters, sorts and keyset cursors over the read model (`QueryBuilder` with
//! bound parameters: the one place search SQL is put together), and the open-house list.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use keh_auth::Caller;
use keh_events::reso::{PropertyType, StandardStatus};
use keh_http::Problem;
use keh_listing::ListingState;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{QueryBuilder, Row};

use crate::params::{Params, invalid};
use crate::visibility::{hidden_statuses, push_visibility, visible};
use crate::{QueryApi, SCHEMA, database_problem};

/// Sort orders: a RESO field, `-` for descending; ties broken by `ListingKey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sort {
    ListPrice,
    ModificationTimestamp,
    ListingKey,
}

struct Order {
    sort: Sort,
    descending: bool,
}

impl Order {
    fn parse(raw: Option<&str>) -> Result<Self, Problem> {
        let raw = raw.unwrap_or("-ModificationTimestamp");
        let (descending, name) = raw.strip_prefix('-').map_or((false, raw), |n| (true, n));
        let sort = match name {
            "ListPrice" => Sort::ListPrice,
            "ModificationTimestamp" => Sort::ModificationTimestamp,
            "ListingKey" => Sort::ListingKey,
            _ => {
                return Err(invalid(
                    "sort",
                    "invalid-value",
                    "must be ListPrice, ModificationTimestamp or ListingKey, with - for descending",
                ));
            }
        };
        Ok(Self { sort, descending })
    }

    fn column(&self) -> &'static str {
        match self.sort {
            Sort::ListPrice => "list_price",
            Sort::ModificationTimestamp => "modification_timestamp",
            Sort::ListingKey => "listing_key",
        }
    }

    fn token(&self) -> String {
        format!("{}{:?}", if self.descending { "-" } else { "" }, self.sort)
    }
}

/// The keyset cursor: the sort it belongs to, the last row's sort value and key.
fn encode_cursor(order: &Order, value: &Value, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(json!([order.token(), value, key]).to_string())
}

fn decode_cursor(order: &Order, raw: &str) -> Result<(Value, String), Problem> {
    let bad = || {
        invalid(
            "cursor",
            "invalid-value",
            "is not a cursor this API returned for this sort",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
    let parts: (String, Value, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    // A hand-made cursor must not smuggle what PostgreSQL refuses (NUL) into the query.
    let controls = |s: &str| s.chars().any(char::is_control);
    if parts.0 != order.token() || controls(&parts.2) || parts.1.as_str().is_some_and(controls) {
        return Err(bad());
    }
    Ok((parts.1, parts.2))
}

const SEARCH_PARAMS: &[&str] = &[
    "status",
    "property_type",
    "city",
    "postal_code",
    "min_price",
    "max_price",
    "min_beds",
    "min_baths",
    "min_area",
    "max_area",
    "bbox",
    "q",
    "modified_since",
    "sort",
    "limit",
    "cursor",
    "count",
];

/// The parsed filters of a search.
struct Filters {
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
    fn parse(params: &Params) -> Result<Self, Problem> {
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
    fn push(&self, query: &mut QueryBuilder<'_, sqlx::Postgres>) {
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

/// `GET /api/v1/listings`: search with filters, keyset pagination and an optional count.
///
/// Pages are keyset-paginated on `(sort column, ListingKey)`: a page starts strictly after
/// the previous page's last row, so listings created while a client pages through neither
/// shift rows into a page twice nor push rows out of view.
pub(crate) async fn search(
    State(api): State<QueryApi>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    params.only(SEARCH_PARAMS)?;
    let filters = Filters::parse(&params)?;
    let order = Order::parse(params.text("sort")?)?;
    let limit = params.integer("limit", 1, 200)?.unwrap_or(50);
    let _timer = keh_platform::metrics::db_timer("query.search");
    let cursor = params
        .text("cursor")?
        .map(|raw| decode_cursor(&order, raw))
        .transpose()?;
    let with_count = params.boolean("count")?;

    let column = order.column();
    let mut query = QueryBuilder::new(format!(
        "SELECT listing_key, state, to_jsonb({column}) AS sort_value FROM {SCHEMA}.listings"
    ));
    filters.push(&mut query);
    push_visibility(&mut query, &caller);
    let (comparison, direction) = if order.descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some((value, key)) = cursor {
        query.push(format!(" AND ({column}, listing_key) {comparison} ("));
        push_sort_value(&mut query, order.sort, &value)?;
        query.push(", ").push_bind(key).push(")");
    }
    query
        .push(format!(
            " ORDER BY {column} {direction}, listing_key {direction} LIMIT "
        ))
        .push_bind(limit + 1);
    let rows = query
        .build()
        .fetch_all(&api.shared.pool)
        .await
        .map_err(|e| database_problem(&e))?;

    let page = usize::try_from(limit).unwrap_or(50);
    let has_more = rows.len() > page;
    let mut items = Vec::with_capacity(page);
    let mut last = None;
    for row in rows.iter().take(page) {
        let key: String = row
            .try_get("listing_key")
            .map_err(|e| database_problem(&e))?;
        let sort_value: Value = row
            .try_get("sort_value")
            .map_err(|e| database_problem(&e))?;
        let state: sqlx::types::Json<ListingState> =
            row.try_get("state").map_err(|e| database_problem(&e))?;
        last = Some((sort_value, key));
        items.push(visible(state.0, &caller));
    }
    let next_cursor = if has_more {
        last.map(|(value, key)| encode_cursor(&order, &value, &key))
    } else {
        None
    };
    let mut body = json!({ "items": items, "nextCursor": next_cursor });
    if with_count {
        let mut count = QueryBuilder::new(format!("SELECT count(*) FROM {SCHEMA}.listings"));
        filters.push(&mut count);
        push_visibility(&mut count, &caller);
        let total: i64 = count
            .build_query_scalar()
            .fetch_one(&api.shared.pool)
            .await
            .map_err(|e| database_problem(&e))?;
        body["totalCount"] = json!(total);
    }
    Ok(Json(body).into_response())
}

/// Binds a cursor's sort value with the column's type.
fn push_sort_value(
    query: &mut QueryBuilder<'_, sqlx::Postgres>,
    sort: Sort,
    value: &Value,
) -> Result<(), Problem> {
    let bad = || {
        invalid(
            "cursor",
            "invalid-value",
            "is not a cursor this API returned for this sort",
        )
    };
    match sort {
        Sort::ListPrice => {
            let number = value.as_number().map(ToString::to_string).ok_or_else(bad)?;
            let price: Decimal = number.parse().map_err(|_| bad())?;
            query.push_bind(price);
        }
        Sort::ModificationTimestamp => {
            let at: DateTime<Utc> = value
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)?;
            query.push_bind(at);
        }
        Sort::ListingKey => {
            query.push_bind(value.as_str().ok_or_else(bad)?.to_owned());
        }
    }
    Ok(())
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

/// `GET /api/v1/open-houses`: scheduled (not canceled) open houses starting in
/// `[from, to)` (default: from now on), soonest first, optionally in one city or postal code.
pub(crate) async fn open_houses(
    State(api): State<QueryApi>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    params.only(&["from", "to", "city", "postal_code", "limit"])?;
    let from = params.timestamp("from")?.unwrap_or_else(Utc::now);
    let to = params.timestamp("to")?;
    let city = params.text("city")?.map(str::to_owned);
    let postal_code = params.text("postal_code")?.map(str::to_owned);
    let limit = params.integer("limit", 1, 200)?.unwrap_or(50);
    let mut query = QueryBuilder::new(format!(
        "SELECT o.listing_key, o.open_house_key, o.open_house_date, o.open_house_start_time, o.open_house_end_time,
                o.open_house_type, o.open_house_remarks, l.state->>'UnparsedAddress' AS address, l.city, l.postal_code
           FROM {SCHEMA}.listing_open_houses o JOIN {SCHEMA}.listings l USING (listing_key)
          WHERE o.open_house_status = 'Active' AND l.standard_status <> ALL("
    ));
    query
        .push_bind(hidden_statuses())
        .push(") AND o.open_house_start_time >= ")
        .push_bind(from);
    if let Some(to) = to {
        query.push(" AND o.open_house_start_time < ").push_bind(to);
    }
    if let Some(city) = city {
        query
            .push(" AND lower(l.city) = lower(")
            .push_bind(city)
            .push(")");
    }
    if let Some(postal_code) = postal_code {
        query.push(" AND l.postal_code = ").push_bind(postal_code);
    }
    query
        .push(" ORDER BY o.open_house_start_time, o.listing_key, o.open_house_key LIMIT ")
        .push_bind(limit);
    let rows = query
        .build()
        .fetch_all(&api.shared.pool)
        .await
        .map_err(|e| database_problem(&e))?;
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "ListingKey": row.get::<String, _>("listing_key"),
                "OpenHouseKey": row.get::<String, _>("open_house_key"),
                "OpenHouseDate": row.get::<chrono::NaiveDate, _>("open_house_date"),
                "OpenHouseStartTime": row.get::<DateTime<Utc>, _>("open_house_start_time"),
                "OpenHouseEndTime": row.get::<DateTime<Utc>, _>("open_house_end_time"),
                "OpenHouseType": row.get::<String, _>("open_house_type"),
                "OpenHouseRemarks": row.get::<Option<String>, _>("open_house_remarks"),
                "UnparsedAddress": row.get::<Option<String>, _>("address"),
                "City": row.get::<Option<String>, _>("city"),
                "PostalCode": row.get::<Option<String>, _>("postal_code"),
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}
