//! The command API: HTTP commands on listings, decided by the Listing aggregate and appended
//! to the event store. It never talks to NATS: publication is the relay's job, so commands
//! keep being accepted while NATS is down.
//!
//! - [`dto`]: request bodies and their conversion into commands;
//! - [`context`]: `If-Match`, `Idempotency-Key`, correlation: what a command carries besides its body;
//! - this module: routes, the shared submit path, and the mapping of outcomes to responses.

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, patch, post, put};
use axum::{Json, Router};
use chrono::Utc;
use keh_events::reso::ShortText;
use keh_http::json::{json_bytes, parse};
use keh_http::{FieldError, Problem};
use keh_listing::command::{CancelOpenHouse, RemoveMedia};
use keh_listing::{ErrorKind, Listing, ListingCommand};
use keh_platform::health::Check;
use keh_store::{ExecuteError, Store};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

pub mod context;
pub mod dto;

use context::{CommandContext, IfMatch};

/// Shared state of the command API.
#[derive(Clone)]
pub struct CommandApi {
    store: Arc<Store>,
    /// Accept `http://` media URLs besides `https://` (`KEH_MEDIA_ALLOW_HTTP`).
    allow_http_media: bool,
}

impl CommandApi {
    pub fn new(store: Arc<Store>, allow_http_media: bool) -> Self {
        Self {
            store,
            allow_http_media,
        }
    }

    /// The routes of the command API. Reads (`GET` on the same paths) are the query API's.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/v1/listings", post(create))
            .route(
                "/api/v1/listings/{key}",
                patch(keyed::<dto::PatchListingRequest>),
            )
            .route(
                "/api/v1/listings/{key}/price",
                post(keyed::<dto::ChangePriceRequest>),
            )
            .route(
                "/api/v1/listings/{key}/status",
                post(keyed::<dto::ChangeStatusRequest>),
            )
            .route(
                "/api/v1/listings/{key}/media",
                post(keyed::<dto::AddMediaRequest>),
            )
            .route(
                "/api/v1/listings/{key}/media/order",
                put(keyed::<dto::ReorderMediaRequest>),
            )
            .route(
                "/api/v1/listings/{key}/media/{media_key}",
                delete(remove_media),
            )
            .route(
                "/api/v1/listings/{key}/open-houses",
                post(keyed::<dto::ScheduleOpenHouseRequest>),
            )
            .route(
                "/api/v1/listings/{key}/open-houses/{open_house_key}",
                delete(cancel_open_house),
            )
            .with_state(self)
    }

    /// Readiness of the command API: PostgreSQL answers.
    pub fn health(&self) -> Check {
        keh_platform::health::postgres(self.store.pool().clone(), true)
    }
}

/// A JSON command body and the fingerprint of the request (for `Idempotency-Key`).
struct Body<T> {
    value: T,
    digest: String,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let line = format!("{} {}\n", req.method(), req.uri().path());
        let bytes = json_bytes(req, state).await?;
        let value = parse(&bytes)?;
        let mut hasher = Sha256::new();
        hasher.update(line.as_bytes());
        hasher.update(&bytes);
        Ok(Self {
            value,
            digest: hex(&hasher.finalize()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_of_line(method: &str, path: &str) -> String {
    hex(&Sha256::digest(format!("{method} {path}\n").as_bytes()))
}

/// Validates a `ListingKey` (or sub-resource key) taken from the path.
fn path_key(raw: &str, field: &str) -> Result<ShortText, Problem> {
    ShortText::exact(raw).map_err(|message| {
        Problem::bad_request("invalid-path-parameter", format!("{field} {message}")).with_field(
            field,
            "invalid-value",
            message,
        )
    })
}

async fn create(
    State(api): State<CommandApi>,
    ctx: CommandContext,
    body: Body<dto::CreateListingRequest>,
) -> Result<Response, Problem> {
    let mut command = body
        .value
        .into_command(dto::new_key(), Utc::now())
        .map_err(Problem::validation)?;
    // An agent's new listing is theirs unless the body names its agent (which must then be
    // them: the store checks).
    if let keh_store::Access::Agent {
        agent_key,
        office_key,
    } = &ctx.access
    {
        let details = &mut command.details;
        if details.list_agent_key.is_none() {
            details.list_agent_key = ShortText::new(agent_key).ok();
        }
        if details.list_office_key.is_none() {
            details.list_office_key = office_key.as_deref().and_then(|o| ShortText::new(o).ok());
        }
    }
    let key = command.listing_key.clone();
    let listing_id = command.details.listing_id.clone();
    submit(
        &api,
        &key,
        ListingCommand::Create(command),
        ctx.with_digest(body.digest),
        listing_id,
        StatusCode::CREATED,
    )
    .await
}

/// Every command on an existing listing whose body is one of the `dto` requests.
async fn keyed<T: dto::CommandBody>(
    State(api): State<CommandApi>,
    Path(key): Path<String>,
    ctx: CommandContext,
    body: Body<T>,
) -> Result<Response, Problem> {
    let key = path_key(&key, "ListingKey")?;
    let listing_id = body.value.listing_id();
    let edge = dto::Edge {
        now: Utc::now(),
        allow_http_media: api.allow_http_media,
    };
    let command = body.value.command_at(edge).map_err(Problem::validation)?;
    submit(
        &api,
        &key,
        command,
        ctx.with_digest(body.digest),
        listing_id,
        StatusCode::OK,
    )
    .await
}

async fn remove_media(
    State(api): State<CommandApi>,
    Path((key, media_key)): Path<(String, String)>,
    uri: Uri,
    ctx: CommandContext,
) -> Result<Response, Problem> {
    let media_key = path_key(&media_key, "MediaKey")?;
    let command = ListingCommand::RemoveMedia(RemoveMedia {
        media_key,
        at: Utc::now(),
    });
    bodiless(&api, &key, &uri, command, ctx).await
}

async fn cancel_open_house(
    State(api): State<CommandApi>,
    Path((key, open_house_key)): Path<(String, String)>,
    uri: Uri,
    ctx: CommandContext,
) -> Result<Response, Problem> {
    let open_house_key = path_key(&open_house_key, "OpenHouseKey")?;
    let command = ListingCommand::CancelOpenHouse(CancelOpenHouse {
        open_house_key,
        at: Utc::now(),
    });
    bodiless(&api, &key, &uri, command, ctx).await
}

/// A `DELETE` on a sub-resource: no body, so the request line alone is its fingerprint.
async fn bodiless(
    api: &CommandApi,
    key: &str,
    uri: &Uri,
    command: ListingCommand,
    ctx: CommandContext,
) -> Result<Response, Problem> {
    let key = path_key(key, "ListingKey")?;
    let ctx = ctx.with_digest(digest_of_line("DELETE", uri.path()));
    submit(api, &key, command, ctx, None, StatusCode::OK).await
}

/// The one path every command takes: idempotent replay, `ListingId` reservation check,
/// execution (detached from the client connection), and the response.
async fn submit(
    api: &CommandApi,
    key: &ShortText,
    command: ListingCommand,
    ctx: CommandContext,
    listing_id: Option<ShortText>,
    success: StatusCode,
) -> Result<Response, Problem> {
    if let Some(response) = replay_if_known(api, &ctx).await? {
        return Ok(response);
    }
    if let Some(listing_id) = &listing_id {
        check_listing_id_free(api, listing_id, key).await?;
    }
    let metadata = ctx.metadata(success.as_u16());
    let expected = match &ctx.if_match {
        IfMatch::Any => None,
        IfMatch::Versions(versions) => Some(versions.clone()),
    };
    let store = Arc::clone(&api.store);
    let listing_key = key.as_str().to_owned();
    let access = ctx.access.clone();
    // Detached: a client that disconnects mid-request cancels its wait, never the append
    // (no half-done effect, no pooled connection left idle in a transaction).
    let outcome = tokio::spawn(
        async move {
            store
                .execute(
                    &listing_key,
                    command,
                    &metadata,
                    expected.as_deref(),
                    &access,
                )
                .await
        }
        // The detached task stays in the request's span, so the append joins its trace.
        .in_current_span(),
    )
    .await
    .map_err(|error| {
        tracing::error!(%error, "command task failed");
        Problem::internal()
    })?;
    match outcome {
        Ok(executed) => {
            let status = if executed.appended == 0 && success == StatusCode::CREATED {
                StatusCode::OK
            } else {
                success
            };
            if executed.appended == 0 {
                // An earlier attempt of this very request (same Idempotency-Key) may have
                // committed after this one's replay check: then this decision was made on
                // its result, and the first answer is the one to give.
                if let Some(response) = replay_if_known(api, &ctx).await? {
                    return Ok(response);
                }
                // Nothing was appended, so the trigger recorded nothing: remember the answer.
                let version = i64::try_from(executed.listing.version()).unwrap_or(i64::MAX);
                remember(api, &ctx, key, status, version, None).await;
            }
            Ok(listing_response(
                &executed.listing,
                status,
                None,
                &ctx.caller,
            ))
        }
        Err(ExecuteError::Conflict) => {
            // Maybe the same idempotent request won concurrently, or the ListingId was
            // taken meanwhile; otherwise another write to this listing came first.
            if let Some(response) = replay_if_known(api, &ctx).await? {
                return Ok(response);
            }
            if let Some(listing_id) = &listing_id {
                check_listing_id_free(api, listing_id, key).await?;
            }
            let current = api.store.load(key.as_str()).await.map(|l| l.version()).ok();
            let mut problem = Problem::new(
                StatusCode::CONFLICT,
                "concurrent-modification",
                "Conflict",
                "another change to this listing was committed first; reload it and retry",
            );
            problem.current_version = current;
            Err(problem)
        }
        // Decisions (a rule refused it, a stale If-Match) are answers a retry must get again;
        // passing failures (unavailable, internal) are not remembered.
        Err(error @ (ExecuteError::Rule(_) | ExecuteError::VersionMismatch { .. })) => {
            // As above: refused because an earlier attempt of this request committed
            // meanwhile (a client retry racing its own dropped attempt) → the first answer.
            if let Some(response) = replay_if_known(api, &ctx).await? {
                return Ok(response);
            }
            let problem = execute_problem(error, key);
            let body = serde_json::to_value(&problem).ok();
            remember(api, &ctx, key, problem.status, 0, body).await;
            Err(problem)
        }
        Err(error) => Err(execute_problem(error, key)),
    }
}

/// With an `Idempotency-Key` already recorded: the first answer again (same status, the
/// listing as it was right after the first request), or 422 if the key was used for
/// another request.
async fn replay_if_known(
    api: &CommandApi,
    ctx: &CommandContext,
) -> Result<Option<Response>, Problem> {
    let Some(idempotency) = &ctx.idempotency else {
        return Ok(None);
    };
    let record = api
        .store
        .idempotency_record(&idempotency.scope)
        .await
        .map_err(execute_problem_plain)?;
    let Some(record) = record else {
        return Ok(None);
    };
    if record.request_hash != ctx.digest {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was already used for a different request",
        )
        .with_field(
            "Idempotency-Key",
            "reused",
            "use a new key for a new request",
        ));
    }
    let status = u16::try_from(record.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(problem) = record.problem {
        let mut response = (status, problem.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(keh_http::problem::PROBLEM_JSON),
        );
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(Some(response));
    }
    let listing = api
        .store
        .state_at(&record.aggregate_id, record.last_sequence)
        .await
        .map_err(execute_problem_plain)?;
    Ok(Some(listing_response(
        &listing,
        status,
        Some(HeaderValue::from_static("true")),
        &ctx.caller,
    )))
}

/// Remembers the answer of a command that appended nothing, under its Idempotency-Key (if
/// any). A failure to remember is logged: the answer itself is still right.
async fn remember(
    api: &CommandApi,
    ctx: &CommandContext,
    key: &ShortText,
    status: StatusCode,
    version: i64,
    problem: Option<serde_json::Value>,
) {
    let Some(idempotency) = &ctx.idempotency else {
        return;
    };
    let record = keh_store::IdempotencyRecord {
        aggregate_id: key.as_str().to_owned(),
        request_hash: ctx.digest.clone(),
        response_status: i32::from(status.as_u16()),
        last_sequence: version,
        problem,
    };
    if let Err(error) = api.store.record_answer(&idempotency.scope, &record).await {
        tracing::warn!(%error, "could not remember an idempotent answer");
    }
}

async fn check_listing_id_free(
    api: &CommandApi,
    listing_id: &ShortText,
    key: &ShortText,
) -> Result<(), Problem> {
    let owner = api
        .store
        .listing_id_owner(listing_id.as_str())
        .await
        .map_err(|e| execute_problem(e, key))?;
    match owner {
        Some(owner) if owner != key.as_str() => Err(Problem::new(
            StatusCode::CONFLICT,
            "listing-id-taken",
            "Conflict",
            format!("ListingId {listing_id} belongs to another listing"),
        )
        .with_field(
            "ListingId",
            "unique",
            "ListingId must be unique among listings",
        )),
        _ => Ok(()),
    }
}

fn no_listing(key: &ShortText) -> Problem {
    Problem::not_found(format!("no listing has ListingKey {key}")).with_field(
        "ListingKey",
        "not-found",
        "no such listing",
    )
}

fn execute_problem_plain(error: ExecuteError) -> Problem {
    match error {
        ExecuteError::Unavailable(cause) => {
            tracing::warn!(error = %cause, "event store unavailable");
            Problem::unavailable("the event store is unavailable; retry later")
        }
        other => {
            tracing::error!(error = %other, cause = ?std::error::Error::source(&other), "command failed");
            Problem::internal()
        }
    }
}

fn execute_problem(error: ExecuteError, key: &ShortText) -> Problem {
    match error {
        ExecuteError::Rule(rule) => {
            let field = rule.field.unwrap_or("");
            match rule.kind {
                ErrorKind::NotFound if rule.field.is_none() => no_listing(key),
                ErrorKind::NotFound => Problem::not_found(rule.message.clone()).with_field(
                    field,
                    rule.rule,
                    rule.message,
                ),
                ErrorKind::AlreadyExists => Problem::new(
                    StatusCode::CONFLICT,
                    "already-exists",
                    "Conflict",
                    rule.message.clone(),
                )
                .with_field(field, rule.rule, rule.message),
                ErrorKind::Rule => Problem::validation(vec![FieldError {
                    field: field.to_owned(),
                    rule: rule.rule.to_owned(),
                    message: rule.message,
                }]),
            }
        }
        ExecuteError::VersionMismatch { current } => {
            let mut problem = Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version-mismatch",
                "Precondition failed",
                format!("If-Match does not match the listing's current version {current}"),
            );
            problem.current_version = Some(current);
            problem
        }
        ExecuteError::Forbidden(reason) => keh_auth::principal::forbidden(reason),
        other => execute_problem_plain(other),
    }
}

/// Characters escaped in a path segment (RFC 3986 unreserved ones stay as they are).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The listing's state with its version as `ETag`.
fn listing_response(
    listing: &Listing,
    status: StatusCode,
    replayed: Option<HeaderValue>,
    caller: &keh_auth::Caller,
) -> Response {
    let Some(state) = listing.state() else {
        return Problem::not_found("no such listing").into_response();
    };
    let details = &state.details;
    let private = caller.may_see_private(
        details.list_agent_key.as_ref().map(|k| k.as_str()),
        details.list_office_key.as_ref().map(|k| k.as_str()),
    );
    let mut body = match serde_json::to_value(state) {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "listing state not serializable");
            return Problem::internal().into_response();
        }
    };
    keh_events::public::served(&mut body, private);
    let mut headers = HeaderMap::new();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", state.version)) {
        headers.insert(header::ETAG, etag);
    }
    if status == StatusCode::CREATED {
        let encoded =
            percent_encoding::utf8_percent_encode(state.listing_key.as_str(), PATH_SEGMENT);
        if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/listings/{encoded}")) {
            headers.insert(header::LOCATION, location);
        }
    }
    if let Some(value) = replayed {
        headers.insert("idempotent-replayed", value);
    }
    (status, headers, Json(body)).into_response()
}
