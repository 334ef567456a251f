//! The command API: HTTP commands on listings, decided by the Listing aggregate and appended
//! to the event store. It never talks to NATS: publication is the relay's job, so commands
//! keep being accepted while NATS is down.
//!
//! - [`dto`]: request bodies and their conversion into commands;
//! - [`context`]: `If-Match`, `Idempotency-Key`, correlation: what a command carries besides its body;
//! - `submit`: the one path every command takes (idempotency, execution);
//! - `response`: outcomes as answers, every `ExecuteError` mapped in one place;
//! - this module: routes and the handlers that turn requests into commands.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, patch_with, post_with, put_with};
use aide::transform::TransformOperation;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::Utc;
use keh_events::ListingKey;
use keh_events::reso::ShortText;
use keh_http::docs::{Describe as _, schema, tagged};
use keh_http::json::{json_bytes, parse};
use keh_http::{FieldError, Problem};
use keh_listing::command::{CancelOpenHouse, RemoveMedia};
use keh_listing::{ErrorKind, Listing, ListingCommand};
use keh_platform::health::Check;
use keh_resources::ListingResource;
use keh_resources::paths::{ListingPath, MediaPath, OpenHousePath};
use keh_store::{ExecuteError, Store};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

pub mod context;
pub mod dto;
mod response;
mod submit;

use response::{execute_problem, execute_problem_plain, listing_response};
use submit::submit;

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

    /// The routes of the command API, documented. Reads (`GET` on the same paths) are the
    /// query API's.
    pub fn routes() -> ApiRouter<Self> {
        ApiRouter::new()
            .api_route(
                "/api/v1/listings",
                post_with(create, |op| {
                    op.named("createListing", "Commands", "Create a listing")
                        .answer(201, tagged("Created; Location names the listing", listing()))
                        .answer(200, tagged("An idempotent replay of a creation", listing()))
                        .errors(&[403, 409, 422])
                }),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}",
                patch_with(
                    keyed::<dto::PatchListingRequest>,
                    keyed_docs(
                        "updateListing",
                        "Change descriptive fields (JSON merge-patch; a changed ListPrice is a price change)",
                    ),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/price",
                post_with(
                    keyed::<dto::ChangePriceRequest>,
                    keyed_docs("changePrice", "Change the list price"),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/status",
                post_with(
                    keyed::<dto::ChangeStatusRequest>,
                    keyed_docs(
                        "changeStatus",
                        "Change the status (the lifecycle table applies)",
                    ),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/media",
                post_with(
                    keyed::<dto::AddMediaRequest>,
                    keyed_docs("addMedia", "Add a media reference"),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/media/order",
                put_with(
                    keyed::<dto::ReorderMediaRequest>,
                    keyed_docs("reorderMedia", "Put the media in a new order"),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/media/{MediaKey}",
                delete_with(
                    remove_media,
                    keyed_docs("removeMedia", "Remove a media reference"),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/open-houses",
                post_with(
                    keyed::<dto::ScheduleOpenHouseRequest>,
                    keyed_docs("scheduleOpenHouse", "Schedule an open house"),
                ),
            )
            .api_route(
                "/api/v1/listings/{ListingKey}/open-houses/{OpenHouseKey}",
                delete_with(
                    cancel_open_house,
                    keyed_docs("cancelOpenHouse", "Cancel an open house"),
                ),
            )
    }

    /// The routes of the command API, serving this state.
    pub fn router(self) -> Router {
        Router::from(Self::routes().with_state(self))
    }

    /// Readiness of the command API: PostgreSQL answers.
    pub fn health(&self) -> Check {
        keh_platform::health::postgres(self.store.pool().clone(), true)
    }
}

/// The documentation of a command on an existing listing.
fn keyed_docs(
    id: &'static str,
    summary: &'static str,
) -> impl FnOnce(TransformOperation<'_>) -> TransformOperation<'_> {
    move |op| {
        op.named(id, "Commands", summary)
            .param(if_match())
            .answer(200, changed())
            .errors(COMMAND_ERRORS)
    }
}

/// The errors of a command on an existing listing.
const COMMAND_ERRORS: &[u16] = &[403, 404, 409, 412, 422];

fn listing() -> serde_json::Value {
    schema::<ListingResource>()
}

fn changed() -> serde_json::Value {
    tagged("The listing after the change", listing())
}

/// `If-Match`, which every command on an existing listing takes.
fn if_match() -> serde_json::Value {
    keh_http::docs::header(
        "If-Match",
        serde_json::json!({"type": "string", "pattern": "^(\\*|\"[0-9]{1,19}\"( *, *\"[0-9]{1,19}\")*)$"}),
        "The listing's ETag (\"N\"): the command applies only at that version (412 otherwise)",
    )
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

/// Documents the body as `T`'s schema.
impl<T: schemars::JsonSchema> aide::OperationInput for Body<T> {
    fn operation_input(
        ctx: &mut aide::generate::GenContext,
        operation: &mut aide::openapi::Operation,
    ) {
        keh_http::docs::json_body::<T>(ctx, operation);
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
    ShortText::exact(raw).map_err(|message| invalid_path_parameter(field, message))
}

fn path_listing_key(raw: &str) -> Result<ListingKey, Problem> {
    ListingKey::new(raw).map_err(|e| invalid_path_parameter("ListingKey", e.to_string()))
}

fn invalid_path_parameter(field: &str, message: String) -> Problem {
    Problem::bad_request("invalid-path-parameter", format!("{field} {message}")).with_field(
        field,
        "invalid-value",
        message,
    )
}

async fn create(
    State(api): State<CommandApi>,
    ctx: CommandContext,
    body: Body<dto::CreateListingRequest>,
) -> Result<Response, Problem> {
    let mut command = body
        .value
        .into_command(ListingKey::generate(), Utc::now())
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
    Path(path): Path<ListingPath>,
    ctx: CommandContext,
    body: Body<T>,
) -> Result<Response, Problem> {
    let key = path_listing_key(&path.listing_key)?;
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
    Path(path): Path<MediaPath>,
    uri: Uri,
    ctx: CommandContext,
) -> Result<Response, Problem> {
    let media_key = path_key(&path.media_key, "MediaKey")?;
    let command = ListingCommand::RemoveMedia(RemoveMedia {
        media_key,
        at: Utc::now(),
    });
    bodiless(&api, &path.listing_key, &uri, command, ctx).await
}

async fn cancel_open_house(
    State(api): State<CommandApi>,
    Path(path): Path<OpenHousePath>,
    uri: Uri,
    ctx: CommandContext,
) -> Result<Response, Problem> {
    let open_house_key = path_key(&path.open_house_key, "OpenHouseKey")?;
    let command = ListingCommand::CancelOpenHouse(CancelOpenHouse {
        open_house_key,
        at: Utc::now(),
    });
    bodiless(&api, &path.listing_key, &uri, command, ctx).await
}

/// A `DELETE` on a sub-resource: no body, so the request line alone is its fingerprint.
async fn bodiless(
    api: &CommandApi,
    key: &str,
    uri: &Uri,
    command: ListingCommand,
    ctx: CommandContext,
) -> Result<Response, Problem> {
    let key = path_listing_key(key)?;
    let ctx = ctx.with_digest(digest_of_line("DELETE", uri.path()));
    submit(api, &key, command, ctx, None, StatusCode::OK).await
}
