//! One listing: its projected state (with `ETag`, `If-None-Match` and read-your-writes
//! waits), its state as of an instant (replayed from the event store), and its history.

use std::time::Duration;

use aide::transform::TransformOperation;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use keh_auth::Caller;
use keh_events::{ListingKey, Sequence};
use keh_http::Problem;
use keh_http::docs::{self, Access, Describe as _, QueryParam};
use keh_listing::ListingState;
use keh_resources::ListingResource;
use keh_resources::paths::ListingPath;
use keh_store::outbox;
use serde_json::{Value, json};
use sqlx::types::Json as Jsonb;

use crate::params::{Params, invalid, schemas};
use crate::visibility::{hidden_from, may_see_private, visible};
use crate::{MAX_WAIT, QueryApi, database_problem};

/// A listing's entity tag: its version, `"N"` (what commands take back as `If-Match`).
pub(crate) fn etag(version: Sequence) -> String {
    format!("\"{version}\"")
}

/// `response` tagged with the listing's version.
fn tagged(mut response: Response, version: Sequence) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

fn with_etag(state: ListingState, version: Sequence, caller: &Caller) -> Response {
    tagged(Json(visible(state, caller)).into_response(), version)
}

/// 304 for a client that has version `version` of the listing.
fn not_modified(version: Sequence) -> Response {
    tagged(
        axum::http::StatusCode::NOT_MODIFIED.into_response(),
        version,
    )
}

/// A `ListingKey` from the path: 1 to 255 characters, no control characters.
pub(crate) fn listing_key(raw: &str) -> Result<ListingKey, Problem> {
    ListingKey::new(raw).map_err(|error| {
        let message = error.to_string();
        Problem::bad_request("invalid-path-parameter", format!("ListingKey {message}")).with_field(
            "ListingKey",
            "invalid-value",
            message,
        )
    })
}

pub(crate) fn no_listing(key: &ListingKey) -> Problem {
    Problem::not_found(format!("no listing has ListingKey {key}")).with_field(
        "ListingKey",
        "not-found",
        "no such listing",
    )
}

/// What `GET /api/v1/listings/{ListingKey}` accepts.
const READ_PARAMS: &[QueryParam] = &[
    QueryParam::new(
        "as_of",
        schemas::timestamp,
        "The listing as recorded at this instant (from the event store)",
    ),
    QueryParam::new(
        "min_version",
        min_version,
        "Wait until the read model reached this version",
    ),
    QueryParam::new(
        "wait_ms",
        wait_ms,
        "How long to wait for min_version (default 5000)",
    ),
];

fn min_version() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": i64::MAX})
}

fn wait_ms() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": MAX_WAIT.as_millis()})
}

/// The documentation of `GET /api/v1/listings/{ListingKey}`.
pub(crate) fn read_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    op.named(
        "getListing",
        "Listings",
        "A listing (private fields only for its agent and administrators)",
    )
    .access(Access::Read)
    .queries(READ_PARAMS)
    .param(docs::header(
        "If-None-Match",
        json!({"type": "string"}),
        "ETags the client has (\"N\", W/\"N\", or *): a 304 without a body if the listing is at one of them",
    ))
    .answer(200, docs::tagged("The listing", docs::schema::<ListingResource>()))
    .answer(
        304,
        json!({
            "description": "The client's copy (If-None-Match) is current: no body",
            "headers": {"ETag": {"schema": {"type": "string"}, "description": "\"N\": the listing's version"}},
        }),
    )
    .errors(&[403, 404])
}

/// `GET /api/v1/listings/{ListingKey}`: the projected state; `?min_version=N[&wait_ms=…]` waits
/// (bounded) until the projection has reached the version a command returned;
/// `?as_of=T` rebuilds the listing from the event store as recorded at instant T.
pub(crate) async fn read(
    State(api): State<QueryApi>,
    Path(path): Path<ListingPath>,
    caller: Caller,
    params: Params,
    request: axum::http::HeaderMap,
) -> Result<Response, Problem> {
    caller.require_read()?;
    let key = listing_key(&path.listing_key)?;
    params.only(READ_PARAMS)?;
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
        let row = sqlx::query!(
            r#"SELECT version AS "version: Sequence", state AS "state: Jsonb<ListingState>"
                 FROM read_model.listings WHERE listing_key = $1"#,
            key.as_str(),
        )
        .fetch_optional(&api.shared.pool)
        .await
        .map_err(|e| database_problem(&e))?
        .map(|r| (r.version, r.state.0));
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
            (Some((version, _)), Some(min)) => i64::from(*version) >= min,
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
            let stored = outbox::last_sequence(&api.shared.pool, &key)
                .await
                .map_err(|e| database_problem(&e))?;
            match stored {
                None => return Err(no_listing(&key)),
                Some(stored) if i64::from(stored) < min => {
                    return Err(Problem::not_found(format!(
                        "listing {key} has {stored} versions, not {min}"
                    ))
                    .with_field("min_version", "not-found", "no such version"));
                }
                Some(_) => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let current = row.map_or(0, |(v, _)| v.get());
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
            problem.current_version = Some(current);
            return Err(problem);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The listing's projected state today (`None`: not projected), or a 404 when it is hidden
/// from `caller` (Delete, Incomplete: only its agent and administrators see it).
async fn visible_state(
    api: &QueryApi,
    key: &ListingKey,
    caller: &Caller,
) -> Result<Option<ListingState>, Problem> {
    let current = sqlx::query_scalar!(
        r#"SELECT state AS "state: Jsonb<ListingState>" FROM read_model.listings WHERE listing_key = $1"#,
        key.as_str(),
    )
    .fetch_optional(&api.shared.pool)
    .await
    .map_err(|e| database_problem(&e))?
    .map(|state| state.0);
    if current
        .as_ref()
        .is_some_and(|state| hidden_from(caller, state))
    {
        return Err(no_listing(key));
    }
    Ok(current)
}

async fn read_as_of(
    api: &QueryApi,
    key: &ListingKey,
    as_of: DateTime<Utc>,
    caller: &Caller,
) -> Result<Response, Problem> {
    let _timer = keh_platform::metrics::db_timer("query.as_of");
    // A listing hidden now (Delete, Incomplete) is hidden at every instant: its past is
    // its agent's and the administrators' too.
    visible_state(api, key, caller).await?;
    let partition = api.shared.layout.partition_of(key.as_str());
    let events = outbox::listing_events(&api.shared.pool, key, None, None, Some(as_of), partition)
        .await
        .map_err(|error| match error {
            outbox::ReadError::Database(e) => database_problem(&e),
            other => {
                tracing::error!(error = %other, "stored event unreadable");
                Problem::internal()
            }
        })?;
    let listing = keh_listing::aggregate::replay(events.into_iter().map(|e| e.envelope.event));
    let Some(state) = listing.into_state() else {
        return Err(
            Problem::not_found(format!("listing {key} did not exist at {as_of}")).with_field(
                "as_of",
                "not-found",
                "no listing with this key had been recorded by then",
            ),
        );
    };
    if hidden_from(caller, &state) {
        return Err(
            Problem::not_found(format!("listing {key} did not exist at {as_of}")).with_field(
                "as_of",
                "not-found",
                "no listing with this key had been recorded by then",
            ),
        );
    }
    let version = Sequence::try_from(state.version).map_err(|error| {
        tracing::error!(%error, "a replayed listing has no valid version");
        Problem::internal()
    })?;
    Ok(with_etag(state, version, caller))
}

/// The documentation of `GET /api/v1/listings/{ListingKey}/history`.
pub(crate) fn history_docs(op: TransformOperation<'_>) -> TransformOperation<'_> {
    let history = json!({
        "type": "object",
        "required": ["ListingKey", "items"],
        "properties": {
            "ListingKey": {"type": "string"},
            "items": {"type": "array", "items": {
                "type": "object",
                "required": ["Sequence", "EventId", "EventType", "EffectiveAt", "RecordedAt", "Actor", "CorrelationId", "Data"],
                "properties": {
                    "Sequence": {"type": "integer"},
                    "EventId": {"type": "string", "format": "uuid"},
                    "EventType": {"type": "string"},
                    "EffectiveAt": {"type": "string", "format": "date-time"},
                    "RecordedAt": {"type": "string", "format": "date-time"},
                    "Actor": {"type": "string"},
                    "CorrelationId": {"type": "string", "format": "uuid"},
                    "Data": {"type": "object", "description": "The event's data (docs/schema/listing-event.v1.json)"},
                },
            }},
        },
    });
    op.named(
        "listingHistory",
        "Listings",
        "Every event of a listing, oldest first",
    )
    .access(Access::Read)
    .answer(200, docs::ok("The history", history))
    .errors(&[403, 404])
}

/// `GET /api/v1/listings/{ListingKey}/history`: every event, oldest first.
pub(crate) async fn history(
    State(api): State<QueryApi>,
    Path(path): Path<ListingPath>,
    caller: Caller,
    params: Params,
) -> Result<Response, Problem> {
    caller.require_read()?;
    let key = listing_key(&path.listing_key)?;
    params.only(&[])?;
    let _timer = keh_platform::metrics::db_timer("query.history");
    // Private fields in the history are for whoever may see them on the listing today.
    let current = visible_state(&api, &key, &caller).await?;
    let private = current.is_some_and(|state| may_see_private(&caller, &state));
    let rows = sqlx::query!(
        "SELECT sequence, event_id, event_type, effective_at, recorded_at, actor, correlation_id, data
           FROM read_model.listing_events WHERE listing_key = $1 ORDER BY sequence",
        key.as_str(),
    )
    .fetch_all(&api.shared.pool)
    .await
    .map_err(|e| database_problem(&e))?;
    if rows.is_empty() {
        return Err(no_listing(&key));
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|row| {
            let actor = &row.actor;
            let mut data = row.data.clone();
            keh_events::public::served(&mut data, private);
            json!({
                "Sequence": row.sequence,
                "EventId": row.event_id,
                "EventType": row.event_type,
                "EffectiveAt": row.effective_at,
                "RecordedAt": row.recorded_at,
                // Who acted is for the listing's agent and administrators.
                "Actor": if private {
                    actor.clone()
                } else {
                    keh_events::public::public_actor(actor).to_owned()
                },
                "CorrelationId": row.correlation_id,
                "Data": data,
            })
        })
        .collect();
    Ok(Json(json!({ "ListingKey": key, "items": items })).into_response())
}
