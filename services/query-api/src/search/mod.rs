//! Search: filters, sorts and keyset cursors over the read model (`QueryBuilder` with
//! bound parameters: the one place search SQL is put together), and the open-house list.

use aide::transform::TransformOperation;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use keh_auth::Caller;
use keh_events::reso::{PropertyType, StandardStatus};
use keh_http::Problem;
use keh_http::docs::{self, Access, Describe as _, QueryParam};
use keh_listing::ListingState;
use keh_resources::ListingResource;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{QueryBuilder, Row};

mod filters;

use filters::Filters;

use crate::params::{Params, invalid, schemas};
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

/// Comma-separated RESO values of an enumeration.
fn enum_list(values: impl IntoIterator<Item = &'static str>) -> Value {
    json!({"type": "array", "minItems": 1, "items": {"type": "string", "enum": values.into_iter().collect::<Vec<_>>()}})
}

fn statuses() -> Value {
    enum_list(StandardStatus::ALL.iter().map(|s| s.as_str()))
}

pub(crate) fn property_types() -> Value {
    enum_list(PropertyType::ALL.iter().map(|t| t.as_str()))
}

fn rooms() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": 999})
}

fn bbox() -> Value {
    json!({"type": "string", "pattern": "^-?[0-9]{1,3}(\\.[0-9]{1,8})?(,-?[0-9]{1,3}(\\.[0-9]{1,8})?){3}$"})
}

fn sorts() -> Value {
    json!({"type": "string", "enum": ["ModificationTimestamp", "-ModificationTimestamp", "ListPrice", "-ListPrice", "ListingKey", "-ListingKey"]})
}

fn cursor() -> Value {
    json!({"type": "string", "minLength": 1})
}

/// What `GET /api/v1/listings` accepts.
pub(crate) const SEARCH_PARAMS: &[QueryParam] = &[
    QueryParam::list("status", statuses, "StandardStatus values, comma-separated"),
    QueryParam::list(
        "property_type",
        property_types,
        "PropertyType values, comma-separated",
    ),
    QueryParam::new("city", schemas::text, "City (case-insensitive)"),
    QueryParam::new("postal_code", schemas::text, "PostalCode"),
    QueryParam::new("min_price", schemas::decimal, "Lowest ListPrice"),
    QueryParam::new("max_price", schemas::decimal, "Highest ListPrice"),
    QueryParam::new("min_beds", rooms, "Fewest BedroomsTotal"),
    QueryParam::new("min_baths", rooms, "Fewest BathroomsTotalInteger"),
    QueryParam::new("min_area", schemas::decimal, "Smallest LivingArea"),
    QueryParam::new("max_area", schemas::decimal, "Largest LivingArea"),
    QueryParam::new("bbox", bbox, "minLon,minLat,maxLon,maxLat (minimum first)"),
    QueryParam::new(
        "q",
        schemas::text,
        "Words in the address, city, postal code, subdivision or public remarks",
    ),
    QueryParam::new(
        "modified_since",
        schemas::timestamp,
        "Changes recorded since this instant",
    ),
    QueryParam::new("sort", sorts, "Sort order"),
    QueryParam::new("limit", schemas::page_size, "Page size (default 50)"),
    QueryParam::new("cursor", cursor, "nextCursor of the previous page"),
    QueryParam::new("count", schemas::boolean, "Add totalCount"),
];

/// What `GET /api/v1/open-houses` accepts.
pub(crate) const OPEN_HOUSE_PARAMS: &[QueryParam] = &[
    QueryParam::new("from", schemas::timestamp, "Window start (default now)"),
    QueryParam::new("to", schemas::timestamp, "Window end (exclusive)"),
    QueryParam::new("city", schemas::text, "City"),
    QueryParam::new("postal_code", schemas::text, "PostalCode"),
    QueryParam::new("limit", schemas::page_size, "At most (default 50)"),
];

/// The documentation of `GET /api/v1/listings`.
pub(crate) fn search_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    let page = json!({
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": docs::schema::<ListingResource>()},
            "nextCursor": {"type": ["string", "null"], "description": "Pass as cursor for the next page; null on the last page"},
            "totalCount": {"type": "integer", "description": "With count=true"},
        },
    });
    op.named(
        "searchListings",
        "Listings",
        "Search listings (filters combine with AND; keyset pagination)",
    )
    .access(Access::Read)
    .queries(SEARCH_PARAMS)
    .answer(200, docs::ok("A page of listings", page))
    .errors(&[403])
}

/// The documentation of `GET /api/v1/open-houses`.
pub(crate) fn open_houses_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    let nullable_text = json!({"type": ["string", "null"]});
    let open_house = json!({
        "type": "object",
        "properties": {
            "ListingKey": {"type": "string"}, "OpenHouseKey": {"type": "string"},
            "OpenHouseDate": {"type": "string", "format": "date"},
            "OpenHouseStartTime": {"type": "string", "format": "date-time"},
            "OpenHouseEndTime": {"type": "string", "format": "date-time"},
            "OpenHouseType": {"type": "string"},
            "OpenHouseRemarks": nullable_text, "UnparsedAddress": nullable_text,
            "City": nullable_text, "PostalCode": nullable_text,
        },
    });
    op.named(
        "openHouses",
        "Listings",
        "Scheduled open houses in a time window, soonest first",
    )
    .access(Access::Read)
    .queries(OPEN_HOUSE_PARAMS)
    .answer(200, docs::ok("Open houses", docs::items(open_house)))
    .errors(&[403])
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

/// `GET /api/v1/open-houses`: scheduled (not canceled) open houses starting in
/// `[from, to)` (default: from now on), soonest first, optionally in one city or postal code.
pub(crate) async fn open_houses(
    State(api): State<QueryApi>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    params.only(OPEN_HOUSE_PARAMS)?;
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
