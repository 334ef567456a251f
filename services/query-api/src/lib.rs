//! The query API: what people search and read. It serves the read model the projector
//! maintains (`read_model` schema), time travel rebuilt from the event store, and a live
//! feed of listing events (Server-Sent Events from the JetStream stream).
//!
//! It also serves the market figures the analytics worker computed, and queues market
//! report jobs for it.
//!
//! **Architecture invariant:** the query API writes nothing but report requests; private fields
//! (`keh_events::listing::PRIVATE_FIELDS`) are stored in the read model and removed here.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use keh_auth::Caller;
use keh_events::reso::{PropertyType, StandardStatus};
use keh_events::subject::SubjectLayout;
use keh_http::Problem;
use keh_platform::health::Check;
use keh_store::outbox;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::{PgPool, QueryBuilder, Row};

pub mod feed;
pub mod market;
pub mod params;
mod web;

use params::{Params, invalid};

const SCHEMA: &str = keh_projections::LIVE_SCHEMA;
/// Longest a read-your-writes request waits for the projection.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Shared state of the query API: cloned for every request (axum's `State`), so one
/// reference count, not a copy of each part (the NATS client, two strings).
#[derive(Clone)]
pub struct QueryApi {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgPool,
    jetstream: Option<async_nats::jetstream::Context>,
    stream: String,
    layout: SubjectLayout,
    feed: Arc<feed::FeedGate>,
}

impl QueryApi {
    /// `nats`: the live feed needs it; without it `/api/v1/listing-events` answers 503.
    pub fn new(
        pool: PgPool,
        nats: Option<async_nats::Client>,
        stream: String,
        layout: SubjectLayout,
        feed: feed::FeedLimits,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                pool,
                jetstream: nats.map(async_nats::jetstream::new),
                stream,
                layout,
                feed: Arc::new(feed::FeedGate::new(feed)),
            }),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/api/v1/listings", get(search))
            .route("/api/v1/listings/{key}", get(read))
            .route("/api/v1/listings/{key}/history", get(history))
            .route("/api/v1/listing-events", get(live_feed))
            .route("/api/v1/open-houses", get(open_houses))
            .merge(market::routes())
            .merge(web::routes())
            .with_state(self)
    }

    /// Readiness: the read model answers.
    pub fn health(&self) -> Check {
        keh_platform::health::postgres(self.shared.pool.clone(), true)
    }
}

fn database_problem(error: &sqlx::Error) -> Problem {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            tracing::warn!(%error, "read model unavailable");
            Problem::unavailable("the read model is unavailable; retry later")
        }
        _ => {
            tracing::error!(%error, "query failed");
            Problem::internal()
        }
    }
}

/// Whether `caller` may see the private fields of the listing whose state is `state`.
fn may_see_private(caller: &Caller, state: &Value) -> bool {
    caller.may_see_private(
        state.get("ListAgentKey").and_then(Value::as_str),
        state.get("ListOfficeKey").and_then(Value::as_str),
    )
}

/// The listing as `caller` may see it: private fields for its agent and administrators
/// only, and, for everyone, no media URL that is not safe to follow.
fn visible(mut state: Value, caller: &Caller) -> Value {
    let private = may_see_private(caller, &state);
    keh_events::public::served(&mut state, private);
    state
}

/// Statuses only a listing's agent and administrators may see: a listing being prepared,
/// and one taken off the record.
const HIDDEN_STATUSES: [&str; 2] = ["Delete", "Incomplete"];

/// [`HIDDEN_STATUSES`] as a query parameter.
fn hidden_statuses() -> Vec<String> {
    HIDDEN_STATUSES.map(str::to_owned).to_vec()
}

/// Whether the listing whose state is `state` is hidden from `caller` (answered as if it
/// did not exist).
fn hidden_from(caller: &Caller, state: &Value) -> bool {
    state
        .get("StandardStatus")
        .and_then(Value::as_str)
        .is_some_and(|status| HIDDEN_STATUSES.contains(&status))
        && !may_see_private(caller, state)
}

/// Appends the condition that leaves out listings hidden from `caller`.
fn push_visibility(query: &mut QueryBuilder<'_, sqlx::Postgres>, caller: &Caller) {
    if caller.is_admin() {
        return;
    }
    query
        .push(" AND (standard_status <> ALL(")
        .push_bind(hidden_statuses())
        .push(")");
    if let keh_auth::Principal::User {
        role: keh_auth::Role::Agent,
        agent_key,
        office_key,
        ..
    } = &caller.principal
    {
        if let Some(agent_key) = agent_key {
            query
                .push(" OR state->>'ListAgentKey' = ")
                .push_bind(agent_key.clone());
        }
        if let (true, Some(office_key)) = (caller.office_access, office_key) {
            query
                .push(" OR state->>'ListOfficeKey' = ")
                .push_bind(office_key.clone());
        }
    }
    query.push(")");
}

/// A listing's entity tag: its version, `"N"` (what commands take back as `If-Match`).
fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// `response` tagged with the listing's version.
fn tagged(mut response: Response, version: i64) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn with_etag(state: Value, version: i64, caller: &Caller) -> Response {
    tagged(Json(visible(state, caller)).into_response(), version)
}

/// 304 for a client that has version `version` of the listing.
fn not_modified(version: i64) -> Response {
    tagged(
        axum::http::StatusCode::NOT_MODIFIED.into_response(),
        version,
    )
}

/// A `ListingKey` from the path: 1 to 255 characters, no control characters.
fn listing_key(raw: &str) -> Result<&str, Problem> {
    keh_events::reso::ShortText::exact(raw)
        .map(|_| raw)
        .map_err(|message| {
            Problem::bad_request("invalid-path-parameter", format!("ListingKey {message}"))
                .with_field("ListingKey", "invalid-value", message)
        })
}

fn no_listing(key: &str) -> Problem {
    Problem::not_found(format!("no listing has ListingKey {key}")).with_field(
        "ListingKey",
        "not-found",
        "no such listing",
    )
}

/// `GET /api/v1/listings/{key}`: the projected state; `?min_version=N[&wait_ms=…]` waits
/// (bounded) until the projection has reached the version a command returned;
/// `?as_of=T` rebuilds the listing from the event store as recorded at instant T.
async fn read(
    State(api): State<QueryApi>,
    Path(key): Path<String>,
    caller: Caller,
    params: Params,
    request: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    caller.require_read()?;
    listing_key(&key)?;
    params.only(&["as_of", "min_version", "wait_ms"])?;
    let as_of = params.timestamp("as_of")?;
    let min_version = params.integer("min_version", 1, i64::MAX)?;
    let wait = params.integer(
        "wait_ms",
        0,
        i64::try_from(MAX_WAIT.as_millis()).unwrap_or(10_000),
    )?;
    if let Some(as_of) = as_of {
        if min_version.is_some() || wait.is_some() {
            return Err(invalid(
                "as_of",
                "conflict",
                "cannot be combined with min_version or wait_ms",
            ));
        }
        return read_as_of(&api, &key, as_of, &caller).await;
    }
    let wait = Duration::from_millis(u64::try_from(wait.unwrap_or(5_000)).unwrap_or(5_000));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let timer = keh_platform::metrics::db_timer("query.read");
        let row: Option<(i64, Value)> = sqlx::query_as(&format!(
            "SELECT version, state FROM {SCHEMA}.listings WHERE listing_key = $1"
        ))
        .bind(&key)
        .fetch_optional(&api.shared.pool)
        .await
        .map_err(|e| database_problem(&e))?;
        drop(timer);
        // A hidden listing does not exist for this caller: neither its versions nor its
        // projection's progress are told.
        if row
            .as_ref()
            .is_some_and(|(_, state)| hidden_from(&caller, state))
        {
            return Err(no_listing(&key));
        }
        let reached = match (&row, min_version) {
            (_, None) => true,
            (Some((version, _)), Some(min)) => *version >= min,
            (None, Some(_)) => false,
        };
        if reached {
            return match row {
                // The client has this version already (`If-None-Match`): no body.
                Some((version, _)) if keh_http::none_match(&request, &etag(version)) => {
                    Ok(not_modified(version))
                }
                Some((version, state)) => Ok(with_etag(state, version, &caller)),
                None => Err(no_listing(&key)),
            };
        }
        if let Some(min) = min_version {
            // A version the event store does not have either will never be projected.
            let stored: Option<i64> = sqlx::query_scalar(
                "SELECT max(sequence) FROM events WHERE aggregate_type = 'Listing' AND aggregate_id = $1",
            )
            .bind(&key)
            .fetch_one(&api.shared.pool)
            .await
            .map_err(|e| database_problem(&e))?;
            match stored {
                None => return Err(no_listing(&key)),
                Some(stored) if stored < min => {
                    return Err(Problem::not_found(format!(
                        "listing {key} has {stored} versions, not {min}"
                    ))
                    .with_field("min_version", "not-found", "no such version"));
                }
                Some(_) => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let current = row.map_or(0, |(v, _)| v);
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection-behind",
                "Projection behind",
                format!(
                    "the read model is at version {current} of this listing, not yet {}; retry",
                    min_version.unwrap_or(0)
                ),
            );
            problem.retry_after_secs = Some(1);
            problem.current_version = u64::try_from(current).ok();
            return Err(problem);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn read_as_of(
    api: &QueryApi,
    key: &str,
    as_of: DateTime<Utc>,
    caller: &Caller,
) -> Result<Response, Problem> {
    let _timer = keh_platform::metrics::db_timer("query.as_of");
    // A listing hidden now (Delete, Incomplete) is hidden at every instant: its past is
    // its agent's and the administrators' too.
    let current: Option<Value> = sqlx::query_scalar(&format!(
        "SELECT state FROM {SCHEMA}.listings WHERE listing_key = $1"
    ))
    .bind(key)
    .fetch_optional(&api.shared.pool)
    .await
    .map_err(|e| database_problem(&e))?;
    if current
        .as_ref()
        .is_some_and(|state| hidden_from(caller, state))
    {
        return Err(no_listing(key));
    }
    let events = outbox::listing_events(&api.shared.pool, key, 0, None, Some(as_of))
        .await
        .map_err(|error| match error {
            outbox::ReadError::Database(e) => database_problem(&e),
            other => {
                tracing::error!(error = %other, "stored event unreadable");
                Problem::internal()
            }
        })?;
    let listing = keh_listing::aggregate::replay(events.into_iter().map(|e| e.event));
    let Some(state) = listing.state() else {
        return Err(
            Problem::not_found(format!("listing {key} did not exist at {as_of}")).with_field(
                "as_of",
                "not-found",
                "no listing with this key had been recorded by then",
            ),
        );
    };
    let value = serde_json::to_value(state).map_err(|_| Problem::internal())?;
    if hidden_from(caller, &value) {
        return Err(
            Problem::not_found(format!("listing {key} did not exist at {as_of}")).with_field(
                "as_of",
                "not-found",
                "no listing with this key had been recorded by then",
            ),
        );
    }
    Ok(with_etag(
        value,
        i64::try_from(listing.version()).unwrap_or(0),
        caller,
    ))
}

/// `GET /api/v1/listings/{key}/history`: every event, oldest first.
async fn history(
    State(api): State<QueryApi>,
    Path(key): Path<String>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    listing_key(&key)?;
    params.only(&[])?;
    let _timer = keh_platform::metrics::db_timer("query.history");
    // Private fields in the history are for whoever may see them on the listing today.
    let current: Option<Value> = sqlx::query_scalar(&format!(
        "SELECT state FROM {SCHEMA}.listings WHERE listing_key = $1"
    ))
    .bind(&key)
    .fetch_optional(&api.shared.pool)
    .await
    .map_err(|e| database_problem(&e))?;
    if current
        .as_ref()
        .is_some_and(|state| hidden_from(&caller, state))
    {
        return Err(no_listing(&key));
    }
    let private = current.is_some_and(|state| may_see_private(&caller, &state));
    let rows = sqlx::query(&format!(
        "SELECT sequence, event_id, event_type, effective_at, recorded_at, actor, correlation_id, data
           FROM {SCHEMA}.listing_events WHERE listing_key = $1 ORDER BY sequence"
    ))
    .bind(&key)
    .fetch_all(&api.shared.pool)
    .await
    .map_err(|e| database_problem(&e))?;
    if rows.is_empty() {
        return Err(no_listing(&key));
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            let actor = row.get::<String, _>("actor");
            let mut data = row.get::<Value, _>("data");
            keh_events::public::served(&mut data, private);
            json!({
                "Sequence": row.get::<i64, _>("sequence"),
                "EventId": row.get::<uuid_type::Uuid, _>("event_id"),
                "EventType": row.get::<String, _>("event_type"),
                "EffectiveAt": row.get::<DateTime<Utc>, _>("effective_at"),
                "RecordedAt": row.get::<DateTime<Utc>, _>("recorded_at"),
                // Who acted is for the listing's agent and administrators.
                "Actor": if private {
                    actor
                } else {
                    keh_events::public::public_actor(&actor).to_owned()
                },
                "CorrelationId": row.get::<uuid_type::Uuid, _>("correlation_id"),
                "Data": data,
            })
        })
        .collect();
    Ok(Json(json!({ "ListingKey": key, "items": items })).into_response())
}

/// Re-exported so the history row decoding names its UUID type plainly.
mod uuid_type {
    pub(crate) use sqlx::types::Uuid;
}

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
async fn search(
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
        let key: String = row.get("listing_key");
        last = Some((row.get::<Value, _>("sort_value"), key));
        items.push(visible(row.get::<Value, _>("state"), &caller));
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
async fn open_houses(
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

/// `GET /api/v1/listing-events`: listing events as Server-Sent Events, from the JetStream
/// stream. `id` is the stream sequence: a client reconnecting with `Last-Event-ID` resumes
/// right after the last event it saw, missing and repeating nothing. Filters:
/// `listing_key`, `event_type`.
async fn live_feed(
    State(api): State<QueryApi>,
    caller: Caller,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    // `ticket` and `access_token` were read by the auth middleware (EventSource cannot send
    // headers).
    params.only(&[
        "listing_key",
        "event_type",
        "last_event_id",
        "ticket",
        "access_token",
    ])?;
    let listing_key = params.text("listing_key")?;
    let event_type = params.text("event_type")?;
    if let Some(t) = event_type
        && !keh_events::ListingEvent::TYPES.contains(&t)
    {
        return Err(invalid(
            "event_type",
            "invalid-value",
            &format!(
                "must be one of {}",
                keh_events::ListingEvent::TYPES.join(", ")
            ),
        ));
    }
    let last_id = match headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(params.text("last_event_id")?)
    {
        None => None,
        Some(raw) => Some(raw.trim().parse::<u64>().map_err(|_| {
            Problem::bad_request(
                "invalid-last-event-id",
                "Last-Event-ID must be an id this feed sent",
            )
            .with_field("Last-Event-ID", "invalid-value", "not a feed event id")
        })?),
    };
    let Some(jetstream) = api.shared.jetstream.clone() else {
        return Err(Problem::unavailable(
            "the live feed needs NATS, which this process is not connected to",
        ));
    };
    let filter = match (listing_key, event_type) {
        (Some(key), Some(t)) => format!(
            "{}{}",
            api.shared.layout.listing_filter(key).trim_end_matches('*'),
            t
        ),
        (Some(key), None) => api.shared.layout.listing_filter(key),
        (None, Some(t)) => api.shared.layout.event_type_filter(t),
        (None, None) => api.shared.layout.all(),
    };
    let deliver_policy = match last_id {
        Some(id) => async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: id.checked_add(1).ok_or_else(|| {
                Problem::bad_request(
                    "invalid-last-event-id",
                    "Last-Event-ID must be an id this feed sent",
                )
                .with_field(
                    "Last-Event-ID",
                    "invalid-value",
                    "not a feed event id",
                )
            })?,
        },
        None => async_nats::jetstream::consumer::DeliverPolicy::New,
    };
    // Counted before any work: beyond the limits nothing is read from the stream.
    let permit = api.shared.feed.admit(&caller)?;
    let mut stream = jetstream
        .get_stream(&api.shared.stream)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "live feed: stream unavailable");
            Problem::unavailable("the event stream is unavailable; retry later")
        })?;
    if let Some(id) = last_id {
        let end = stream
            .info()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "live feed: stream unavailable");
                Problem::unavailable("the event stream is unavailable; retry later")
            })?
            .state
            .last_sequence;
        api.shared.feed.check_replay(&caller, id, end)?;
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "live feed: cannot create consumer");
            Problem::unavailable("the event stream is unavailable; retry later")
        })?;
    let messages = consumer.messages().await.map_err(|e| {
        tracing::warn!(error = %e, "live feed: cannot read");
        Problem::unavailable("the event stream is unavailable; retry later")
    })?;
    Ok(Sse::new(events(messages, permit))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The feed's events; `permit` counts the connection until the client goes.
fn events(
    messages: async_nats::jetstream::consumer::pull::Ordered,
    permit: feed::FeedPermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    messages.filter_map(move |message| {
        let _held = &permit;
        async move {
            let message = message
                .map_err(|e| tracing::warn!(error = %e, "live feed interrupted"))
                .ok()?;
            let sequence = message.info().ok()?.stream_sequence;
            let mut envelope: Value = serde_json::from_slice(&message.payload).ok()?;
            // The public stream is redacted by the relay; messages published before a
            // redaction rule existed are redacted here too.
            keh_events::public::redact_public(&mut envelope);
            let event_type = envelope
                .get("EventType")
                .and_then(Value::as_str)
                .unwrap_or("message")
                .to_owned();
            Some(Ok(Event::default()
                .id(sequence.to_string())
                .event(event_type)
                .data(envelope.to_string())))
        }
    })
}
